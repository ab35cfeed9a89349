"""A MIDI controller unplugged mid-set, with real JACK MIDI ports.

Its own module (and JACK server): rtmidi opens JACK clients while holding the
GIL (the daemon opens its own once, at start: daemon/midi.py), so these tests must
not run beside another module's JACK client with a Python process callback in
this same process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from daemon_helpers import Daemon
from jack_helpers import env_for, jack_in_this_process

from conftest import tone_mix

SR = 48000
pytestmark = [pytest.mark.jack, pytest.mark.e2e, pytest.mark.slow, pytest.mark.realtime]


@pytest.fixture(scope="module")
def jack_name():
    with jack_in_this_process(f"stemdeck-unplug-{os.getpid()}", rate=SR) as name:
        if name is None:
            pytest.skip("jackd is not installed (scripts/setup installs jackd2)")
        yield name


def settle() -> None:
    time.sleep(0.3)


def test_unplugged_controller_reconnects(jack_name: str, tmp_path: Path) -> None:
    """A controller that disappears mid-set: a warning, music goes on, and the port is
    reopened when it returns; the daemon answers OSC all along."""
    import mido

    name = jack_name
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
    controller = backend.open_output("fake-controller", virtual=True)
    sf.write(tmp_path / "t.wav", tone_mix(2.0, sr=SR).T, SR, subtype="FLOAT")
    daemon = Daemon(
        [
            str(tmp_path / "t.wav"),
            "--no-audio",
            "--midi",
            "fake-controller",
            "--midi-api",
            "jack",
        ],
        {**env_for(name), "STEMDECK_CACHE": str(tmp_path / "c")},
        tmp_path,
    )
    try:
        daemon.wait_ready()
        controller.send(mido.Message("note_on", channel=0, note=36, velocity=127))
        settle()
        assert daemon.client.query("/ch/1/mute") == 1
        controller.close()  # unplugged
        time.sleep(2.5)
        assert ("/pong", []) in daemon.client.ask("/ping")
        before = daemon.client.query("/transport/position")
        time.sleep(0.3)
        assert daemon.client.query("/transport/position") != before  # still playing
        controller = backend.open_output("fake-controller", virtual=True)  # plugged back
        deadline = time.monotonic() + 30  # checked every second; bounded for a busy machine
        while daemon.stderr.count("MIDI: ") < 2 and time.monotonic() < deadline:
            assert ("/pong", []) in daemon.client.ask("/ping")  # answering all along
        assert daemon.stderr.count("MIDI: ") == 2, daemon.stderr
        settle()
        controller.send(mido.Message("note_on", channel=0, note=36, velocity=127))
        settle()
        assert daemon.client.query("/ch/1/mute") == 0
    finally:
        code, err = daemon.stop()
        controller.close()  # after: a check between the two would see a second unplug
    assert code == 0, err
    assert err.count("unplugged") == 1 and err.count("MIDI: ") == 2  # warned, then reopened


def test_port_polling_never_stalls_other_threads(jack_name: str, caplog) -> None:
    """While the watcher checks every second that the controller is still there, MIDI
    keeps arriving and every other thread of the daemon keeps running: no thread is
    ever held up for long (a JACK client opened per check, GIL held, deadlocked with
    rtmidi's process thread waiting for the GIL to deliver a message: 10 s and more)."""
    import threading

    import mido
    from osc_host import FakeHost

    from stemdeck.core.control.midimap import load_midi_map
    from stemdeck.daemon.midi import MidiControl

    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
    controller = backend.open_output("busy-controller", virtual=True)
    midi = MidiControl(FakeHost(), load_midi_map("generic"), port="busy-controller", api="jack")
    midi.start()
    stop = threading.Event()
    worst = [0.0]

    def tick() -> None:  # stands for the OSC and audio threads
        last = time.monotonic()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.monotonic()
            worst[0] = max(worst[0], now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    sent = 0
    try:
        assert midi.inport is not None
        end = time.monotonic() + 3.5  # three checks by the watcher, one a second
        while time.monotonic() < end:
            # a control the map does not bind: rtmidi's thread still runs our callback
            controller.send(mido.Message("control_change", channel=15, control=119, value=1))
            sent += 1
            time.sleep(0.001)
        deadline = time.monotonic() + 10
        while midi.received < sent and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        ticker.join()
        midi.stop()
        controller.close()
    # A loaded 2-core machine delays a thread by tens of ms; a stall is seconds.
    assert worst[0] < 0.5, f"a thread was held up for {worst[0]:.2f} s"
    assert (midi.received, midi.errors) == (sent, 0)
    assert "unplugged" not in caplog.text


SENDER = """
import sys, time, mido
backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
if sys.argv[2] == "virtual":  # a controller's own port
    out = backend.open_output(sys.argv[1], virtual=True)
else:  # connected to the daemon's virtual port
    (name,) = [n for n in backend.get_output_names() if sys.argv[1] in n]
    out = backend.open_output(name)
print("ready", flush=True)
sys.stdin.readline()
sent = 0
end = time.monotonic() + 2.0
while time.monotonic() < end:
    out.send(mido.Message("control_change", channel=15, control=119, value=sent % 128))
    sent += 1
    time.sleep(0.001)
time.sleep(0.5)  # rtmidi's JACK thread sends what is queued
print(sent, flush=True)
"""


class Sender:
    """A controller in a process of its own (its thread is never held up by ours): a
    virtual output port, or one connected to the daemon's virtual input."""

    def __init__(self, server: str, name: str, how: str) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", SENDER, name, how],
            env={**os.environ, **env_for(server)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        assert self.stdout.readline() == "ready\n"

    def send(self) -> int:
        """Two seconds of messages, one a millisecond: how many were sent."""
        self.stdin.write("go\n")
        self.stdin.flush()
        return int(self.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize("kind", ["controller", "virtual"])
def test_midi_arrives_whole_while_another_thread_holds_the_gil(jack_name: str, kind: str) -> None:
    """A Python callback on rtmidi's JACK thread waited for the GIL, and JACK's cycles
    went on without it: with the GIL held 50 ms at a time, four messages in five were
    lost (on a busy CI machine, 5 of 3,045). Every message arrives, in order, from a
    controller (its port found by name) and into the daemon's virtual port."""
    import sys
    import threading

    from osc_host import FakeHost

    from stemdeck.core.control.midimap import load_midi_map
    from stemdeck.daemon.midi import MidiControl

    own = f"gil-{kind}"
    senders: list[Sender] = []
    if kind == "controller":
        senders.append(Sender(jack_name, own, "virtual"))
        midi = MidiControl(FakeHost(), load_midi_map("generic"), port=own, api="jack")
    else:
        midi = MidiControl(FakeHost(), load_midi_map("generic"), virtual=own, api="jack")
    values: list[int] = []
    real = midi._on_message

    def on_message(msg: Any) -> None:
        values.append(msg.value)
        real(msg)

    midi._on_message = on_message  # type: ignore[method-assign]
    stop = threading.Event()

    def hog() -> None:  # pure Python: holds the GIL for a whole switch interval
        while not stop.is_set():
            pass

    switch = sys.getswitchinterval()
    hogger = threading.Thread(target=hog)
    try:
        midi.start()
        if kind == "virtual":  # a controller that connects to the daemon's port
            senders.append(Sender(jack_name, own, "connect"))
        assert midi.inport is not None
        sys.setswitchinterval(0.05)
        hogger.start()
        sent = senders[0].send()
        stop.set()
        hogger.join()
        sys.setswitchinterval(switch)
        deadline = time.monotonic() + 10
        while midi.received < sent and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        if hogger.is_alive():
            hogger.join()
        sys.setswitchinterval(switch)
        midi.stop()
        for sender in senders:
            sender.close()
    assert sent > 100
    assert values == [i % 128 for i in range(sent)]
    assert (midi.received, midi.errors) == (sent, 0)
