"""Keylock: a strip's gain change is heard at once, not the shifter's latency later.

The shifter (``core/mixer/keylock.py``) delays what it shifts by a frame and half a
hop (24 ms at 48 kHz). A mute, a solo or a fader move posted unquantized is applied
to what the shifter holds and has not played yet (``Shifter.retro``, the strips'
last inputs in ``StripHistory``): heard after the mixer's ramp, as with keylock off.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from fx_helpers import SR, block_allocations, click_energy, hard_step_energy, mixer, run

from stemdeck.core.mixer.commands import (
    Batch,
    Command,
    Keylock,
    Quantized,
    Rate,
    Seek,
    StripTarget,
)
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.kernel import COMPILED
from stemdeck.core.mixer.keylock import LATENCY, Shifter

pytestmark = pytest.mark.skipif(COMPILED is None, reason="the shifter needs the compiled kernel")

LOW, HIGH = 300.0, 1000.0  # strip 0 and strip 1's tones
RATE = 1.08
WINDOW = 480  # 10 ms: a tone's level is measured over a Hann window this long


def _two_tones(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    ch = np.empty((2, 2, len(t)), np.float32)
    ch[0] = 0.3 * np.sin(2 * np.pi * LOW * t)
    ch[1] = 0.3 * np.sin(2 * np.pi * HIGH * t)
    return ch


def level(x: np.ndarray, hz: float, start: int) -> float:
    """The amplitude of ``hz`` in the left side of ``x`` over the window from ``start``."""
    w = np.hanning(WINDOW)
    seg = x[start : start + WINDOW, 0].astype(np.float64) * w
    return float(abs(seg @ np.exp(-2j * np.pi * hz * np.arange(WINDOW) / SR)) / (w.sum() / 2))


def _keylocked(block: int) -> Mixer:
    m = mixer(_two_tones(), block=block)
    m.post(Batch((Rate(RATE), Keylock(True))))
    return m


AT = 24000  # the change, 0.5 s in: the shifter is heard alone and its history is whole
AFTER = 4800


def _levels(out: np.ndarray, hz: float, count: int = 60) -> np.ndarray:
    """``hz``'s level in windows from every millisecond after AT (``count`` of them),
    over its level before."""
    before = level(out, hz, AT - 2 * WINDOW)
    return np.array([level(out, hz, AT + 48 * ms) for ms in range(count)]) / before


@pytest.mark.parametrize("block", [64, 256])
@pytest.mark.parametrize(
    "command",
    [StripTarget(1, 1.0, True, False, 0.0), StripTarget(0, 1.0, False, True, 0.0)],
    ids=["mute", "solo the other"],
)
def test_a_mute_with_keylock_is_gone_after_its_ramp(block: int, command: StripTarget) -> None:
    m = _keylocked(block)
    out = run(m, AT + AFTER, block, {AT: [command]})
    high, low = _levels(out, HIGH), _levels(out, LOW)
    ramp = round(10e-3 * SR)  # the mixer's 10 ms
    # At 64-frame blocks the change waits for a block where the shifter does none of
    # a frame's work: at most three blocks (StripHistory.due).
    wait = 3 * block if block < 128 else 0
    # Every window from then on: not 1 % of the tone (the shifter's latency would
    # keep it whole for 24 ms), 14 ms after at most; the other strip's tone never moves.
    assert (ramp + wait) // 48 <= 14
    assert high[(ramp + wait) // 48 :].max() < 0.01, high.round(3)
    assert np.abs(low - 1.0).max() < 0.01, low.round(3)
    assert click_energy(out[AT - 4096 :]) < 0.01 * hard_step_energy()


@pytest.mark.parametrize("block", [64, 256])
def test_an_unmute_with_keylock_is_heard_within_15_ms(block: int) -> None:
    m = _keylocked(block)
    events = {
        4800: [StripTarget(1, 1.0, True, False, 0.0)],
        AT: [StripTarget(1, 1.0, False, False, 0.0)],
    }
    out = run(m, AT + AFTER, block, events)
    full = level(out, HIGH, AT + AFTER - 2 * WINDOW)
    high = np.array([level(out, HIGH, AT + 48 * ms) for ms in range(30)]) / full
    # Whole from the window starting 15 ms after (through the shifter 24 ms later,
    # the tone was not there at all then), and never louder than whole on the way.
    assert high[15:].min() > 0.9 and high.max() < 1.05, high.round(2)
    assert np.abs(_levels(out, LOW) - 1.0).max() < 0.01
    assert click_energy(out[AT - 4096 :]) < 0.01 * hard_step_energy()


@pytest.mark.parametrize("block", [64, 256])
def test_changes_in_a_row_each_start_from_the_last(block: int) -> None:
    """A change made while the last one's samples are still in the history is made
    against the last: a mute and an unmute a block apart leave the tone whole, gain
    steps of 0.5 and 0.25 a block apart end at 0.25, and a fader pulled down over
    ten blocks falls and stays down, never louder than where it came from."""
    mute, unmute = StripTarget(1, 1.0, True, False, 0.0), StripTarget(1, 1.0, False, False, 0.0)
    m = _keylocked(block)
    out = run(m, AT + AFTER, block, {AT: [mute], AT + block: [unmute]})
    back = _levels(out, HIGH)
    assert np.abs(back[20:] - 1.0).max() < 0.01, back.round(3)
    assert click_energy(out[AT - 4096 :]) < 0.01 * hard_step_energy()
    m = _keylocked(block)
    steps = {
        AT: [StripTarget(1, 0.5, False, False, 0.0)],
        AT + block: [StripTarget(1, 0.25, False, False, 0.0)],
    }
    quarter = _levels(run(m, AT + AFTER, block, steps), HIGH)
    assert np.abs(quarter[15:] - 0.25).max() < 0.01, quarter.round(3)
    m = _keylocked(block)
    drag = {
        AT + k * block: [StripTarget(1, 1.0 - (k + 1) / 10, False, False, 0.0)] for k in range(10)
    }
    out = run(m, AT + AFTER, block, drag)
    pulled = _levels(out, HIGH, 90)
    end = 10 * block // 48 + 15  # ms: the last move and 15 ms
    assert pulled.max() < 1.01 and pulled[end:].max() < 0.01, pulled.round(3)
    assert click_energy(out[AT - 4096 :]) < 0.01 * hard_step_energy()


def _old_latency(out: np.ndarray) -> None:
    """The tone is still whole a ramp after the mute, and gone once the shifter's
    latency and the ramp have passed: the change went through the shifter."""
    high = _levels(out, HIGH)
    assert high[12] > 0.9, high.round(3)
    # Gone once every frame of an output window was read after the ramp's end.
    assert high[(LATENCY + 512 + 480) // 48 + 1 :].max() < 0.01, high.round(3)


@pytest.mark.parametrize("on", [4800, AT], ids=["before", "with the mute"])
def test_with_an_effect_on_a_mute_still_comes_through_the_shifter(on: int) -> None:
    """What the effects make of a strip is not in its history: a filter on strip 0
    runs the FX path, and the mute comes the shifter's latency later as before,
    also when the filter comes on in the mute's block (its path would take the
    gain's step)."""
    m = _keylocked(256)
    filt = StripTarget(0, 1.0, False, False, 0.0, filter=-0.2)
    mute = StripTarget(1, 1.0, True, False, 0.0)
    _old_latency(
        run(m, AT + AFTER, 256, {on: [filt], AT: [mute]} if on != AT else {AT: [filt, mute]})
    )


def test_right_after_a_seek_a_mute_comes_through_the_shifter() -> None:
    """A seek's crossfade is not a steady block: the history starts again, and a mute
    before it is whole (two frames and a hop later) comes the shifter's latency later."""
    m = _keylocked(256)
    events: dict[int, list[Command]] = {
        AT - 2304: [Seek(0.2)],
        AT: [StripTarget(1, 1.0, True, False, 0.0)],
    }
    _old_latency(run(m, AT + AFTER, 256, events))


def test_a_change_waiting_for_a_quiet_block_is_dropped_by_a_seek() -> None:
    """At 64-frame blocks a change waits up to three blocks for one where the shifter
    does no frame work; a seek meanwhile starts the history again, and the change
    (its gain already there) comes through the shifter instead of being applied to
    samples the history no longer describes."""
    m = _keylocked(64)
    first = run(m, AT, 64)
    count, hop = int(m.shifter._state[5]), m.shifter.hop
    assert not m.shifter.quiet(64), (count, hop)  # the mute below has to wait
    mute, seek = StripTarget(1, 1.0, True, False, 0.0), Seek(0.2)
    out = np.concatenate([first, run(m, AFTER, 64, {0: [mute], 64: [seek]})])
    assert not m._history.pending
    high = _levels(out, HIGH, 90)
    assert high[10] > 0.5, high.round(3)  # not heard at once
    assert high[(LATENCY + 512 + 480 + 960) // 48 + 1 :].max() < 0.01, high.round(3)
    assert click_energy(out[AT - 4096 :]) < 0.01 * hard_step_energy()


def test_a_quantized_mute_keeps_its_place_in_the_music() -> None:
    """A quantized mute goes through the shifter with the music it falls on: the tone
    leaves the shifter's latency after its frame, as before."""
    m = _keylocked(256)
    first = run(m, AT - 2560, 256)
    due = m.position + round(2560 * RATE)  # the track's frame the head reads at AT
    mute = Quantized(due, StripTarget(1, 1.0, True, False, 0.0))
    _old_latency(np.concatenate([first, run(m, 2560 + AFTER, 256, {0: [mute]})]))


def test_a_late_quantized_mute_goes_through_the_shifter_with_the_music() -> None:
    """A quantized mute whose frame the head has passed acts at once, in the mix
    before the shifter, as it would have on time: not on the music the shifter still
    holds from before its frame (heard up to 24 ms before its bar line)."""
    m = _keylocked(256)
    first = run(m, AT, 256)
    late = Quantized(m.position - 50, StripTarget(1, 1.0, True, False, 0.0))
    _old_latency(np.concatenate([first, run(m, AFTER, 256, {0: [late]})]))


@pytest.mark.parametrize(
    ("sr", "block", "ramp_ms", "at_once"),
    [
        (96000, 64, 10.0, False),  # five 2048-sample frames' FFTs: 0.5 ms of a 0.67 ms block
        (96000, 256, 10.0, True),
        (48000, 64, 100.0, False),  # a ramp longer than half a frame would be cut short
    ],
)
def test_where_it_would_not_fit_a_mute_comes_through_the_shifter(
    sr: int, block: int, ramp_ms: float, at_once: bool
) -> None:
    t = np.arange(2 * sr) / sr
    ch = np.empty((2, 2, len(t)), np.float32)
    ch[0] = 0.3 * np.sin(2 * np.pi * LOW * t)
    ch[1] = 0.3 * np.sin(2 * np.pi * HIGH * t)
    m = mixer(ch, block=block, sr=sr, ramp_ms=ramp_ms)
    m.post(Batch((Rate(RATE), Keylock(True))))
    at = sr // 2
    out = run(m, at + sr // 10, block, {at: [StripTarget(1, 1.0, True, False, 0.0)]})
    w = np.hanning(2 * WINDOW)
    tone = np.exp(-2j * np.pi * HIGH * np.arange(2 * WINDOW) / sr)

    def lv(start: int) -> float:
        return float(abs((out[start : start + 2 * WINDOW, 0] * w) @ tone))

    # From the ramp's end (10 ms) on: gone if heard at once, whole through the shifter.
    after = lv(at + sr // 100) / lv(at - 4 * WINDOW)
    assert (after < 0.01) if at_once else (after > 0.9), after


def test_a_mono_track_plays_and_its_mute_is_heard_at_once() -> None:
    """Mono channels go to both sides of the mix, and of the history."""
    m = mixer(_two_tones()[:, :1].copy(), block=256)
    m.post(Batch((Rate(RATE), Keylock(True))))
    out = run(m, AT + AFTER, 256, {AT: [StripTarget(1, 1.0, True, False, 0.0)]})
    assert m.position > (AT + AFTER) * RATE - 256
    assert _levels(out, HIGH)[10:].max() < 0.01


def test_a_change_after_a_quantized_one_leaves_it_on_its_bar_line() -> None:
    """A quantized unmute fired in the mix is not heard yet (the shifter holds the
    music it falls on); a fader move on the same strip a block later goes the
    ordinary way too, rather than rewrite the samples before the unmute."""
    mute = StripTarget(1, 1.0, True, False, 0.0)
    m = _keylocked(256)
    first = run(m, AT - 256, 256, {4800: [mute]})
    due = m.position + round(256 * RATE)  # read at AT
    unmute = Quantized(due, StripTarget(1, 1.0, False, False, 0.0))
    rest = run(m, AFTER + 256, 256, {0: [unmute], 512: [StripTarget(1, 0.8, False, False, 0.0)]})
    out = np.concatenate([first, rest])
    full = level(out, HIGH, len(out) - 2 * WINDOW)  # at 0.8
    heard = np.array([level(out, HIGH, AT + 48 * ms) for ms in range(60)]) / full
    # Nothing of the tone in a window before the unmute can come out of the shifter
    # (its latency after AT, less half a frame and the window: 3 ms), whole after it.
    assert heard[:3].max() < 0.01, heard.round(3)
    assert np.abs(heard[40:] - 1.0).max() < 0.01, heard.round(3)


def test_host_blocks_larger_than_the_mixers_still_wait_at_most_a_hop() -> None:
    """A host handing 256-frame blocks to a mixer prepared for 64 (made in pieces):
    the change is applied at the top of the next host block at the latest."""
    m = mixer(_two_tones(), block=64)
    m.post(Batch((Rate(RATE), Keylock(True))))
    out = np.zeros((AT + AFTER, 2), np.float32)
    starts = [0, *range(AT % 256, AT + AFTER, 256)]  # a host block starts at AT
    for a in starts:
        if a == AT:
            m.post(StripTarget(1, 1.0, True, False, 0.0))
        m.process(out[a : a + 256 if a else AT % 256])
    high = _levels(out, HIGH)
    assert high[(480 + 256) // 48 + 1 :].max() < 0.01, high.round(3)


def test_a_gain_that_is_not_a_number_does_not_stop_the_mixer() -> None:
    m = _keylocked(256)
    out = run(m, AT + AFTER, 256, {AT: [StripTarget(1, float("nan"), False, False, 0.0)]})
    assert m.position > (AT + AFTER) * RATE - 256 and not m._history.pending
    assert np.isfinite(out).all()


def test_a_retroactive_mute_allocates_nothing_in_the_block() -> None:
    m = _keylocked(256)
    out = np.zeros((256, 2), np.float32)
    for _ in range(AT // 256):
        m.process(out)

    def post(i: int) -> bool:
        if i % 10 == 0:
            m.post(StripTarget(1, 1.0, i % 20 == 0, False, 0.0))
        return i % 10 == 0

    worst, steady = block_allocations(m, out, post)
    assert worst < 8192 and steady < 4096, (worst, steady)


# -- the shifter alone -------------------------------------------------------------


def _shifted(retro_at: int, delta_of: str, ramp: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A 300 Hz and a 3 kHz tone through a shifter at 1 / 1.08, in blocks that end
    exactly at ``retro_at``; there (unless ``delta_of`` is "none") its last inputs
    lose the 3 kHz tone (or gain nothing: "zero"), and only 300 Hz follows."""
    sh = Shifter()
    sh.prepare(SR)
    sh.set(keylock=True)
    n = retro_at + 9600
    t = np.arange(n) / SR
    low = np.repeat((0.3 * np.sin(2 * np.pi * 300 * t))[:, None], 2, 1).astype(np.float32)
    high = np.repeat((0.3 * np.sin(2 * np.pi * 3000 * t))[:, None], 2, 1).astype(np.float32)
    x = low + high
    if delta_of == "minus":
        x[retro_at:] = low[retro_at:]
    out = np.zeros((n, 2), np.float32)
    cuts = sorted({*range(0, n, 256), retro_at, n})
    for a, b in itertools.pairwise(cuts):
        if a == retro_at and delta_of != "none":
            span = high[a - sh.history : a].T
            delta = np.zeros_like(span) if delta_of == "zero" else -span
            sh.retro(np.ascontiguousarray(delta), ramp)
        io = x[a:b].copy()
        sh.run(io, b - a, 1 / 1.08, None)
        out[a:b] = io
    return out, x


# The three stages a frame can be in when the change comes (the hop is 256): analysed
# and not yet moved, moved and not yet synthesised, synthesised.
STAGES = [256 * 60 + 10, 256 * 60 + 100, 256 * 60 + 200]


@pytest.mark.parametrize("at", STAGES, ids=["analysed", "moved", "synthesised"])
def test_retro_takes_a_sound_out_of_every_frame_not_heard_yet(at: int) -> None:
    out, _ = _shifted(at, "minus")
    before = level(out, 3000 / 1.08, at - 2 * WINDOW)
    after = [level(out, 3000 / 1.08, s) for s in range(at, at + 2 * LATENCY, 48)]
    # Gone from the next sample (a ramp of 1), where through the shifter it stayed
    # whole 22-24 ms; the low tone's frames keep theirs.
    assert max(after) < 1e-3 * before, np.round(np.array(after) / before, 4)
    # The low tone's level (the shifter's own ripple of 0.3 %) as without the change.
    plain, _ = _shifted(at, "none")
    spans = range(at, at + 2 * LATENCY, 48)
    low = np.array([level(out, 300 / 1.08, s) for s in spans])
    assert np.abs(low / np.array([level(plain, 300 / 1.08, s) for s in spans]) - 1).max() < 1e-3


@pytest.mark.parametrize("at", STAGES, ids=["analysed", "moved", "synthesised"])
def test_a_retro_of_nothing_changes_no_sample(at: int) -> None:
    plain, _ = _shifted(at, "none")
    zero, _ = _shifted(at, "zero")
    assert np.array_equal(plain, zero)


def test_retro_checks_what_it_is_given() -> None:
    sh = Shifter()
    sh.prepare(SR)
    sh.set(keylock=True)
    io = np.zeros((256, 2), np.float32)
    sh.run(io, 256, 1.0, None)
    good = np.zeros((2, sh.history), np.float32)
    assert COMPILED is not None
    args = (sh._tables, sh._state, sh._ring_in, sh._ring_out, sh._work)
    assert COMPILED.retro(good, 480, *args) is True
    for delta, ramp in (
        (np.zeros((2, sh.history - 1), np.float32), 480),  # shorter than the frames it changes
        (np.zeros((3, sh.history), np.float32), 480),
        (np.zeros((2, sh.history)), 480),  # float64
        (good, 0),
        (good, 10**10),
    ):
        with pytest.raises(ValueError):
            COMPILED.retro(delta, ramp, *args)
    state = sh._state.copy()
    state[11] = 6.0  # the slot past the last
    with pytest.raises(ValueError):
        COMPILED.retro(good, 480, sh._tables, state, sh._ring_in, sh._ring_out, sh._work)
    pre = np.zeros((100, 4, 2), np.float32)
    want = np.zeros((4, 2))
    delta = np.zeros((2, 100), np.float32)
    assert COMPILED.retro_delta(pre, pre.copy(), 99, want, want, 1.0, delta) is True
    with pytest.raises(ValueError):  # a changed strip's gain not finite
        COMPILED.retro_delta(pre, pre.copy(), 0, want + np.inf, want + 1, 1.0, delta)
    for at, gain, d in (
        (100, 1.0, delta),
        (-1, 1.0, delta),
        (0, float("nan"), delta),
        (0, 1.0, delta[:, :99]),
    ):
        with pytest.raises(ValueError):
            COMPILED.retro_delta(pre, pre.copy(), at, want, want, gain, d)
