"""The JACK timebase with the real mixer and no JACK: a made-up session (a
timebase master's bars, beats and tempo per block, as ``jack_position_t``'s
fields) drives :class:`BbtFollower` as the JACK process callback does, and the
assertions are on the mixer's output; :class:`TimebaseMaster` fills a position
structure from the grid and the play head."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from fx_helpers import cents, frequency
from jack_helpers import Counting, keylock_heard

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.mixer.commands import Batch, Keylock, Play, Rate, SetTrack, Track
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.kernel import COMPILED
from stemdeck.core.mixer.keylock import FRAME_SECONDS, KEYLOCK_QUALITY, latency_at
from stemdeck.daemon.clock_in import NUDGE
from stemdeck.daemon.quantize import Quantizer
from stemdeck.daemon.sync import SyncControl
from stemdeck.daemon.timebase import (
    BBT_VALID,
    TICKS_PER_BEAT,
    BbtFollower,
    TimebaseMaster,
    leader_grid,
    session_beat,
)

SR = 8000
#: The keylock's latency at SR: a frame of 128 (16 ms) and half a hop.
LATENCY = latency_at(SR)
BLOCK = 64
LENGTH = 20 * SR
#: The track's grid: 120 BPM, its first downbeat at 0.25 s.
GRID = BeatGrid(120.0, 0.25, 4)
#: Clicks on the track's beats 8 and 20 after the downbeat.
CLICKS = (8, 20)
#: Ticks per beat of the made-up session (as Ardour's).
TPB = 1920.0


class Session:
    """A timebase master: the session's beat at each transport frame, from bar 1
    beat 1 at frame 0 at ``bpm`` (changed with :meth:`tempo`, the beat continuous)."""

    def __init__(self, bpm: float, per_bar: int = 4) -> None:
        self.bpm = bpm
        self.per_bar = per_bar
        self.frame = 0
        self.beat = 0.0  # at self.frame
        self.rolling = True

    def tempo(self, bpm: float) -> None:
        self.bpm = bpm

    def locate(self, beat: float) -> None:
        self.frame = round(beat * 60.0 / self.bpm * SR)
        self.beat = beat

    def frame_of(self, beat: float) -> float:
        """The transport frame of ``beat`` at the tempo now (from the current frame)."""
        return self.frame + (beat - self.beat) * 60.0 / self.bpm * SR

    def pos(self) -> SimpleNamespace:
        bar = math.floor(self.beat / self.per_bar)
        in_bar = self.beat - bar * self.per_bar
        beat = int(in_bar)
        return SimpleNamespace(
            valid=BBT_VALID,
            frame=self.frame,
            bar=bar + 1,
            beat=beat + 1,
            tick=int((in_bar - beat) * TPB),
            beats_per_bar=float(self.per_bar),
            ticks_per_beat=TPB,
            beats_per_minute=self.bpm,
        )

    def advance(self, frames: int) -> None:
        if self.rolling:
            self.frame += frames
            self.beat += frames / SR * self.bpm / 60.0


def make(
    clicks: tuple[int, ...] = CLICKS, keylock_frame_s: float = FRAME_SECONDS
) -> tuple[Counting, SyncControl, BbtFollower]:
    engine = Counting(keylock_frame_s)
    engine.prepare(SR, BLOCK)
    audio = np.zeros((1, 2, LENGTH), np.float32)
    for beat in clicks:
        audio[0, :, round((GRID.downbeat + beat * GRID.period) * SR)] = 1.0
    engine.post(SetTrack(Track(audio, SR, ("click",))))
    engine.post(Play())
    engine.process(np.zeros((BLOCK, 2), np.float32))
    sync = SyncControl(jack=True)
    sync.set_source("jack")
    engine.posted.clear()
    return engine, sync, BbtFollower(engine, sync, lambda: GRID)


def run(
    engine: Mixer, follower: BbtFollower, session: Session, blocks: int
) -> tuple[np.ndarray, np.ndarray]:
    """``blocks`` blocks of the session; (the transport frame of every output
    sample, the output)."""
    frames, out = [], []
    for _ in range(blocks):
        follower.block(session.rolling, session.frame, BLOCK, session.pos())
        block = np.zeros((BLOCK, 2), np.float32)
        engine.process(block)
        out.append(block)
        frames.append(session.frame + np.arange(BLOCK))
        session.advance(BLOCK)
    return np.concatenate(frames), np.concatenate(out)


def heard(frames: np.ndarray, out: np.ndarray) -> list[float]:
    """The transport frames where clicks sound (the centroid of each interpolated
    impulse, in frames), in order."""
    level = np.abs(out[:, 0])
    peaks = [i for i in np.flatnonzero(level > 0.2) if level[i] >= level[max(i - 1, 0)]]
    onsets: list[float] = []
    for i in peaks:
        if onsets and frames[i] - onsets[-1] < SR // 10:
            continue
        lo, hi = max(i - 3, 0), i + 4
        w = level[lo:hi]
        onsets.append(float(np.sum(frames[lo:hi] * w) / np.sum(w)))
    return onsets


def test_the_sessions_beat_plays_the_tracks_beat_at_its_tempo() -> None:
    engine, sync, follower = make()
    session = Session(126.0)
    session.locate(4.0)  # bar 2 beat 1
    frames, out = run(engine, follower, session, 12 * SR // BLOCK)
    # The first downbeat is bar 1 beat 1 (no anchor set): track beat k at session beat k.
    assert follower.locked
    assert engine.rate == pytest.approx(126.0 / 120.0, abs=0.01 * 126 / 120)
    assert sync.jack_bpm == 126.0
    assert sync.bars == (GRID.downbeat, 4)
    onsets = heard(frames, out)
    wanted = [Session(126.0).frame_of(k) for k in CLICKS]
    assert len(onsets) == 2, onsets
    # Within 1 ms: the session's ticks (1/1920 beat, 0.25 ms) and the nudge's lag.
    errors = [(o - w) / SR * 1000 for o, w in zip(onsets, wanted, strict=True)]
    assert max(abs(e) for e in errors) <= 1.0, errors
    assert sync.jack_phase is not None and abs(sync.jack_phase) <= 0.0005
    assert sync.describe() == f"jack 126.00 BPM {sync.jack_phase * 1000:+.1f} ms"


def test_a_tempo_change_moves_the_rate_and_keeps_the_beat() -> None:
    engine, sync, follower = make(clicks=(16,))
    session = Session(126.0)
    run(engine, follower, session, 2 * SR // BLOCK)
    engine.posted.clear()
    before = engine.rate
    session.tempo(100.0)
    bent = run(engine, follower, session, 3)
    # The rate bends over two blocks, below the new rate and back up to it, so the
    # head covers what 100 BPM does from the change: locked at the third block. (A
    # 30 ms glide left the beat 3.25 ms behind, taken out by the nudge over a beat.)
    base = 100.0 / 120.0
    assert engine.posted[1] == Rate(base, glide=BLOCK), engine.posted
    bend = engine.posted[0]
    assert isinstance(bend, Rate) and bend.glide == BLOCK, engine.posted
    assert bend.rate == pytest.approx(base + (base - before) / 2, abs=1e-3), (bend, before)
    assert sync.jack_phase is not None and abs(sync.jack_phase) <= 1.0 / SR, sync.jack_phase
    frames, out = run(engine, follower, session, 8 * SR // BLOCK - 3)
    frames, out = np.concatenate([bent[0], frames]), np.concatenate([bent[1], out])
    assert engine.rate == pytest.approx(base, rel=0.001)
    assert sync.jack_bpm == 100.0
    (onset,) = heard(frames, out)
    # Beat 16 at 100 BPM from where the tempo changed (the session's beat 2 * 126 / 60).
    wanted = 2 * SR + (16 - 2 * 126.0 / 60.0) * 60.0 / 100.0 * SR
    # Within a tick of the session (1/1920 beat, 0.31 ms at 100 BPM): its beats are cut to ticks.
    assert abs(onset - wanted) / SR <= 60.0 / 100.0 / 1920, (onset, wanted)


def test_a_bend_left_half_way_ends_on_the_steps_rate() -> None:
    """A tempo step's first block bends past the new rate; when the next block does
    not lock (another source), it still ends the bend on the step's rate, not at
    the overshoot for the rest of the run."""
    engine, sync, follower = make()
    session = Session(150.0)
    run(engine, follower, session, SR // BLOCK)
    engine.posted.clear()
    session.tempo(90.0)
    run(engine, follower, session, 1)
    assert isinstance(engine.posted[0], Rate) and engine.posted[0].glide == BLOCK
    sync.set_source("off")
    run(engine, follower, session, 2)
    assert engine.posted[1:] == [Rate(0.75, glide=BLOCK)], engine.posted
    assert engine.rate == 0.75


def test_no_bend_with_the_pitch_shifter_engaged() -> None:
    """Keylock on: a tempo step glides as the mixer does (the shifter's transpose
    follows the block's last rate, and the bend's overshoot chirped), nudged: what
    the shifter holds was read at the old tempo, so the play head is ahead of the
    beat the session reaches when this block is heard, and slows by the nudge's 1 %."""
    engine, _, follower = make()
    engine.post(Keylock(True))
    session = Session(150.0)
    run(engine, follower, session, SR // BLOCK)
    engine.posted.clear()
    session.tempo(90.0)
    run(engine, follower, session, 1)
    assert engine.posted == [Rate(0.75 * (1.0 - NUDGE))], engine.posted


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
@pytest.mark.parametrize("keylock", [True, False])
def test_a_masters_tempo_change_keeps_the_key_with_keylock(keylock: bool) -> None:
    """The master goes from 120 to 150 BPM: the rate follows (1.25) and, keylock on,
    a 440 Hz tone stays at 440 Hz within a cent; keylock off it rises to 550 Hz."""
    engine = Counting()
    engine.prepare(SR, BLOCK)
    t = np.arange(LENGTH) / SR
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    engine.post(SetTrack(Track(np.stack([tone, tone])[np.newaxis], SR, ("tone",))))
    engine.post(Keylock(keylock))
    engine.post(Play())
    sync = SyncControl(jack=True)
    sync.set_source("jack")
    follower = BbtFollower(engine, sync, lambda: GRID)
    session = Session(120.0)
    run(engine, follower, session, SR // BLOCK)
    session.tempo(150.0)
    _, out = run(engine, follower, session, 3 * SR // BLOCK)
    heard = frequency(out[SR:, 0], SR)  # a second on, the shifter filled and crossfaded
    if keylock:
        assert abs(cents(heard, 440.0)) < 1.0, heard
    else:
        assert heard == pytest.approx(550.0, rel=1e-3)
    # Keylock on, what the shifter held at the step (its latency, 18 ms at 8 kHz)
    # was read at the old rate: heard behind the session, which the nudge (1 %)
    # takes out within 3 s. Then the rate is the session's.
    run(engine, follower, session, 4 * SR // BLOCK)
    assert engine.rate == pytest.approx(1.25, rel=1e-3)
    assert sync.jack_phase is not None and abs(sync.jack_phase) <= 0.0005, sync.jack_phase


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
@pytest.mark.parametrize(("quality", "delay"), [("live", 144), ("fine", 288)])
def test_with_keylock_on_the_clicks_still_sound_on_the_sessions_beats(
    quality: str, delay: int
) -> None:
    """The keylock's shifter delays the master by its latency (144 samples at 8 kHz,
    288 with ``--keylock-quality fine``): the follower places the play head that far
    ahead, so the session hears each click on its beat (it heard them 24 ms late at
    48 kHz). Keylock off again: one seek back, and the next click on its beat as
    well. Through the shifter a click is spread over its frame (32 ms for fine at
    8 kHz, its first loud sample 1.3 ms before the beat): where it sounds is its
    energy's centroid."""
    engine, sync, follower = make(keylock_frame_s=KEYLOCK_QUALITY[quality])
    engine.post(Keylock(True))
    session = Session(126.0)
    session.locate(4.0)
    frames, out = run(engine, follower, session, 7 * SR // BLOCK)
    assert engine.output_delay == latency_at(SR, KEYLOCK_QUALITY[quality]) == delay
    beat = Session(126.0).frame_of(8.0)
    near = np.abs(frames - beat) < SR // 20
    energy = out[near, 0].astype(np.float64) ** 2
    late_ms = (np.sum(frames[near] * energy) / np.sum(energy) - beat) / SR * 1000
    assert abs(late_ms) <= 1.0, late_ms  # 18 ms late (144 samples at 8 kHz) before
    assert sync.jack_phase is not None and abs(sync.jack_phase) <= 0.0005
    engine.posted.clear()
    engine.post(Keylock(False))
    engine.posted.clear()
    frames, out = run(engine, follower, session, 7 * SR // BLOCK)
    assert engine.output_delay == 0
    assert [type(c).__name__ for c in engine.posted[:1]] == ["Seek"], engine.posted
    (onset,) = heard(frames, out)
    late_ms = (onset - Session(126.0).frame_of(20.0)) / SR * 1000
    assert abs(late_ms) <= 1.0, late_ms


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_with_keylock_on_a_track_at_its_own_rate_clicks_on_the_beats() -> None:
    """A track at 11025 Hz on the 8 kHz clock, keylock on: the shifter's delay is in
    the device's frames, the session's beat in its own; the click on the track's
    beat 8 sounds on the session's beat 8 within 1 ms."""
    rate = 11025
    engine = Counting()
    engine.prepare(SR, BLOCK)
    audio = np.zeros((1, 2, 20 * rate), np.float32)
    audio[0, :, round((GRID.downbeat + 8 * GRID.period) * rate)] = 1.0
    engine.post(SetTrack(Track(audio, rate, ("click",))))
    engine.post(Play())
    keylock_heard(engine)
    sync = SyncControl(jack=True)
    sync.set_source("jack")
    session = Session(126.0)
    session.locate(4.0)
    frames, out = run(engine, BbtFollower(engine, sync, lambda: GRID), session, 7 * SR // BLOCK)
    (onset,) = heard(frames, out)
    late_ms = (onset - Session(126.0).frame_of(8.0)) / SR * 1000
    assert abs(late_ms) <= 1.0, late_ms


def test_a_start_plays_the_first_beat_at_the_sessions_tempo() -> None:
    """A start at 150 BPM (rate 1.25 from 1.0) sets the rate at once, under the
    start's fade in: a glide over the mixer's 30 ms would leave the play head 3.75 ms
    of the track behind, and the click a quarter beat after the start would sound
    about 2 ms late (the 1 % nudge wins back 1 ms in 0.1 s)."""
    engine, _, follower = make(clicks=(5,))
    session = Session(150.0)
    session.locate(4.75)
    frames, out = run(engine, follower, session, SR // BLOCK)
    start = engine.posted[0]
    assert isinstance(start, Batch)
    rates = [c for c in start.commands if isinstance(c, Rate)]
    assert rates == [Rate(150.0 / 120.0, at_once=True)]
    (onset,) = heard(frames, out)
    wanted = Session(150.0).frame_of(5.0)
    assert abs(onset - wanted) / SR * 1000 <= 0.25, (onset - wanted) / SR * 1000


def test_a_tempo_step_within_a_block_and_renumbered_beats_are_followed() -> None:
    """A master changes the tempo on its own frame, half way through one of our
    blocks (150 to 90 BPM): the clicks from two beats on sound on the session's
    beats and the follower's beat is the master's again. Then the master renumbers
    its beats by two with the frame rolling on (a bar offset edited): the next click
    follows the new numbers. (With the frame where it was expected, the master's
    beat is read again, never a beat carried on: a slip is a frame off.)"""
    engine, sync, follower = make(clicks=(9, 30))
    session = Session(150.0)
    frames, out = [], []

    def one() -> None:  # one block at the session's frame; the session stays there
        follower.block(True, session.frame, BLOCK, session.pos())
        buf = np.zeros((BLOCK, 2), np.float32)
        engine.process(buf)
        frames.append(session.frame + np.arange(BLOCK))
        out.append(buf)

    def blocks(n: int) -> None:
        for _ in range(n):
            one()
            session.advance(BLOCK)

    blocks(2 * SR // BLOCK)  # beat 5 at 2 s
    one()
    session.advance(BLOCK // 2)
    session.tempo(90.0)
    session.advance(BLOCK // 2)
    blocks(4 * SR // BLOCK)  # past beat 9
    step_frame = 2 * SR + BLOCK // 2
    step_beat = 5.0 + (BLOCK // 2) / SR * 150.0 / 60.0
    (onset,) = heard(np.concatenate(frames), np.concatenate(out))
    wanted = step_frame + (9 - step_beat) * 60.0 / 90.0 * SR
    assert abs(onset - wanted) / SR * 1000 <= 1.0, (onset - wanted) / SR * 1000
    assert abs(follower._beat - session.beat) <= 1 / TPB
    frames.clear()
    out.clear()
    session.beat += 2.0  # beat 30 comes two beats sooner
    blocks(12 * SR // BLOCK)
    (onset,) = heard(np.concatenate(frames), np.concatenate(out))
    assert abs(onset - session.frame_of(30.0)) / SR * 1000 <= 1.0, onset
    assert sync.jack_phase is not None and abs(sync.jack_phase) <= 0.0005


def test_a_locate_seeks_once_and_a_steady_lock_posts_little() -> None:
    engine, _, follower = make()
    session = Session(126.0)
    run(engine, follower, session, 3 * SR // BLOCK)
    engine.posted.clear()
    run(engine, follower, session, 3 * SR // BLOCK)
    # Locked: a nudge post only when the rate moves by 0.01 %; 375 blocks here.
    assert len(engine.posted) <= 5, engine.posted
    engine.posted.clear()
    session.locate(18.0)
    frames, out = run(engine, follower, session, 2 * SR // BLOCK)
    assert [type(c).__name__ for c in engine.posted[:1]] == ["Seek"]
    (onset,) = heard(frames, out)
    assert abs(onset - session.frame_of(20.0)) / SR * 1000 <= 1.0, onset


@pytest.mark.parametrize("slip", ["missed", "missed, bars stale", "missed, stale, run twice"])
def test_a_slipped_cycle_keeps_the_clicks_on_the_sessions_beats(slip: str) -> None:
    """A busy machine: this client misses a cycle (the frame is two blocks on),
    the master missed it too (JACK moved the frame on under the bars and beats
    written for the missed cycle), and the late client runs that cycle twice. The
    click 0.3 s later (the track's beat 8) sounds on the session's beat 8."""
    engine, _, follower = make()
    session = Session(126.0)
    frames, out = [], []

    def block(pos: SimpleNamespace, heard_: bool = True) -> None:
        follower.block(True, session.frame, BLOCK, pos)
        buf = np.zeros((BLOCK, 2), np.float32)
        engine.process(buf)
        if heard_:  # a cycle run twice: only the second reaches the port
            frames.append(session.frame + np.arange(BLOCK))
            out.append(buf)

    while session.frame < session.frame_of(8.0) - 0.3 * SR:
        block(session.pos())
        session.advance(BLOCK)
    missed = session.pos()  # written for the cycle this client misses
    session.advance(BLOCK)
    pos = session.pos()
    if "stale" in slip:
        pos = SimpleNamespace(**{**vars(missed), "frame": session.frame})
    if "twice" in slip:
        block(pos, heard_=False)
    block(pos)
    session.advance(BLOCK)
    for _ in range(SR // BLOCK):
        block(session.pos())
        session.advance(BLOCK)
    (onset,) = heard(np.concatenate(frames), np.concatenate(out))[:1]
    wanted = Session(126.0).frame_of(8.0)
    assert abs(onset - wanted) / SR * 1000 <= 1.0, (onset - wanted) / SR * 1000


def test_the_anchor_once_set_is_bar_one() -> None:
    engine, sync, follower = make()
    sync.set_anchor(GRID.downbeat + 4 * GRID.period)  # bar 1 is the track's bar 2
    session = Session(120.0)
    frames, out = run(engine, follower, session, 10 * SR // BLOCK)
    onsets = heard(frames, out)
    wanted = [Session(120.0).frame_of(k - 4) for k in CLICKS]
    errors = [(o - w) / SR * 1000 for o, w in zip(onsets, wanted, strict=True)]
    assert max(abs(e) for e in errors) <= 1.0, errors
    assert sync.bars == (GRID.downbeat + 2.0, 4)


def test_without_bars_it_follows_the_position_at_rate_one() -> None:
    engine, sync, follower = make()
    session = Session(126.0)
    run(engine, follower, session, 20)
    assert follower.locked
    engine.posted.clear()
    follower.block(True, session.frame, BLOCK, SimpleNamespace(valid=0))
    assert not follower.locked
    assert sync.jack_bpm is None and sync.jack_phase is None and sync.bars is None
    assert sync.describe() == "jack"
    assert [type(c).__name__ for c in engine.posted] == ["Rate", "Seek"]
    assert engine.posted[0] == Rate(1.0)


def test_source_off_and_timebase_master_do_not_lock() -> None:
    engine, sync, follower = make()
    session = Session(126.0)
    run(engine, follower, session, 5)
    sync.set_source("off")
    engine.posted.clear()
    run(engine, follower, session, 5)
    assert engine.posted == []
    assert sync.bars is None and sync.jack_phase is None and not follower.locked
    sync.set_source("jack")
    sync.timebase_master = True  # our own bars: the position alone
    run(engine, follower, session, 5)
    assert not follower.locked and sync.jack_bpm is None


@pytest.mark.parametrize(
    "field, value",
    [
        ("valid", 0),
        ("beats_per_minute", float("nan")),
        ("beats_per_minute", 0.0),
        ("beats_per_minute", 1e9),
        ("beats_per_bar", 0.0),
        ("ticks_per_beat", 0.0),
        ("ticks_per_beat", float("inf")),
        ("beat", 0),
        ("beat", 6),
        ("tick", -1),
        ("tick", 1920),
    ],
)
def test_a_broken_masters_position_is_no_bars(field: str, value: float) -> None:
    pos = Session(120.0).pos()
    assert session_beat(pos) == (0.0, 120.0, 4.0, 1 / 1920)
    setattr(pos, field, value)
    assert session_beat(pos) is None


def test_session_beat_counts_bars_beats_and_ticks() -> None:
    pos = SimpleNamespace(
        valid=BBT_VALID | 0x1,
        bar=3,
        beat=2,
        tick=480,
        beats_per_bar=3.0,
        ticks_per_beat=1920.0,
        beats_per_minute=90.0,
    )
    assert session_beat(pos) == (2 * 3 + 1 + 0.25, 90.0, 3.0, 1 / 1920)


def test_quantize_follows_the_leaders_bars() -> None:
    assert leader_grid(GRID, None) is GRID
    assert leader_grid(None, (1.0, 4)) is None
    assert leader_grid(GRID, (1.1, 3)) == BeatGrid(120.0, 1.1, 3)
    assert leader_grid(GRID, (1.1, 33)) is GRID  # no grid has such bars: the track's
    engine, sync, follower = make()
    sync.set_anchor(1.1)
    session = Session(126.0, per_bar=3)
    run(engine, follower, session, SR // BLOCK)
    quantizer = Quantizer(engine, lambda: leader_grid(GRID, sync.bars))
    quantizer.set_mode("bar")
    frame = quantizer.target()
    assert frame is not None
    # The session's next bar (3 beats) as the track's frame: anchor + 3 n periods.
    bars = (frame / SR - 1.1) / (3 * GRID.period)
    assert abs(bars - round(bars)) < 1e-9 and frame > engine.position


def test_the_master_fills_bars_from_the_grid_at_the_play_head() -> None:
    engine, sync, _ = make()
    sync.set_source("off")
    master = TimebaseMaster(engine, sync, lambda: GRID)
    for seconds, rate in ((0.25, 1.0), (3.125, 1.0), (0.1, 1.25), (9.0 + 1 / 3, 0.9)):
        engine.position = round(seconds * SR)
        engine.rate = rate
        pos = SimpleNamespace(valid=0x1, frame=12345)
        master.fill(pos)
        beats = (engine.position / SR - GRID.downbeat) / GRID.period
        bar = math.floor(beats / 4)
        assert pos.valid == 0x1 | BBT_VALID
        assert pos.bar == bar + 1
        assert pos.beat == int(beats - 4 * bar) + 1
        assert pos.tick == int((beats - 4 * bar - (pos.beat - 1)) * TICKS_PER_BEAT)
        assert pos.bar_start_tick == bar * 4 * TICKS_PER_BEAT
        assert (pos.beats_per_bar, pos.beat_type, pos.ticks_per_beat) == (4.0, 4.0, 1920.0)
        assert pos.beats_per_minute == 120.0 * rate
    # Following the transport's frames: the second the follower seeks to, at rate 1.
    sync.set_source("jack")
    sync.set_anchor(0.5)
    pos = SimpleNamespace(valid=0, frame=3 * SR)
    master.fill(pos)
    assert (pos.bar, pos.beat, pos.tick) == (2, 3, int(0.5 * TICKS_PER_BEAT))
    assert pos.beats_per_minute == 120.0
    # Keylock on, not following: the bars of what the cycle sounds, the play head
    # less the shifter's latency at the vinyl rate (2 s less 144 samples at 1.25).
    if COMPILED is not None:
        sync.set_source("off")
        keylock_heard(engine)
        assert engine.output_delay == LATENCY
        engine.position = 2 * SR
        engine.rate = 1.25
        pos = SimpleNamespace(valid=0, frame=0)
        master.fill(pos)
        beats = (2.0 - LATENCY * 1.25 / SR - GRID.downbeat) / GRID.period
        assert (pos.bar, pos.beat) == (1, int(beats) + 1)
        assert pos.tick == int((beats - int(beats)) * TICKS_PER_BEAT)
        # Following the transport: the second heard at the cycle is the frame's, as
        # keylock off (the follower put the play head the delay ahead of it).
        sync.set_source("jack")
        pos = SimpleNamespace(valid=0, frame=3 * SR)
        master.fill(pos)
        assert (pos.bar, pos.beat, pos.tick) == (2, 3, int(0.5 * TICKS_PER_BEAT))
        assert pos.beats_per_minute == 120.0
    no_grid = TimebaseMaster(engine, sync, lambda: None)
    pos = SimpleNamespace(valid=0x1 | BBT_VALID, frame=0)
    no_grid.fill(pos)
    assert pos.valid == 0x1
