"""A map's rate fader, pitch knob and keylock button on the real registry and mixer
(issue 23, item 8): through the transport verbs OSC uses, so the engine's rate, pitch and
keylock are what ``/transport/rate``, ``/transport/pitch`` and ``/transport/keylock``
answer. In-process (``tests/osc_host.py``, 8 kHz, blocks of 64)."""

from __future__ import annotations

import mido
from osc_host import FakeHost, probe_host, render

from stemdeck.core.control.midimap import load_midi_map
from stemdeck.daemon.midi import MidiControl


def cc(midi: MidiControl, channel: int, control: int, values: list[int] | range) -> None:
    for v in values:
        midi._on_message(mido.Message("control_change", channel=channel, control=control, value=v))


def note(midi: MidiControl, channel: int, number: int) -> None:
    midi._on_message(mido.Message("note_on", channel=channel, note=number, velocity=127))
    midi._on_message(mido.Message("note_off", channel=channel, note=number))


def rig(name: str) -> tuple[FakeHost, MidiControl]:
    host = probe_host()
    render(host, 10)
    return host, MidiControl(host, load_midi_map(name), virtual="stemdeck-test")


def test_x_touch_mini_layer_b_fader_sets_the_rate() -> None:
    host, midi = rig("x-touch-mini")
    cc(midi, 10, 10, range(64, -1, -1))  # layer B's fader, from the middle to the bottom
    render(host, 1)
    assert host.engine.rate == 0.92
    assert host.transport.value("rate") == [0.92]
    cc(midi, 10, 10, range(1, 65))  # back to the middle: exactly 1.0, bit-exact again
    render(host, 1)
    assert host.transport.value("rate") == [1.0]
    assert (midi.received, midi.errors) == (129, 0)


def test_generic_pitch_knob_and_keylock_with_its_led() -> None:
    host, midi = rig("generic")
    assert ("note", 0, 65, 0) in midi.mapper.led_messages()
    note(midi, 0, 65)
    render(host, 1)
    assert host.transport.value("keylock") == [1]
    assert ("note", 0, 65, 127) in midi.mapper.led_messages()
    cc(midi, 0, 38, range(64, 128))  # the pitch knob, centre to top
    render(host, 1)
    assert host.transport.value("pitch") == [12.0]
    note(midi, 0, 65)
    render(host, 1)
    assert host.transport.value("keylock") == [0]
    assert ("note", 0, 65, 0) in midi.mapper.led_messages()
    assert (midi.received, midi.errors) == (68, 0)


def test_a_rate_the_engine_cannot_take_is_one_midi_error() -> None:
    """The engine's queue full: the move is counted as an error, as OSC's is refused."""
    host, midi = rig("generic")
    cc(midi, 0, 37, [64])
    posted = host.engine.post
    host.engine.post = lambda command: False  # type: ignore[method-assign]
    try:
        cc(midi, 0, 37, [66])
    finally:
        host.engine.post = posted  # type: ignore[method-assign]
    render(host, 1)
    assert host.transport.value("rate") == [1.0]
    assert (midi.received, midi.errors) == (2, 1)
