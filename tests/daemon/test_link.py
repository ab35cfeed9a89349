"""Ableton Link without a network: the frame-to-Link-time mapping, the refusal
without the extra, ``/sync/source link`` and ``/sync/peers`` over OSC and OSCQuery
with a stand-in for the bindings' module, and the follower with the real mixer
driven block by block by a made-up session (tests/daemon/test_link_e2e.py has
real peers)."""

from __future__ import annotations

import itertools
import math
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import poll
from jack_helpers import Counting
from link_session import BOUND_BLOCKS, cycle_times
from osc_host import FakeHost, make_server

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import (
    Batch,
    Keylock,
    Loop,
    Pause,
    Play,
    Rate,
    Seek,
    SetTrack,
    Stop,
    Track,
)
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.kernel import COMPILED
from stemdeck.core.mixer.keylock import LATENCY
from stemdeck.daemon.audio.sinks import NullSink
from stemdeck.daemon.link import (
    CYCLE_SLACK_US,
    CYCLE_WINDOW,
    MISSING,
    REFRESH_S,
    CycleTime,
    LinkFollower,
    LinkSession,
    bar_origin,
    clock_offset_us,
    link_time_us,
    load_link,
    monotonic_us,
)
from stemdeck.daemon.osc import OscControl
from stemdeck.daemon.serve import Daemon
from stemdeck.daemon.sync import SyncControl
from stemdeck.daemon.transport import Led, TransportControl
from stemdeck.daemon.web import namespace
from stemdeck.daemon.web.server import WebApp

SR = 48000
BLOCK = 256
SENDER = ("127.0.0.1", 9999)


def tree(host: FakeHost) -> dict[str, Any]:
    """The OSCQuery namespace from ``/`` as the server builds it."""
    _host, osc = make_server(host=host)
    try:
        return namespace.build(WebApp(osc).snapshot())
    finally:
        osc.sock.close()


# -- the clocks ----------------------------------------------------------------------------
def test_link_time_is_the_blocks_time_moved_to_links_clock_plus_latency() -> None:
    assert link_time_us(1_000_000.0, 2500.4, 1000.0) == 1_003_500
    assert link_time_us(5_000_000.25, -0.3, 0.0) == 5_000_000


def test_a_clocks_offset_is_read_from_both_clocks() -> None:
    """Measured, not assumed: the daemon once took JACK's clock for CLOCK_MONOTONIC
    and Link's for CLOCK_MONOTONIC_RAW; JACK 2 reads CLOCK_MONOTONIC_RAW too, and
    on a machine whose NTP had slewed the two 0.32 s apart the beat was that far
    off the session's (hidden at a steady tempo, 9 ms early at a tempo change)."""
    ticks = iter(range(0, 10**6, 7))

    def source() -> float:
        return float(next(ticks))

    def target() -> float:  # 316 ms ahead of the source, read 3 µs later
        return float(next(ticks)) + 316_000.0

    assert clock_offset_us(target, source) == 316_000.0  # the bracket's middle
    # The tightest of the brackets is taken: a read held up between is not.
    held = iter([0.0, 500.0, 900.0, 1000.0, 1001.0, 1002.0])
    assert clock_offset_us(lambda: next(held) + 316_000.0, lambda: next(held), reads=2) == (
        316_000.0
    )
    raw = clock_offset_us(
        lambda: time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW) / 1e3, monotonic_us
    )
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW) - time.monotonic_ns()
    # Two reads of different clocks a few µs apart (a busy machine: up to a ms).
    assert abs(raw - before / 1000.0) <= 1000.0, (raw, before)


class _Recording:
    """A follower stand-in: what the sink hands it."""

    def __init__(self) -> None:
        self.sync = SyncControl()
        self.sync.source = "link"
        self.following = False
        self.calls: list[tuple[float, int]] = []

    def block_at(self, monotonic_s: float, frames: int) -> None:
        self.calls.append((monotonic_s, frames))


class _Silent:
    max_block = BLOCK

    def process(self, out: np.ndarray) -> None:
        out.fill(0.0)

    def master_view(self, frames: int) -> np.ndarray:
        return np.zeros((frames, 2), np.float32)


def test_the_null_clock_gives_each_block_its_own_due_time() -> None:
    sink = NullSink(_Silent(), SR, BLOCK, 2, None)
    follower = _Recording()
    sink.link = follower  # type: ignore[assignment]
    start = time.monotonic()
    sink.start()
    try:
        poll(lambda: len(follower.calls), lambda n: n >= 8, "eight blocks", timeout=10)
    finally:
        sink.stop()
    calls = follower.calls[:8]
    assert all(frames == BLOCK for _, frames in calls)
    assert start <= calls[0][0] <= time.monotonic()
    # The clock's schedule, not the thread's wake-up: a block apart exactly (to the
    # float's rounding), except where it fell behind by more than a block and started
    # its schedule again (an xrun, or the start's lateness, not counted as one).
    steps = [b - a for (a, _), (b, _) in itertools.pairwise(calls)]
    off = [s for s in steps if abs(s - BLOCK / SR) >= 1e-9]
    assert len(off) <= sink.xruns + 1, (steps, sink.xruns)
    assert len(steps) - len(off) >= 2, steps


def test_the_sink_leaves_link_alone_while_another_source_leads() -> None:
    sink = NullSink(_Silent(), SR, BLOCK, 2, None)
    follower = _Recording()
    follower.sync.source = "off"
    sink.link = follower  # type: ignore[assignment]
    sink.start()
    try:
        poll(lambda: sink._rendered, lambda n: n >= 5, "five blocks", timeout=10)
    finally:
        sink.stop()
    assert follower.calls == []


# -- the extra -----------------------------------------------------------------------------
def test_without_the_extra_link_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "link", None)  # import link: ImportError
    with pytest.raises(ParameterError) as err:
        load_link()
    assert str(err.value) == "link sync needs Ableton Link's Python bindings: " + (
        "pip install 'stemdeck[link]'"
    )
    assert str(err.value) == MISSING
    host = FakeHost()
    follower = LinkFollower(host.engine, host.sync, lambda: None)
    host.sync.open_link = lambda: _open(host.sync, follower)
    control = OscControl(host)
    assert control.handle([("/sync/source", ["link"])], SENDER) == [
        ("/error", [f"/sync/source: {MISSING}"])
    ]
    assert host.sync.source == "off"
    assert host.sync.link_peers is None
    assert follower.session is None


def _open(sync: SyncControl, follower: LinkFollower) -> None:
    if follower.session is None:
        LinkSession(sync, follower)


#: The fake Link clock's lead on CLOCK_MONOTONIC (µs): as far as NTP had slewed
#: CLOCK_MONOTONIC_RAW (Link's clock on Linux) from it on the development machine.
LINK_AHEAD_US = -315_813


class _FakeClock:
    def micros(self) -> int:
        return time.monotonic_ns() // 1000 + LINK_AHEAD_US


@dataclass
class _FakeLink:
    """The bindings' ``link.Link``: peers, enabled and the clock."""

    bpm: float
    enabled: bool = False
    startStopSyncEnabled: bool = False
    peers: int = 2
    made: list[Any] = field(default_factory=list)

    def numPeers(self) -> int:
        return self.peers

    def clock(self) -> _FakeClock:
        return _FakeClock()


@pytest.fixture
def fake_link(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("link")
    module.Link = _FakeLink  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "link", module)
    return module


def test_sync_source_link_and_peers_over_osc_and_oscquery(fake_link: types.ModuleType) -> None:
    host = FakeHost()
    follower = LinkFollower(host.engine, host.sync, lambda: None)
    host.sync.open_link = lambda: _open(host.sync, follower)
    control = OscControl(host)
    assert control.handle([("/sync/peers", [])], SENDER) == [("/sync/peers", [0])]
    assert control.handle([("/sync/source", ["link"])], SENDER) == [("/sync/source", ["link"])]
    assert control.handle([("/sync/source", [])], SENDER) == [("/sync/source", ["link"])]
    session = follower.session
    assert session is not None
    try:
        assert session.link.startStopSyncEnabled is True
        assert session.link.bpm == 120.0
        poll(lambda: host.sync.link_peers, lambda n: n == 2, "the peers counted", timeout=10)
        assert session.link.enabled is True  # joined while link leads
        assert control.handle([("/sync/peers", [])], SENDER) == [("/sync/peers", [2])]
        assert control.handle([("/sync/peers", [1])], SENDER) == [
            ("/error", ["/sync/peers takes no arguments, got 1"])
        ]
        host.sync.link_bpm, host.sync.link_phase = 126.0, 0.0003
        state = control.state()
        at = [a for a, _ in state].index("/sync/tempo")
        assert state[at : at + 3] == [
            ("/sync/tempo", [126.0]),
            ("/sync/phase", [0.3]),
            ("/sync/peers", [2]),
        ]
        assert host.sync.describe() == "link 126.00 BPM +0.3 ms 2 peers"
        session.link.peers = 1
        poll(lambda: host.sync.link_peers, lambda n: n == 1, "one peer", timeout=10)
        assert host.sync.describe() == "link 126.00 BPM +0.3 ms 1 peer"
        host.sync.link_phase = None
        assert host.sync.describe() == "link 126.00 BPM 1 peer"
        sync = tree(host)["CONTENTS"]["sync"]["CONTENTS"]
        assert (sync["peers"]["TYPE"], sync["peers"]["ACCESS"], sync["peers"]["VALUE"]) == (
            "i",
            1,
            [1],
        )
        assert sync["source"]["RANGE"] == [{"VALS": ["off", "jack", "midi", "link"]}]
        # Another leader: the instance leaves the session, the peers read 0.
        assert control.handle([("/sync/source", ["off"])], SENDER) == [("/sync/source", ["off"])]
        poll(lambda: session.link.enabled, lambda on: on is False, "link disabled", timeout=10)
        assert host.sync.peers() == 0
        assert host.sync.describe() == "off"
    finally:
        session.close()
    assert host.sync.link_peers is None


def test_the_session_measures_each_clocks_offset_to_links_before_the_follower_runs(
    fake_link: types.ModuleType,
) -> None:
    """CLOCK_MONOTONIC's offset (the null clock's and PortAudio's block times) and
    JACK's clock's (``jack_frames_to_time``'s) are each read against Link's own
    clock, before the follower has the session, and again at each refresh."""
    sync = SyncControl(open_link=lambda: None)
    follower = LinkFollower(Counting(), sync, lambda: None)
    assert math.isnan(follower.offset_us) and math.isnan(follower.jack_offset_us)
    jack: list[Any] = [None]
    session = LinkSession(sync, follower, jack_clock=lambda: jack[0])
    try:
        assert abs(follower.offset_us - LINK_AHEAD_US) <= 1000.0, follower.offset_us
        assert math.isnan(follower.jack_offset_us)  # no JACK client
        jack[0] = lambda: monotonic_us() + 2e6  # a JACK clock 2 s ahead of CLOCK_MONOTONIC
        poll(
            lambda: follower.jack_offset_us,
            lambda us: abs(us - (LINK_AHEAD_US - 2e6)) <= 1000.0,
            "JACK's offset measured",
            timeout=10,
        )
        assert abs(follower.offset_us - LINK_AHEAD_US) <= 1000.0, follower.offset_us
    finally:
        session.close()


def test_the_session_reads_no_latency_once_stopped_and_before_the_audio_closes(
    fake_link: types.ModuleType,
) -> None:
    """The session's thread reads the latency of the JACK ports: the daemon stops it
    before the audio stream closes (libjack aborted the process, SIGABRT, on the
    ports of the closed client: the Link e2e's daemon once exited -6)."""
    sync = SyncControl(open_link=lambda: None)
    order: list[str] = []
    reads: list[float] = []

    def latency() -> float:
        reads.append(time.monotonic())
        return 0.0

    session = LinkSession(sync, LinkFollower(Counting(), sync, lambda: None), latency=latency)
    poll(lambda: len(reads), lambda n: n >= 1, "the latency read", timeout=10)
    session.stop()
    stopped = len(reads)
    time.sleep(3 * REFRESH_S)
    assert len(reads) == stopped and not session._thread.is_alive()
    session.close()

    def step(name: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            **{v: partial(order.append, f"{name}.{v}") for v in ("stop", "close")}
        )

    daemon = types.SimpleNamespace(
        scenes=step("scenes"),
        advertiser=None,
        web=None,
        feedback=None,
        server=None,
        audio=step("audio"),
        midi=None,
        clock_in=None,
        link_session=step("link"),
        clock_out=None,
        recorder=None,
        loader=step("loader"),
        gc=step("gc"),
    )
    Daemon.shutdown(daemon)  # type: ignore[arg-type]
    assert order == [
        "scenes.stop",
        "link.stop",
        "audio.stop",
        "link.close",
        "loader.close",
        "gc.stop",
    ]


# -- the follower --------------------------------------------------------------------------
class _Timeline:
    """A session state as Link's bindings give it: beats of a piecewise tempo map
    in µs of host time, a play state and its start."""

    def __init__(
        self, segments: list[tuple[float, float, float]], playing: bool, start: float
    ) -> None:
        self.segments, self.playing, self.start = segments, playing, start

    def _beat(self, t: float) -> float:
        t0, b0, bpm = self.segments[0]
        for seg in self.segments:
            if t >= seg[0]:
                t0, b0, bpm = seg
        return b0 + (t - t0) * bpm / 60e6

    def tempo(self) -> float:
        return self.segments[-1][2]

    def beatAtTime(self, t: float, quantum: float) -> float:
        return self._beat(t)

    def phaseAtTime(self, t: float, quantum: float) -> float:
        return self._beat(t) % quantum

    def isPlaying(self) -> bool:
        return self.playing

    def timeForIsPlaying(self) -> float:
        return self.start


class _Session:
    def __init__(self) -> None:
        self.link = self
        self.state: _Timeline | None = None

    def captureSessionState(self) -> _Timeline | None:
        return self.state


@pytest.fixture
def rig() -> tuple[Counting, SyncControl, LinkFollower, _Session]:
    engine = Counting()
    engine.prepare(SR, BLOCK)
    engine.post(SetTrack(Track(np.zeros((1, 2, 60 * SR), np.float32), SR, ("mix",))))
    engine.post(Play())
    sync = SyncControl(open_link=lambda: None)
    sync.set_source("link")
    grid = BeatGrid(120.0, 0.5)  # bar 1 beat 1 at the track's 0.5 s
    follower = LinkFollower(engine, sync, lambda: grid)
    follower.offset_us = 0.0
    session = _Session()
    follower.session = session  # type: ignore[assignment]
    return engine, sync, follower, session


def _run(
    engine: Mixer, follower: LinkFollower, t0: float, blocks: int, skip: int = -1
) -> list[float]:
    """``blocks`` blocks from host time ``t0`` (µs); the play head (s) after each.
    Block ``skip`` is lost (an xrun: the stream never calls for it)."""
    out = np.zeros((BLOCK, 2), np.float32)
    heads = []
    for n in range(blocks):
        if n == skip:
            continue
        follower.block_us(t0 + n * BLOCK / SR * 1e6, BLOCK)
        engine.process(out)
        heads.append(engine.position / SR)
    return heads


def test_bar_origin_is_the_first_bar_line_at_or_after_the_start() -> None:
    assert bar_origin(9.3, 1.3, 4.0) == 12.0
    assert bar_origin(8.02, 0.02, 4.0) == 8.0  # a bar line just before: that one
    assert bar_origin(7.99, 3.99, 4.0) == pytest.approx(8.0)
    assert bar_origin(-2.5, 1.5, 4.0) == 0.0


def test_follows_the_session_through_a_tempo_change_with_the_rate(rig) -> None:
    engine, sync, follower, session = rig
    # Started at beat 1.5 of a bar: bar 1 of the track on the next bar line, 2.5
    # beats (1.25 s) later; the track's 0.5 s plays there, its 0 s a beat before.
    start = 1e6
    session.state = _Timeline([(start, 1.5, 120.0)], True, start)
    blocks = int(3 * SR / BLOCK)
    _run(engine, follower, start, blocks)
    assert follower.origin == 4.0
    assert sync.bars == (0.5, 4)
    t = start + blocks * BLOCK / SR * 1e6  # the next block's time: the play head's now
    beat = 1.5 + (t - start) / 0.5e6
    expected = 0.5 + (beat - 4.0) * 0.5
    assert abs(engine.position / SR - expected) <= 1 / SR, engine.position / SR - expected
    assert sync.link_bpm == 120.0 and sync.link_phase is not None
    assert abs(sync.link_phase) <= 1 / SR
    # The tempo goes to 126 at t: the rate follows at once, the phase within 1 ms
    # once the glide's few hundredths of a millisecond are nudged out.
    session.state = _Timeline([(start, 1.5, 120.0), (t, beat, 126.0)], True, start)
    _run(engine, follower, t, int(2 * SR / BLOCK))
    assert sync.link_bpm == 126.0
    assert abs(engine.rate - 1.05) <= 5e-4 * 1.05 + 1e-9, engine.rate
    assert sync.link_phase is not None and abs(sync.link_phase) <= 1e-4, sync.link_phase
    assert sync.describe() == f"link 126.00 BPM {sync.link_phase * 1000:+.1f} ms 0 peers"


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_with_keylock_on_the_play_head_reads_the_shifters_latency_ahead(rig) -> None:
    """Keylock on: the shifter delays the master by its latency, so the play head
    reads the beat the session reaches that much later (the same play head as
    keylock off, 1152 samples on: the session heard stemdeck 24 ms late at 48 kHz)."""
    engine, sync, follower, session = rig
    start = 1e6
    session.state = _Timeline([(start, 4.0, 120.0)], True, start)
    blocks = int(2 * SR / BLOCK)

    def head_ahead(blocks: int) -> float:
        """The play head's lead (s) over the session's beat at the next block."""
        t = start + blocks * BLOCK / SR * 1e6  # the next block's time: the play head's now
        beat = (t - start) / 0.5e6  # from the bar line at the start, the track's 0.5 s
        return engine.position / SR - (0.5 + beat * 0.5)

    _run(engine, follower, start, blocks)
    assert abs(head_ahead(blocks)) <= 1 / SR
    engine.posted.clear()
    engine.post(Keylock(True))  # while rolling
    engine.posted.clear()
    _run(engine, follower, start + blocks * BLOCK / SR * 1e6, blocks)
    assert engine.output_delay == LATENCY
    assert [type(c).__name__ for c in engine.posted] == ["Seek"], engine.posted
    assert abs(head_ahead(2 * blocks) - LATENCY / SR) <= 1 / SR, head_ahead(2 * blocks)
    assert sync.link_phase is not None and abs(sync.link_phase) <= 1 / SR


def test_a_jack_blocks_time_is_moved_to_links_clock_by_jacks_offset(rig) -> None:
    """JACK's block times go through JACK's offset, the null clock's through
    CLOCK_MONOTONIC's: the same beats, and a tempo change stays continuous. Taken
    for CLOCK_MONOTONIC, a JACK time 0.32 s off put the new tempo that far before
    the change (a jump back of 0.32 s times the tempo's change)."""
    engine, sync, follower, session = rig
    follower.offset_us = math.nan  # CLOCK_MONOTONIC's: not used under JACK
    follower.jack_offset_us = float(-LINK_AHEAD_US)  # JACK's clock behind Link's
    start = 1e6
    session.state = _Timeline([(start, 1.5, 120.0)], True, start)
    out = np.zeros((BLOCK, 2), np.float32)
    jack0 = start - follower.jack_offset_us

    def run(first: int, blocks: int) -> None:
        for n in range(first, first + blocks):
            at = jack0 + n * BLOCK / SR * 1e6
            follower.block_jack(at, at + 50.0, BLOCK, monotonic_us)
            engine.process(out)

    blocks = int(3 * SR / BLOCK)
    run(0, blocks)
    assert follower.origin == 4.0
    t = start + blocks * BLOCK / SR * 1e6
    beat = 1.5 + (t - start) / 0.5e6
    assert abs(engine.position / SR - (0.5 + (beat - 4.0) * 0.5)) <= 1 / SR
    session.state = _Timeline([(start, 1.5, 120.0), (t, beat, 126.0)], True, start)
    engine.posted.clear()
    run(blocks, int(2 * SR / BLOCK))
    assert engine.posted and all(isinstance(c, Rate) for c in engine.posted), engine.posted
    assert sync.link_phase is not None and abs(sync.link_phase) <= 1e-4, sync.link_phase
    # CLOCK_MONOTONIC's offset unknown: the null clock's blocks wait for it.
    follower.block_at(time.monotonic(), BLOCK)
    assert sync.link_phase is None and not follower.locked


def test_the_first_jack_block_measures_jacks_offset_when_the_session_has_not(rig) -> None:
    """``--sync link --audio jack``: the session opens before the JACK client, so its
    first measurement has no JACK clock; the first JACK block measures it then,
    rather than sitting out blocks until the session's next refresh."""
    engine, _, follower, session = rig
    engine.process(np.zeros((BLOCK, 2), np.float32))  # the track in
    follower.jack_offset_us = math.nan
    session.link_us = lambda: monotonic_us() + 5e6
    start = 1e6
    session.state = _Timeline([(start, 0.0, 120.0)], True, start)
    at = start - 5e6 + 2e6
    follower.block_jack(at, at + 50.0, BLOCK, lambda: monotonic_us() + 2e6)
    assert abs(follower.jack_offset_us - 3e6) <= 1000.0, follower.jack_offset_us
    assert follower.locked


PERIOD_US = BLOCK / SR * 1e6
#: The driver's stall in the model of :func:`_stalled`: the wall clock ahead of the
#: frames from then on (jackd's dummy driver stopped for 60 ms: docs/sync.md).
STALL_US = 51_000.0


def _jack_times(began: np.ndarray) -> np.ndarray:
    """JACK's times of cycles that began at ``began`` (µs): a second-order
    delay-locked loop of JACK 2's form and bandwidth, thrown off by a jump as
    JACK's was by a stalled driver (to about 60 ms after 51, over seconds)."""
    omega = PERIOD_US * 7.854e-7
    out = np.empty_like(began)
    out[0] = began[0]
    due, integral = began[0] + PERIOD_US, 0.0
    for n in range(1, len(began)):
        delta = (began[n] - due) * omega
        out[n] = due
        integral += 0.5 * omega * delta
        due = due + PERIOD_US + math.floor(integral + delta)
    return out


def _stalled(blocks: int, stall: int, seed: int = 1) -> tuple[np.ndarray, ...]:
    """(when each cycle began, JACK's time of it, when its callback began), µs:
    cycles a period apart, :data:`STALL_US` later from cycle ``stall`` on, each
    callback 20-300 µs into its cycle."""
    began = 1e9 + np.arange(blocks) * PERIOD_US
    began[stall:] += STALL_US
    started = began + np.random.default_rng(seed).uniform(20.0, 300.0, blocks)
    return began, _jack_times(began), started


def test_a_cycles_time_is_jacks_while_its_callbacks_start_within_the_slack() -> None:
    began = 1e9 + np.arange(4000) * PERIOD_US
    started = began + np.random.default_rng(2).uniform(20.0, 300.0, len(began))
    clock = CycleTime()
    assert [clock.time(j, s) for j, s in zip(began, started, strict=True)] == list(began)
    # Starts later than the slack, all of a window: JACK's time is moved by the rest.
    late = [clock.time(j, j + CYCLE_SLACK_US + 700.0) for j in began[:CYCLE_WINDOW]]
    assert late[-1] == began[CYCLE_WINDOW - 1] + 700.0
    assert late[:-1] == list(began[: CYCLE_WINDOW - 1])  # while one within it is seen


def test_a_callback_before_jacks_time_of_its_cycle_moves_it_back_at_once() -> None:
    clock = CycleTime()
    for n in range(20):
        clock.time(1e9 + n * PERIOD_US, 1e9 + n * PERIOD_US + 100.0)
    jack = 1e9 + 20 * PERIOD_US
    assert clock.time(jack, jack - 3000.0) == jack - 3000.0
    assert clock.time(jack + PERIOD_US, jack + PERIOD_US + 100.0) == jack + PERIOD_US - 3000.0
    clock.reset()  # forgotten: a new stream
    assert clock.time(jack, jack + 100.0) == jack


def test_after_a_stalled_driver_the_cycles_times_are_when_they_began() -> None:
    began, jack, started = _stalled(4000, stall=500)
    # The loop's times: 51 ms early at the stall, sliding 10.6 ms past it 4 s on.
    off = jack - began
    assert -51_001.0 < off.min() < -50_999.0 and 10_000.0 < off.max() < 11_000.0
    clock = CycleTime()
    times = np.array([clock.time(j, s) for j, s in zip(jack, started, strict=True)])
    assert np.array_equal(times[:500], jack[:500])
    error = times - began
    # Within the slack from a window after the stall on; not early by more than the
    # callbacks' least start (here 20 µs)
    assert np.abs(error[500 + CYCLE_WINDOW :]).max() <= CYCLE_SLACK_US
    assert error[500 + CYCLE_WINDOW :].max() <= 300.0


def test_the_e2e_recorders_cycle_times_are_when_the_cycles_began() -> None:
    """tests/link_session.py's measure, from the frames and the callbacks' starts
    on both sides of each block: but for :data:`BOUND_BLOCKS` blocks each side of
    the stall (within the xrun's window, not measured)."""
    began, jack, started = _stalled(4000, stall=500)
    frames = 7 * BLOCK + np.arange(len(began)) * BLOCK
    error = cycle_times(frames, jack, started) - began
    # Within the callbacks' least delays' spread (each the least of 33 of 20-300 µs)
    # on both sides, while JACK's own times were up to 51 ms off.
    before, after = error[: 500 - BOUND_BLOCKS], error[500 + BOUND_BLOCKS :]
    assert np.abs(before).max() <= 30.0 and np.abs(after).max() <= 30.0, (before, after)


def test_a_stalled_driver_is_a_lost_block_for_the_follower(rig) -> None:
    """The stall seeks once, a window after it, and the track stays within the
    slack of the session's beat at the time each cycle began; JACK's own times
    would have left it tens of ms off for seconds (the nudge follows at 1 %)."""
    engine, _, follower, session = rig
    follower.jack_offset_us = 0.0
    began, jack, started = _stalled(2000, stall=400)
    start = began[0]
    session.state = _Timeline([(start, 1.5, 120.0)], True, start)
    out = np.zeros((BLOCK, 2), np.float32)
    errors, seeks = [], []
    for n in range(len(began)):
        engine.posted.clear()
        follower.block_jack(jack[n], started[n], BLOCK, monotonic_us)
        for c in engine.posted:
            parts = c.commands if isinstance(c, Batch) else (c,)
            seeks += [n for part in parts if isinstance(part, Seek)]
        # The track's second the session wants heard at the cycle's true start.
        beat = 1.5 + (began[n] - start) / 0.5e6
        want = 0.5 + (beat - follower.origin) * 0.5
        errors.append(engine.position / SR - want)  # before this block plays
        engine.process(out)
    stall = [n for n in seeks if n >= 400]  # before: the start's (bar 1 waits for its bar)
    assert len(stall) == 1 and stall[0] <= 400 + CYCLE_WINDOW, seeks
    late = np.abs(np.array(errors[stall[0] + 1 :]))
    assert late.max() <= CYCLE_SLACK_US / 1e6 + 1 / SR, late.max()


def test_the_sessions_stop_pauses_and_its_start_plays_on_its_bar(rig) -> None:
    engine, sync, follower, session = rig
    start = 1e6
    session.state = _Timeline([(start, 0.0, 120.0)], True, start)
    _run(engine, follower, start, 40)
    assert engine.playing
    engine.posted.clear()
    session.state = _Timeline([(start, 0.0, 120.0)], False, start)
    _run(engine, follower, start + 40 * BLOCK / SR * 1e6, 5)
    assert [type(c) for c in engine.posted] == [Pause]
    assert sync.link_phase is None
    assert math.isnan(follower.origin)
    # Started again at beat 2.25 of a bar: the track waits for the next bar line
    # (its 0 s a beat before it), then plays from there.
    engine.posted.clear()
    t = start + 2e6
    session.state = _Timeline([(start, 0.0, 120.0), (t, 2.25, 120.0)], True, t)
    heads = _run(engine, follower, t, int(1.5 * SR / BLOCK))
    assert follower.origin == 4.0
    assert engine.playing
    # Heard from beat 3 (the track's 0 s, a beat before its bar 1 at 0.5 s): 0.75
    # beats = 0.375 s after t, within a block.
    moving = next(i for i in range(1, len(heads)) if heads[i] > heads[i - 1])
    assert abs(moving * BLOCK / SR - 0.375) <= BLOCK / SR, moving * BLOCK / SR


def test_a_lost_block_seeks_at_once(rig) -> None:
    engine, sync, follower, session = rig
    start = 1e6
    session.state = _Timeline([(start, 0.0, 120.0)], True, start)
    _run(engine, follower, start, 100)
    engine.posted.clear()
    t = start + 100 * BLOCK / SR * 1e6
    _run(engine, follower, t, 10, skip=3)
    seeks = [c for c in engine.posted if isinstance(c, Seek)]
    assert len(seeks) == 1, engine.posted
    # the block after the lost one: the session's beat there, in the track's seconds
    beat = (t + 4 * BLOCK / SR * 1e6 - start) / 0.5e6
    assert seeks[0].seconds == pytest.approx(0.5 + beat * 0.5, abs=1 / SR)
    assert sync.link_phase is not None and abs(sync.link_phase) <= 1 / SR


def test_no_grid_no_lock_and_another_source_lets_go(rig) -> None:
    engine, sync, follower, session = rig
    start = 1e6
    session.state = _Timeline([(start, 0.0, 120.0)], True, start)
    _run(engine, follower, start, 20)
    assert follower.locked and sync.bars == (0.5, 4)
    sync.set_source("off")
    engine.posted.clear()
    _run(engine, follower, start + 20 * BLOCK / SR * 1e6, 5)
    assert engine.posted == []
    assert sync.bars is None and sync.link_phase is None
    assert not follower.following


def test_serve_sync_link_without_the_extra_says_which_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from stemdeck.daemon.cli import main

    monkeypatch.setitem(sys.modules, "link", None)  # import link: ImportError
    monkeypatch.setenv("STEMDECK_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("STEMDECK_CACHE", str(tmp_path / "cache"))
    track = tmp_path / "t.wav"
    sf.write(track, np.zeros((SR // 10, 2), np.float32), SR)
    args = ["serve", str(track), "--no-audio", "--sync", "link", "--http", "off"]
    assert main([*args, "--osc-port", "0", "--no-cache"]) == 1
    err = capsys.readouterr().err
    assert f"stemdeck: error: {MISSING}\n" in err, err


# -- stemdeck's own play, stop and tempo while Link leads -----------------------------------
def test_a_surfaces_play_and_stop_go_to_the_leader_that_takes_them() -> None:
    """With a leader that takes them (Link), play, pause, stop and toggle make no
    engine command but the leader's action (run later: nothing is offered until
    then); a release, loop/off and a leader that declines leave today's commands."""
    host = FakeHost()
    offered: list[bool] = []
    takes = True

    def lead(playing: bool, source: str | None) -> Callable[[], None] | None:
        return partial(offered.append, playing) if takes else None

    transport = TransportControl(host.engine, lead=lead)
    rolling = host.engine.rolling
    led = [transport.command(v) for v in ("play", "pause", "stop", "toggle")]
    assert [type(c) for c in led] == [Led] * 4 and offered == []
    for c in led:
        assert isinstance(c, Led)
        c.run()
    want = [True, False, False, not rolling]  # toggle: a stop while rolling
    assert offered == want
    assert transport.command("play", [0]) is None and offered == want  # a release
    assert transport.command("loop/off") == Loop(0.0, 0.0)
    assert offered == want
    takes = False
    assert transport.command("play") == Play()
    assert transport.command("stop") == Stop()
    assert offered == want


UNKNOWN_9 = "unknown channel '9' in /ch/9/mute; channels are 1..4 or drums, bass, vocals, other"


def _led_host() -> tuple[FakeHost, OscControl, list[tuple[Any, ...]]]:
    """A host whose leader takes starts, stops and rates (as Link's does), each
    action recorded when it runs."""
    host = FakeHost()
    host.give_grid(BeatGrid(120.0, 0.5, 4))
    ran: list[tuple[Any, ...]] = []
    host.transport = TransportControl(
        host.engine,
        grid=lambda: host.beats.require().grid,
        lead=lambda playing, source: partial(ran.append, ("playing", playing)),
        lead_rate=lambda address, rate, bpm, source: partial(ran.append, (address, rate, bpm)),
    )
    return host, OscControl(host), ran


def test_a_leaders_action_runs_once_its_bundle_is_applied_and_never_for_a_refused_one() -> None:
    host, control, ran = _led_host()
    before = host.engine_state()
    bad = ("/ch/9/mute", [1])
    for message in (("/transport/play", []), ("/transport/bpm", [132.0])):
        assert control.handle([message, bad], SENDER) == [("/error", [UNKNOWN_9])]
    assert ran == [] and host.engine_state() == before
    assert control.handle([("/transport/play", []), ("/ch/1/mute", [1])], SENDER) == []
    assert control.handle([("/transport/bpm", [132.0])], SENDER) == []
    assert control.handle([("/transport/rate", [0.75])], SENDER) == []
    assert ran == [
        ("playing", True),
        ("/transport/bpm", 132.0 / 120.0, 120.0),
        ("/transport/rate", 0.75, 120.0),
    ]
    host.block()
    assert host.engine.rate == 1.0  # the leader's: no Rate reached the engine
    assert host.registry.get("/ch/1/mute") == 1
    # Out of range is the rate's own error, before the leader sees it.
    assert control.handle([("/transport/rate", [3.0])], SENDER) == [
        ("/error", ["/transport/rate must be within 0.5..2, got 3"])
    ]
    assert len(ran) == 3
    # A bundle's grid edit is the grid the rate is of: 120 BPM on a 100 BPM grid.
    for message in (("/transport/bpm", [120.0]), ("/transport/rate", [1.2])):
        assert control.handle([("/track/bpm", [100.0]), message], SENDER) == [
            ("/track/grid", [100.0, 0.5, 4])
        ]
        assert ran[-1] == (message[0], 1.2, 100.0), ran
        assert control.handle([("/track/bpm", [120.0])], SENDER) == [
            ("/track/grid", [120.0, 0.5, 4])
        ]
    # A leader's actions count as transport commands: at most 16 in a bundle.
    del ran[:]
    plays: list[tuple[str, list[Any]]] = [("/transport/play", []), ("/transport/stop", [])] * 9
    assert control.handle(plays, SENDER) == [
        ("/error", ["18 transport commands in one bundle; at most 16"])
    ]
    assert ran == []


def test_a_leader_that_holds_the_rate_refuses_it_in_one_error() -> None:
    host = FakeHost()
    host.give_grid(BeatGrid(120.0, 0.5, 4))
    said = "the tempo follows the JACK transport; set it there, or /sync/source off first"

    def hold(address: str, rate: float, grid_bpm: float | None, source: str | None) -> None:
        raise ParameterError(f"{address}: {said}")

    host.transport = TransportControl(
        host.engine, grid=lambda: host.beats.require().grid, lead_rate=hold
    )
    control = OscControl(host)
    before = host.engine_state()
    for address, value in (("/transport/rate", 1.2), ("/transport/bpm", 130.0)):
        assert control.handle([(address, [value]), ("/ch/1/mute", [1])], SENDER) == [
            ("/error", [f"{address}: {said}"])
        ]
    assert host.engine_state() == before and host.registry.get("/ch/1/mute") == 0


def test_a_bundle_that_lets_the_leader_go_sets_the_rate_it_holds() -> None:
    """[/sync/source off, /transport/rate] under the JACK transport: the bundle is
    judged in its order (the rate under the source it sets first), not refused whole
    for the rate the leader held when it came; the other way round, the rate is
    refused and nothing of the bundle is applied."""
    host = FakeHost()
    host.sync = SyncControl(jack=True)
    host.sync.set_source("jack")
    host.give_grid(BeatGrid(120.0, 0.5, 4))
    daemon = types.SimpleNamespace(sync=host.sync, link_session=None)
    host.transport = TransportControl(
        host.engine,
        grid=lambda: host.beats.require().grid,
        lead_rate=partial(Daemon._lead_rate, daemon),  # type: ignore[arg-type]
    )
    control = OscControl(host)
    assert control.handle([("/sync/source", ["off"]), ("/transport/rate", [1.25])], SENDER) == [
        ("/sync/source", ["off"])
    ]
    host.block()
    assert host.sync.source == "off" and host.engine.rate == 1.25
    assert control.handle([("/sync/source", ["jack"]), ("/transport/rate", [0.9])], SENDER) == [
        (
            "/error",
            [
                "/transport/rate: the tempo follows the JACK transport; set it there, "
                "or /sync/source off first"
            ],
        )
    ]
    host.block()
    assert host.sync.source == "off" and host.engine.rate == 1.25


@pytest.mark.parametrize(
    ("source", "said"),
    [
        (
            "jack",
            "/transport/rate: the tempo follows the JACK transport; set it there, "
            "or /sync/source off first",
        ),
        (
            "midi",
            "/transport/rate: the tempo follows the MIDI clock; set it there, "
            "or /sync/source off first",
        ),
    ],
)
def test_the_daemon_refuses_a_rate_under_jack_and_midi(source: str, said: str) -> None:
    sync = SyncControl(jack=True, midi=True)
    sync.set_source(source)
    daemon = types.SimpleNamespace(sync=sync, link_session=None)
    with pytest.raises(ParameterError) as caught:
        Daemon._lead_rate(daemon, "/transport/rate", 1.2, 120.0, None)  # type: ignore[arg-type]
    assert str(caught.value) == said
    # Judged under the source a bundle sets before it: off takes it back, and the
    # other way round.
    assert Daemon._lead_rate(daemon, "/transport/rate", 1.2, 120.0, "off") is None  # type: ignore[arg-type]
    sync.set_source("off")
    with pytest.raises(ParameterError) as caught:
        Daemon._lead_rate(daemon, "/transport/rate", 1.2, 120.0, source)  # type: ignore[arg-type]
    assert str(caught.value) == said


def test_the_daemon_gives_a_rate_to_the_link_session_as_its_tempo() -> None:
    """Under Link with a grid, a rate is the session's tempo (grid BPM times it);
    without a grid, or under no leader, the rate is the engine's."""
    sync = SyncControl(open_link=lambda: None)
    sync.set_source("link")
    asked: list[float] = []
    session = types.SimpleNamespace(request_tempo=asked.append)
    daemon = types.SimpleNamespace(sync=sync, link_session=session)
    lead = partial(Daemon._lead_rate, daemon, "/transport/rate")  # type: ignore[arg-type]
    assert lead(1.1, None, None) is None
    run = lead(1.1, 120.0, None)
    assert run is not None and asked == []  # nothing until the group is applied
    run()
    assert asked == [120.0 * 1.1]
    sync.set_source("off")
    assert lead(1.1, 120.0, None) is None
    assert lead(1.1, 120.0, "link") is not None  # a bundle's /sync/source link first


def test_request_playing_starts_and_stops_the_session() -> None:
    """The real bindings, the instance never enabled (no network): a start alone in
    the session is beat 0 as soon as the track can sound there (the output's latency,
    the keylock's delay and two blocks from now: asked for now, the anchor's first
    30 ms were never heard with keylock on), a second start does not move the beats,
    a stop stops."""
    pytest.importorskip("link", reason="the optional extra stemdeck[link] is not installed")
    sync = SyncControl(open_link=lambda: None)  # source off: the instance stays disabled
    engine = Counting()
    engine.prepare(48000, 256)
    engine.post(Keylock(True))
    for _ in range(8):  # the shifter filled and crossfaded in: its delay heard
        engine.process(np.zeros((256, 2), np.float32))
    assert engine.output_delay == LATENCY
    follower = LinkFollower(engine, sync, lambda: None)
    session = LinkSession(sync, follower, latency=lambda: 0.005)
    try:
        assert session.link.enabled is False
        lead = 5000.0 + (LATENCY + 2 * 256) / 48000 * 1e6
        assert session.lead_us() == lead
        before = session.link.clock().micros()
        session.request_playing(True, 4.0)
        after = session.link.clock().micros()
        state = session.link.captureSessionState()
        start = state.timeForIsPlaying()
        assert state.isPlaying() is True
        assert before + lead - 1 <= start <= after + lead + 1, (start - before, lead)
        assert state.beatAtTime(start, 4.0) == 0.0 and state.phaseAtTime(start, 4.0) == 0.0
        time.sleep(0.01)
        session.request_playing(True, 4.0)  # already playing: nothing moves
        state = session.link.captureSessionState()
        assert state.timeForIsPlaying() == start and state.beatAtTime(start, 4.0) == 0.0
        session.request_playing(False, 4.0)
        assert session.link.captureSessionState().isPlaying() is False
        assert session.link.enabled is False
    finally:
        session.close()
