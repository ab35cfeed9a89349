"""Quantized commands in the mixer: applied at the output sample where the head
reaches their frame, at any rate; held, flushed and bounded as documented."""

import tracemalloc

import numpy as np
import pytest

from stemdeck.core.mixer.commands import (
    Batch,
    JumpBy,
    Loop,
    MasterTarget,
    Pause,
    Play,
    Quantized,
    Rate,
    Roll,
    RollEnd,
    Seek,
    SetTrack,
    StripTarget,
    Track,
)
from stemdeck.core.mixer.control import PENDING_ACTIONS
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread

SR = 48000
BLOCK = 256
RAMP_MS = 10.0


def probe_track(seconds: float = 4.0, sr: int = SR) -> Track:
    """Strip 1 reads its own frame index (so the output tells where the head read),
    strip 2 is a constant 0.5 (so a mute's ramp shows at the sample it starts)."""
    n = int(seconds * sr)
    channels = np.empty((2, 2, n), np.float32)
    channels[0] = np.arange(n, dtype=np.float32)
    channels[1] = 0.5
    return Track(channels, sr, ("probe", "dc"))


def mixer(track: Track, *, rate: float = 1.0, compiled: bool | None = None) -> Mixer:
    m = Mixer(max_channels=2, ramp_ms=RAMP_MS, compiled=compiled)
    m.prepare(SR, BLOCK, outputs="channels")
    m.post(SetTrack(track))
    if rate != 1.0:
        m.post(Rate(rate))
    m.post(Play())
    return m


def blocks(m: Mixer, count: int) -> np.ndarray:
    """``count`` blocks; the output (frames, 4): probe L/R, dc L/R."""
    out = np.zeros((count * BLOCK, m.out_channels), np.float32)
    for i in range(count):
        m.process(out[i * BLOCK : (i + 1) * BLOCK])
    return out


def mute(index: int, on: bool = True) -> StripTarget:
    return StripTarget(index, 1.0, on, False, 0.0)


def ramp_start(out: np.ndarray) -> int:
    """The first output sample where the dc strip is below its level."""
    below = np.flatnonzero(out[:, 2] < 0.5 - 1e-6)
    assert below.size, "the mute never started"
    return int(below[0])


def crossing(out: np.ndarray, frame: int) -> int:
    """The first output sample whose head read at or past track ``frame``
    (the probe strip is the head's position, interpolated between rates)."""
    at = np.flatnonzero(out[:, 0] >= frame - 1e-3)
    assert at.size, f"the head never reached frame {frame}"
    return int(at[0])


@pytest.mark.parametrize("compiled", [None, False])
@pytest.mark.parametrize(("rate", "settle"), [(0.92, 40), (1.0, 40), (1.08, 40), (1.5, 3)])
def test_mute_ramp_starts_where_the_head_reaches_the_frame(
    rate: float, settle: int, compiled: bool | None
) -> None:
    """At the first output sample that reads the frame, with the compiled kernel
    and the numpy one, after the rate's glide and during it (1.5 after 3 blocks)."""
    m = mixer(probe_track(), rate=rate, compiled=compiled)
    blocks(m, settle)
    target = m.position + 12_345  # inside a block, not on its edge
    assert m.post(Quantized(target, mute(1)))
    out = blocks(m, 100)
    start = ramp_start(out)
    # The sample before read short of the frame, this one at or past it (to a
    # hundredth of a frame: the probe's float32 and the head's phase round).
    assert out[start - 1, 0] < target + 0.01 and out[start, 0] > target - 0.01
    assert abs(start - crossing(out, target)) <= 1
    if rate == 1.0:
        assert out[start, 0] == target  # the head reads exactly the frame there
    # The ramp is the plain mute ramp from there: 1/ramp_len down per sample.
    ramp_len = round(RAMP_MS * 1e-3 * SR)
    assert out[start, 2] == pytest.approx(0.5 * (1 - 1 / ramp_len), abs=1e-6)
    assert out[start - 1, 2] == pytest.approx(0.5, abs=1e-6)
    assert np.all(np.abs(out[start + ramp_len :, 2]) < 1e-9)  # silent (float rounding)
    assert m.strip_state(1).mute


def test_the_cut_changes_no_sample() -> None:
    """The same mute applied at a block's edge, unquantized, gives the same samples
    as quantized to that frame from a block before (the split is transparent)."""
    a = mixer(probe_track())
    b = mixer(probe_track())
    blocks(a, 10)
    blocks(b, 10)
    edge = a.position + 3 * BLOCK
    a.post(Quantized(edge, mute(1)))
    out_a = blocks(a, 8)
    out_b = np.concatenate([blocks(b, 3), (b.post(mute(1)), blocks(b, 5))[1]])
    assert np.array_equal(out_a, out_b)


def test_nothing_waiting_is_bit_identical_and_late_acts_at_once() -> None:
    a = mixer(probe_track())
    b = mixer(probe_track())
    blocks(a, 5)
    blocks(b, 5)
    a.post(Quantized(a.position - 10, mute(1)))  # passed already: at once
    b.post(mute(1))
    assert np.array_equal(blocks(a, 10), blocks(b, 10))


def test_a_fader_move_while_a_mute_waits_acts_now_and_the_mute_keeps_its_frame() -> None:
    m = mixer(probe_track())
    blocks(m, 4)
    target = m.position + 10 * BLOCK + 17
    m.post(Quantized(target, StripTarget(1, 1.0, True, False, 0.0)))
    blocks(m, 1)
    # The registry's next state carries the mute it committed, with a new gain.
    m.post(StripTarget(1, 0.5, True, False, 0.0))
    out = blocks(m, 3)
    assert m.strip_state(1) == (0.5, False, False, 0.0)  # the gain now, not the mute
    assert out[-1, 2] == pytest.approx(0.25)
    out = blocks(m, 10)
    assert m.strip_state(1) == (0.5, True, False, 0.0)
    first = target - (m.position - 10 * BLOCK)
    assert out[first - 1, 2] == pytest.approx(0.25)
    assert out[first, 2] < 0.25


def test_an_unmute_sent_while_the_mute_waits_wins_at_the_same_frame() -> None:
    m = mixer(probe_track())
    blocks(m, 2)
    m.post(Quantized(m.position + 5 * BLOCK, mute(1)))
    m.post(mute(1, False))  # quantize turned off, then unmuted: the last word wins
    out = blocks(m, 20)
    assert not m.strip_state(1).mute
    assert np.all(out[:, 2] == 0.5)


@pytest.mark.parametrize(
    "interrupt", [Seek(0.5), Pause(), SetTrack(probe_track(2.0)), Loop(0.2, 0.3)]
)
def test_a_jump_or_stop_before_the_frame_applies_what_waits_at_once(interrupt) -> None:
    m = mixer(probe_track())
    blocks(m, 2)
    m.post(Quantized(m.position + 100 * BLOCK, mute(1)))
    blocks(m, 1)
    assert not m.strip_state(1).mute
    m.post(interrupt)
    blocks(m, 1)
    assert m.strip_state(1).mute


def test_a_loop_end_before_the_frame_applies_at_the_wrap() -> None:
    m = mixer(probe_track())
    blocks(m, 1)
    m.post(Loop(0.0, 0.5))
    blocks(m, 1)
    m.post(Quantized(SR, mute(1)))  # past the loop's end: never reached
    out = blocks(m, 100)
    wrap = int(np.flatnonzero(np.diff(out[:, 0]) < 0)[0]) + 1  # first sample after the wrap
    assert ramp_start(out) == wrap
    assert m.strip_state(1).mute


def test_commands_act_in_the_order_sent_and_a_flood_is_bounded() -> None:
    m = mixer(probe_track())
    blocks(m, 2)
    far = m.position + 50 * BLOCK
    m.post(Quantized(far, mute(1)))
    m.post(Quantized(far - 20 * BLOCK, mute(1, False)))  # sent later: acts after, at far
    blocks(m, 30)
    assert not m.strip_state(1).mute
    blocks(m, 30)
    assert not m.strip_state(1).mute  # the unmute was last
    # A flood: the ring never holds more than PENDING_ACTIONS.
    queue_room = 1024
    for i in range(3 * queue_room):
        if not m.post(Quantized(m.position + 10**6, mute(1, i % 2 == 0))):
            blocks(m, 1)
            m.post(Quantized(m.position + 10**6, mute(1, i % 2 == 0)))
    blocks(m, 1)
    assert m._pq_count <= PENDING_ACTIONS
    assert len(m._pq_cmd) == PENDING_ACTIONS


def test_a_scene_batch_waits_whole() -> None:
    m = mixer(probe_track())
    blocks(m, 2)
    target = m.position + 4 * BLOCK + 3
    m.post(
        Quantized(
            target,
            Batch((mute(0), StripTarget(1, 0.25, False, False, 0.0), MasterTarget(0.5, False))),
        )
    )
    out = blocks(m, 8)
    at = target - (m.position - 8 * BLOCK)
    assert out[at - 1, 2] == pytest.approx(0.5)
    assert out[at, 2] < 0.5
    assert m.strip_state(1).gain == 0.25 and m.master_state().gain == 0.5


def test_a_seek_during_a_roll_ends_it_where_it_is() -> None:
    m = mixer(probe_track())
    blocks(m, 10)
    m.post(Roll(0.05, 0.1))
    blocks(m, 10)
    m.post(Seek(1.0))
    m.post(RollEnd())  # nothing rolls any more: nothing happens
    blocks(m, 1)
    assert m.loop == (2400, 4800) and m.position == SR + BLOCK


def test_a_jump_that_would_take_the_loop_off_the_track_changes_nothing() -> None:
    m = mixer(probe_track(1.0))
    blocks(m, 2)
    m.post(Loop(0.5, 0.9))
    blocks(m, 1)
    head = m.position
    m.post(JumpBy(SR // 2, with_loop=True))
    blocks(m, 1)
    assert m.loop == (SR // 2, round(0.9 * SR)) and m.position == head + BLOCK


@pytest.mark.parametrize("rate", [1.0, 1.08])
def test_a_block_with_commands_waiting_allocates_no_array_data(rate: float) -> None:
    """As ``test_block_allocates_no_array_data`` (test_engine.py): a block while
    quantized commands wait, and the block cut where one fires, stay under 4 KiB and
    8 KiB of transient allocation."""
    m = mixer(probe_track(), rate=rate)
    out = np.zeros((BLOCK, m.out_channels), np.float32)
    for _ in range(40):
        m.process(out)
    enter_audio_thread()
    tracemalloc.start()
    worst = waiting = 0
    try:
        for i in range(120):
            if i % 30 == 0:
                m.post(Quantized(m.position + 10 * BLOCK + 7, mute(1, i % 60 == 0)))
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            m.process(out)
            took = tracemalloc.get_traced_memory()[1] - base
            worst = max(worst, took)
            if i % 30 not in (0, 9, 10, 11):  # neither posted nor firing this block
                waiting = max(waiting, took)
    finally:
        tracemalloc.stop()
        np.setbufsize(8192)
    assert worst < 8192 and waiting < 4096, (worst, waiting)


@pytest.mark.parametrize("by_ms", [-10.0, 10.0])
def test_a_small_seek_short_of_the_frame_keeps_what_waits_on_its_frame(by_ms: float) -> None:
    """A JACK transport follower seeks a few milliseconds after a cycle the daemon
    missed: that acted every command waiting at once, a quantized mute off its bar
    line (CI: "the mute never came" in its window). A seek of at most 50 ms that
    the head will still play on from to the waiting frame keeps the command on it."""
    m = mixer(probe_track())
    blocks(m, 4)
    frame = m.position + 40 * BLOCK
    m.post(Quantized(frame, mute(1)))
    blocks(m, 1)
    m.post(Seek(m.position / SR + by_ms / 1000))
    out = blocks(m, 1)
    assert not m.strip_state(1).mute  # still waiting
    out = blocks(m, 44)
    assert m.strip_state(1).mute
    assert ramp_start(out) == crossing(out, frame)  # on its frame, where the head reads it
