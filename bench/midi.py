"""MIDI through a real audio server (jackd dummy driver, rtmidi's JACK API).

    .venv/bin/python bench/midi.py [--trials 20] [--seconds 10] [--rate 1000]

Prints, from one run:
- CC to audible change: a CC moving the master fader to 0 (generic map, CC 36)
  sent on a JACK MIDI port to the change in the JACK-recorded output (ramp onset
  and end, 1 ms resolution); the OSC figure is in bench/live.py;
- load: --rate CC messages a second for --seconds on four channel faders while
  playing: MIDI messages received and rejected, xruns, engine queue drops, and
  whether every fader ended at the last value sent.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from daemon_helpers import Daemon  # noqa: E402
from jack_helpers import (  # noqa: E402
    JackRecorder,
    change_latency_ms,
    env_for,
    start_jack,
)

from stemdeck.core.audiofile.files import write  # noqa: E402
from stemdeck.core.material.demo import demo_track  # noqa: E402

SR, BLOCK = 48000, 256


def field(text: str, key: str) -> int:
    parts = text.split()
    return int(parts[parts.index(key) + 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=1000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stemdeck-midi-"))
    atexit.register(shutil.rmtree, work, True)  # its tracks and cache entries: GBs
    name = f"stemdeck-midibench-{os.getpid()}"
    jackd = start_jack(name, rate=SR, period=BLOCK)
    if jackd is None:
        raise SystemExit("needs jackd (apt-get install jackd2)")
    os.environ.update(env_for(name))
    import jack
    import mido

    demo = demo_track(seconds=60)
    write(work / "track.wav", demo.mix, demo.sr)
    env = {**env_for(name), "STEMDECK_CACHE": str(work / "cache")}
    daemon = Daemon(
        [
            str(work / "track.wav"),
            "--block",
            str(BLOCK),
            "--midi-virtual",
            "stemdeck-bench",
            "--midi-api",
            "jack",
        ],
        env,
        work,
    )
    try:
        daemon.wait_ready(timeout=120)
        backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
        out = backend.open_output("bench-controller", virtual=True)
        client = jack.Client("bench-wiring", servername=name, no_start_server=True)
        src = next(
            p.name
            for p in client.get_ports(is_midi=True, is_output=True)
            if "bench-controller" in p.name
        )
        dst = next(
            p.name
            for p in client.get_ports(is_midi=True, is_input=True)
            if "stemdeck-bench" in p.name
        )
        client.connect(src, dst)
        rec = JackRecorder(name)
        rec.connect_from("PortAudio")
        time.sleep(0.5)
        print(
            f"jackd dummy {SR} Hz / {BLOCK} frames, ramp 10 ms; "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
        )

        def cc(control: int, value: int) -> None:
            out.send(mido.Message("control_change", channel=0, control=control, value=value))

        onsets, ends = [], []
        for _ in range(args.trials):
            for v in (94, 95, 96, 95):  # soft takeover: meet unity (fader 0.75) first
                cc(36, v)
            time.sleep(0.25)
            rec.blocks = []
            rec.recording = True
            time.sleep(0.1)
            sent = rec.now()
            cc(36, 0)
            time.sleep(0.15)
            rec.recording = False
            first, audio = rec.take()
            onset, end = change_latency_ms(first, sent, audio, SR)
            onsets.append(onset)
            ends.append(end)
        print(
            f"MIDI CC -> JACK output, {len(onsets)} trials: onset median {median(onsets):.0f} "
            f"ms (max {max(onsets):.0f}), ramp end median {median(ends):.0f} ms "
            f"(max {max(ends):.0f}); one block + ramp = {BLOCK / SR * 1000 + 10:.1f} ms"
        )
        for v in (94, 95, 96):
            cc(36, v)

        before = daemon.client.query("/status")
        rng = np.random.default_rng(0)
        for ch in range(4):  # pick up the four faders at unity
            for v in (94, 95, 96):
                cc(20 + ch, v)
        time.sleep(0.2)
        last: dict[int, int] = {}
        sent_n = 0
        period = 1.0 / args.rate
        t0 = time.perf_counter()
        next_t = t0
        position = {ch: 95 for ch in range(4)}
        while time.perf_counter() - t0 < args.seconds:
            ch = int(rng.integers(4))
            # a fader moves: small steps, as a hand does (big jumps would be soft-takeover
            # pick-ups anyway once caught)
            position[ch] = int(np.clip(position[ch] + rng.integers(-3, 4), 0, 127))
            cc(20 + ch, position[ch])
            last[ch] = position[ch]
            sent_n += 1
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        took = time.perf_counter() - t0
        time.sleep(0.5)
        after = daemon.client.query("/status")
        arrived = all(
            abs(daemon.client.query(f"/ch/{ch + 1}/fader") - v / 127) < 1e-6
            for ch, v in last.items()
        )
        print(
            f"load: {sent_n} CC in {took:.1f} s ({sent_n / took:.0f}/s): received "
            f"+{field(after, 'midi') - field(before, 'midi')}, rejected "
            f"+{field(after, 'in') - field(before, 'in')}, xruns "
            f"+{field(after, 'xruns') - field(before, 'xruns')}, engine drops "
            f"+{field(after, 'drops') - field(before, 'drops')}, last values arrived {arrived}"
        )
        rec.close()
        client.close()
        out.close()
    finally:
        daemon.stop()
        jackd.terminate()


if __name__ == "__main__":
    main()
