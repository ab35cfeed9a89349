"""A Link session in a network namespace of its own, measured: run as
``unshare -n python tests/link_session.py``; the measurements come back as JSON on
stdout (tests/daemon/test_link_e2e.py asserts them, bench/sync.py prints them).

Link multicasts on every interface that is up, so nothing here may run on the
machine's network: the script brings the namespace's loopback up (``ip link set lo
up``), starts ``jackd -d dummy``, a Link peer of its own (LinkPython ``link.Link``,
start/stop sync on), a JACK client that records stemdeck's ports with the JACK
time (µs) each block's cycle began (:func:`cycle_times`), and ``stemdeck serve
--audio jack --sync link --no-connect`` on a click track (a click on every beat at
120 BPM, each bar's first one louder; the grid's first downbeat at :data:`DOWNBEAT`
s). Then the peer starts the session at an arbitrary phase, changes its tempo,
stops it (:data:`STOP_LEAD_MS` before a beat) and starts it again; every click
stemdeck plays is placed against the peer's ``phaseAtTime`` (quantum 4) at the host
time it left stemdeck's port (its cycle's JACK time moved to Link's clock by the
offset between the two, measured here by reading both, independently of the
daemon's own measurement): the error in ms to the nearest beat, and whether a loud
click fell on a bar line. JACK's clock is not assumed to be any system clock: JACK 2
reads ``CLOCK_MONOTONIC_RAW`` on Linux, and a script (and once the daemon) that took
it for ``CLOCK_MONOTONIC`` was off by however far NTP had slewed the two apart, the
same for both at a steady tempo, so unseen until a tempo change.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_helpers import Daemon, poll
from jack_helpers import env_for, start_jack

SR = 48000
PERIOD = 256
TRACK_BPM = 120.0
#: The grid's first downbeat (s): the first click, loud, after a beat of silence as a
#: track's lead-in (stemdeck's start after a quantized wait plays from the first
#: block whose position is in the track: a downbeat on the track's first sample
#: would lose up to a block of itself, docs/sync.md).
DOWNBEAT = 0.5
TRACK_S = 90
QUANTUM = 4.0
#: A click, and where its peak is (samples); bars' first clicks at LOUD, others at SOFT.
CLICK = 0.8 * np.exp(-np.arange(480) / 60.0) * np.sin(np.arange(480) * 0.3)
CLICK_PEAK = int(np.argmax(np.abs(CLICK)))
LOUD, SOFT = 1.0, 0.5


def write_track(path: Path) -> None:
    y = np.zeros((TRACK_S * SR, 2), np.float32)
    period = 60.0 / TRACK_BPM
    for k in range(int((TRACK_S - DOWNBEAT) / period) - 1):
        at = round((DOWNBEAT + k * period) * SR)
        loud = k % 4 == 0
        y[at : at + 480] += ((LOUD if loud else SOFT) * CLICK)[:, None].astype(np.float32)
    sf.write(path, y, SR, subtype="FLOAT")


def jack_get_time() -> Callable[[], int]:
    """libjack's ``jack_get_time`` (µs of JACK's clock, ``jack_frames_to_time``'s),
    for a process with a JACK client open."""
    fn = ctypes.PyDLL("libjack.so.0").jack_get_time
    fn.argtypes = []
    fn.restype = ctypes.c_uint64
    return fn


def link_minus_jack_us(peer: Any, jack_now: Callable[[], int]) -> float:
    """Link's clock minus JACK's (µs), the closest of a few bracketed reads."""
    link_now = peer.clock().micros
    best, offset = float("inf"), 0.0
    for _ in range(9):
        a = link_now()
        m = jack_now()
        b = link_now()
        if b - a < best:
            best, offset = b - a, (a + b) / 2.0 - m
    return offset


#: Blocks each side whose callbacks' starts tell when a recorded cycle began.
BOUND_BLOCKS = 16


def cycle_times(frames: np.ndarray, jack_us: np.ndarray, started_us: np.ndarray) -> np.ndarray:
    """When each recorded cycle began (µs of JACK's clock), from its first frame
    (``jack_last_frame_time``), JACK's time of that frame (``jack_frames_to_time``)
    and when the recorder's callback for it began (``jack_get_time``).

    JACK 2 smooths its cycles' times with a delay-locked loop, which a stalled
    driver throws off by tens of ms for seconds (docs/sync.md), so JACK's time is
    not taken as it is. The dummy driver runs its cycles on the wall clock: they
    began on the line of their frames at 48 kHz, moved at each stall. A callback
    never starts before its cycle, so the least of the recorder's starts less that
    line, :data:`BOUND_BLOCKS` blocks each side, is where the line is plus the
    least delay of those callbacks (the recorder runs after stemdeck in JACK's
    graph: 0.3-0.4 ms). That delay is the median over the recording of that bound
    less JACK's time against the line, which is JACK's own offset wherever its loop
    had settled, most of a recording. (The daemon, for its blocks' times, bounds
    JACK's times by its callbacks' starts as they come:
    :class:`~stemdeck.daemon.link.CycleTime`.)"""
    line = (frames - frames[0]) * (1e6 / SR)
    late = np.pad(started_us - line, BOUND_BLOCKS, mode="edge")
    bound = np.lib.stride_tricks.sliding_window_view(late, 2 * BOUND_BLOCKS + 1).min(axis=1)
    return line + bound - np.median(bound - (jack_us - line))


class TimedRecorder:
    """Records JACK input ports; each block with its first frame
    (``jack_last_frame_time``), JACK's time of it (``jack_frames_to_time``) and the
    JACK time its callback started (``jack_get_time``)."""

    def __init__(self, server: str) -> None:
        import jack
        from jack import _ffi, _lib  # the client's C pointer, for libjack's own call

        self.client = jack.Client("link-rec", servername=server, no_start_server=True)
        self.inports = [self.client.inports.register(f"in_{i + 1}") for i in range(2)]
        fn = ctypes.PyDLL("libjack.so.0").jack_frames_to_time
        fn.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        fn.restype = ctypes.c_uint64
        ptr = int(_ffi.cast("uintptr_t", self.client._ptr))
        self.blocks: list[tuple[int, int, int, np.ndarray]] = []
        self.recording = False
        #: JACK's clock now (µs).
        self.now = now = jack_get_time()
        #: When the server reported an xrun (JACK's clock, µs, as notified).
        self.xruns: list[float] = []

        @self.client.set_xrun_callback
        def xrun(delay: float) -> None:
            if self.recording:
                self.xruns.append(float(self.now()))

        @self.client.set_process_callback
        def process(frames: int) -> None:
            started = int(now())
            if self.recording:
                frame = int(_lib.jack_last_frame_time(self.client._ptr))
                data = self.inports[0].get_array().copy()
                self.blocks.append((frame, int(fn(ptr, frame)), started, data))

        self.client.activate()

    def connect_from(self, pattern: str) -> None:
        ports = poll(
            lambda: [
                p for p in self.client.get_ports(is_audio=True, is_output=True) if pattern in p.name
            ],
            lambda p: len(p) >= 2,
            f"JACK ports like {pattern}",
        )
        for src, dst in zip(ports, self.inports, strict=False):
            self.client.connect(src, dst)

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """(when each sample left, µs of JACK's clock, its audio) of what was
        recorded: each block from when its cycle began (:func:`cycle_times`)."""
        blocks = list(self.blocks)
        began = cycle_times(
            np.array([f for f, _, _, _ in blocks], np.int64),
            np.array([u for _, u, _, _ in blocks], np.float64),
            np.array([s for _, _, s, _ in blocks], np.float64),
        )
        times = np.concatenate(
            [b + np.arange(len(d)) * 1e6 / SR for b, (*_, d) in zip(began, blocks, strict=True)]
        )
        return times, np.concatenate([d for *_, d in blocks])

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def clicks(times: np.ndarray, audio: np.ndarray) -> list[tuple[float, bool]]:
    """(µs where a click starts, in ``times``' clock, loud) of every click recorded: its
    peak less where the peak is in the click."""
    x = np.abs(audio)
    out = []
    last = -SR
    for i in map(int, np.flatnonzero(x > 0.2)):
        if i - last < SR // 10:
            continue
        last = i
        peak = i + int(np.argmax(x[i : i + SR // 500]))
        if peak - CLICK_PEAK >= 0:
            out.append((float(times[peak - CLICK_PEAK]), float(x[peak]) > 0.55))
    return out


#: Clicks this close to an xrun the JACK server reported (s before, s after) are not
#: measured: a block stemdeck lost is sought again with a crossfade, and the click in
#: it is smeared (counted in ``near_xruns``).
XRUN_WINDOW = (0.25, 1.0)


def placed(
    found: list[tuple[float, bool]],
    state: Any,
    since: float,
    until: float,
    xruns: Sequence[float] = (),
) -> dict[str, list]:
    """The clicks between ``since`` and ``until`` (Link µs) against ``state``, a
    session state captured while its timeline held: error to the nearest beat (ms),
    for a loud click the beat of its bar it fell on (0: the bar line), and when each
    was (ms after ``since``); those near an xrun (Link µs) left out."""
    errors: list[float] = []
    bar_beats: list[int] = []
    soft_beats: list[int] = []
    at_ms: list[float] = []
    near: list[float] = []
    tempo = state.tempo()
    for t, loud in found:
        if not since <= t <= until:
            continue
        if any(-XRUN_WINDOW[0] * 1e6 <= t - x <= XRUN_WINDOW[1] * 1e6 for x in xruns):
            near.append((t - since) / 1000.0)
            continue
        at_ms.append((t - since) / 1000.0)
        phase = state.phaseAtTime(round(t), QUANTUM)
        nearest = round(phase)
        errors.append((phase - nearest) * 60000.0 / tempo)
        (bar_beats if loud else soft_beats).append(int(nearest) % int(QUANTUM))
    return {
        "errors_ms": errors,
        "loud_beats": bar_beats,
        "soft_beats": soft_beats,
        "at_ms": at_ms,
        "near_xruns": near,
    }


def commit(peer: Any, change: Any) -> int:
    """Apply ``change(state, now)`` to the peer's session; the Link time it did."""
    state = peer.captureAppSessionState()
    now = peer.clock().micros()
    change(state, now)
    peer.commitAppSessionState(state)
    return int(now)


#: The peer stops the session this long before a beat of it (ms), so a stemdeck that
#: stops has that long to silence the beat's click. The stop reaches stemdeck over the
#: network, up to 50 ms late (Link sends a peer's state at most every 50 ms), the
#: audio thread sees it at its next block (5.3 ms), the block leaves a period later
#: (5.3 ms) and the pause fades out over 10 ms: 71 ms. A stop at an arbitrary phase
#: could come that close before a beat, whose click then sounds whatever a follower
#: does.
STOP_LEAD_MS = 120.0
#: Should the commit come this much later (ms; a busy machine), it waits for the next
#: beat instead.
STOP_LATE_MS = 20.0
#: A sample a 24-bit output renders as not zero (2^-23): the separation's stems sum
#: to the track within float rounding, a residue of about 1e-9 near each click.
AUDIBLE = 2.0**-23


def stop_before_a_beat(peer: Any, lead_ms: float = STOP_LEAD_MS) -> tuple[int, float]:
    """Stop the peer's session ``lead_ms`` before one of its beats; the Link time
    of the stop (µs) and how long before the beat it was (ms)."""
    for _ in range(20):
        state = peer.captureAppSessionState()
        now = peer.clock().micros()
        beat = math.ceil(state.beatAtTime(round(now + (lead_ms + 20.0) * 1e3), QUANTUM))
        at = state.timeAtBeat(beat, QUANTUM)
        time.sleep(max(0.0, (at - lead_ms * 1e3 - now) / 1e6))
        if at - peer.clock().micros() < (lead_ms - STOP_LATE_MS) * 1e3:
            continue  # woken too late for this beat
        stop = commit(peer, lambda s, now: s.setIsPlaying(False, now))
        return stop, (at - stop) / 1e3
    raise AssertionError(f"no stop {lead_ms} ms before a beat in 20 beats")


def _near(bpm: float, tempo: float) -> bool:
    return abs(tempo - bpm) < 0.01


def run(seconds: float, tempo_to: float, stop_lead_ms: float = STOP_LEAD_MS) -> dict[str, Any]:
    import link

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    name = f"stemdeck-link-{os.getpid()}"
    jackd = start_jack(name, rate=SR, period=PERIOD)
    if jackd is None:
        return {"skip": "jackd is not installed (scripts/setup installs jackd2)"}
    root = Path(tempfile.mkdtemp(prefix="stemdeck-link-"))
    track = root / "clicks.wav"
    write_track(track)
    peer = link.Link(TRACK_BPM)
    peer.startStopSyncEnabled = True
    peer.enabled = True
    env = {
        **env_for(name),
        "STEMDECK_CACHE": str(root / "cache"),
        "STEMDECK_CONFIG": str(root / "config"),
    }
    out: dict[str, Any] = {}
    rec = None
    daemon = Daemon([str(track), "--audio", "jack", "--sync", "link", "--no-connect"], env, root)
    try:
        daemon.wait_ready(timeout=300)
        ask = daemon.client.ask
        poll(lambda: ask("/track/bpm"), lambda r: len(r) == 1, "a beat grid")
        ask("/track/bpm", TRACK_BPM)
        out["grid"] = ask("/track/grid/downbeat", DOWNBEAT)
        out["peers"] = poll(
            lambda: ask("/sync/peers"), lambda r: r == [("/sync/peers", [1])], "one peer", 30
        )
        out["peer_peers"] = int(peer.numPeers())
        # The peers' clocks are measured against each other as they meet: a moment
        # for that to settle on a busy machine before the session starts.
        time.sleep(2.0)
        rec = TimedRecorder(name)
        rec.connect_from("stemdeck:master_")
        rec.recording = True
        # JACK's clock to Link's: measured here and again at the end (a JACK whose
        # clock NTP slews while Link's is not would drift by up to 0.5 ms a second).
        jack0 = float(rec.now())
        offset0 = link_minus_jack_us(peer, rec.now)
        beat_us = 60e6 / TRACK_BPM

        def wait_until(t_us: float) -> None:
            poll(lambda: peer.clock().micros(), lambda now: now >= t_us, "session time", 120)

        # 1. The session starts at an arbitrary phase (a bar and a quarter ahead).
        phase0 = commit(
            peer,
            lambda s, now: s.setIsPlayingAndRequestBeatAtTime(True, now, 1.25, QUANTUM),
        )
        out["start_phase"] = peer.captureAppSessionState().phaseAtTime(phase0, QUANTUM)
        wait_until(phase0 + seconds * 1e6)
        s1 = peer.captureAppSessionState()
        out["status_120"] = ask("/status")
        out["sync_120"] = ask("/sync/tempo") + ask("/sync/phase")
        # 2. A tempo change.
        change = commit(peer, lambda s, now: s.setTempo(tempo_to, now))
        wait_until(change + seconds * 1e6)
        s2 = peer.captureAppSessionState()
        out["sync_after"] = ask("/sync/tempo") + ask("/sync/phase") + ask("/sync/peers")
        out["rate_after"] = ask("/transport/rate")
        out["status_after"] = ask("/status")
        # 3. The peer stops the session, 4. and starts it again at its next bar.
        stop, out["stop_lead_ms"] = stop_before_a_beat(peer, stop_lead_ms)
        wait_until(stop + 2e6)
        restart = commit(
            peer,
            lambda s, now: s.setIsPlayingAndRequestBeatAtTime(True, now, 0.0, QUANTUM),
        )
        wait_until(restart + seconds * 1e6)
        s3 = peer.captureAppSessionState()
        rec.recording = False
        jack1 = float(rec.now())
        offset1 = link_minus_jack_us(peer, rec.now)
        drift = (offset1 - offset0) / max(jack1 - jack0, 1.0)

        def to_link(jack_us: Any) -> Any:
            return jack_us + offset0 + (jack_us - jack0) * drift

        out["jack_to_link_us"] = [offset0, offset1]
        times, audio = rec.take()
        link_times = to_link(times)
        found = clicks(link_times, audio)
        settle = 2 * beat_us  # the first two beats after a start or a change: the lock settles
        xr = [float(to_link(x)) for x in rec.xruns]
        out["xruns"] = len(xr)
        out["at_120"] = placed(found, s1, phase0 + 2 * settle, change - beat_us / 2, xr)
        # The half beat before the peer's tempo change, apart: under the old timeline.
        out["at_change"] = placed(found, s1, change - beat_us / 2, change, xr)
        out["at_new"] = placed(found, s2, change + settle, stop, xr)
        restarted = s3.timeForIsPlaying()
        out["restart_at"] = restarted - restart
        out["after_restart"] = placed(found, s3, restarted + 0.05e6, 1e300, xr)
        # After the stop, up to the restart: how long stemdeck still sounded (ms from
        # the stop to its last audible sample; 0: none), and where each click in that
        # span began (ms after the stop).
        stopped = (link_times > stop) & (link_times < restarted)
        after = np.flatnonzero(stopped & (np.abs(audio) >= AUDIBLE))
        out["sounding_after_stop_ms"] = (
            float(link_times[after[-1]] - stop) / 1000.0 if after.size else 0.0
        )
        out["clicks_after_stop_ms"] = [
            (t - stop) / 1000.0 for t, _ in found if stop < t < restarted
        ]
        out["first_click_after_restart_ms"] = first = next(
            ((t - restarted) / 1000.0 for t, _ in found if t > restarted), None
        )
        # An xrun between the restart and that click can have swallowed bar 1's click.
        out["xruns_before_first_click"] = (
            sum(1 for x in xr if restarted < x <= restarted + first * 1000.0)
            if first is not None
            else len(xr)
        )
        # Before the start: stemdeck waited, silent, for the session.
        out["clicks_before_start"] = sum(1 for t, _ in found if t < phase0)
        # 5. stemdeck sets the session's tempo: /transport/bpm, then /transport/rate.
        for address, value, bpm in (
            ("/transport/bpm", 132.0, 132.0),
            ("/transport/rate", 1.0, 120.0),
        ):
            reply = ask(address, value)
            tempo = poll(
                lambda: peer.captureAppSessionState().tempo(),
                partial(_near, bpm),
                f"the peer's tempo at {bpm:g}",
                10,
            )
            out[f"set {address}"] = [reply, tempo, ask("/sync/tempo")]
    finally:
        if rec is not None:
            rec.close()
        code, err = daemon.stop()
        out["exit"] = code
        if code != 0:
            out["stderr"] = err[-3000:]
        peer.enabled = False
        jackd.terminate()
        jackd.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)  # the track and its cache entry: 168 MB
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of each part")
    ap.add_argument("--tempo", type=float, default=126.0, help="the peer's tempo change to")
    ap.add_argument(
        "--stop-lead-ms",
        type=float,
        default=STOP_LEAD_MS,
        help="how long before a beat the peer stops the session (ms)",
    )
    args = ap.parse_args()
    try:
        import link  # noqa: F401
    except ImportError:
        print(json.dumps({"skip": "no Link bindings: pip install 'stemdeck[link]'"}))
        return
    result = run(args.seconds, args.tempo, args.stop_lead_ms)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
