"""A track separated as it plays: channels where their chunk is ready, the original elsewhere."""

import tracemalloc

import numpy as np
import pytest

from stemdeck.core.mixer.commands import Loop, Play, Rate, Seek, SetTrack, StripTarget, Track
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread

SR = 48000
CHUNK = 4800  # samples per ready flag
BLOCK = 256


def exact_stems(n: int = 3, seconds: float = 1.0, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Channels on a grid of 2**-12, small: their float32 sums are exact in any order,
    so the channels at unity equal the original sample for sample."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    out = np.empty((n, 2, len(t)), np.float32)
    for i in range(n):
        for side in (0, 1):
            wave = 0.2 * np.sin(2 * np.pi * (50 + 40 * i) * t + rng.uniform(0, 6))
            out[i, side] = np.round(wave * 4096) / 4096
    return out


def _track(channels: np.ndarray, ready: np.ndarray, sr: int = SR) -> Track:
    partial = channels.copy()
    for i, flag in enumerate(ready):  # unready chunks of a partial entry hold zeros
        if not flag:
            partial[:, :, i * CHUNK : (i + 1) * CHUNK] = 0.0
    names = tuple(f"ch{i}" for i in range(len(channels)))
    mix = channels.sum(axis=0, keepdims=True)
    return Track(partial, sr, names, mix=mix, ready=ready, chunk=CHUNK)


def land(track: Track, channels: np.ndarray, *chunks: int) -> None:
    """Chunks come in as the loader lands them: their samples first, then their flags."""
    assert track.ready is not None
    for i in chunks:
        track.channels[:, :, i * CHUNK : (i + 1) * CHUNK] = channels[
            :, :, i * CHUNK : (i + 1) * CHUNK
        ]
    for i in chunks:
        track.ready[i] = 1


def test_progressive_track_needs_fitting_flags_and_original() -> None:
    channels = exact_stems()
    m = Mixer(max_channels=4)
    m.prepare(SR, BLOCK)
    mix = channels.sum(axis=0, keepdims=True)
    n = -(-channels.shape[2] // CHUNK)
    bad = [
        Track(channels, SR, ("a", "b", "c"), mix=mix, ready=np.zeros(n - 1, np.uint8), chunk=CHUNK),
        Track(channels, SR, ("a", "b", "c"), mix=mix, ready=np.zeros(n, np.int64), chunk=CHUNK),
        Track(
            channels, SR, ("a", "b", "c"), mix=mix[:, :1], ready=np.zeros(n, np.uint8), chunk=CHUNK
        ),
        Track(channels, SR, ("a", "b", "c"), mix=mix, ready=np.zeros(n, np.uint8), chunk=0),
        Track(channels, SR, ("a", "b", "c"), ready=np.zeros(n, np.uint8), chunk=CHUNK),
    ]
    for track in bad:
        m.post(SetTrack(track))
        m.process(np.zeros((BLOCK, 2), np.float32))
    assert m.dropped == len(bad) and m.track is None


def test_chunk_ready_mid_play_switches_at_the_block_boundary_seamlessly() -> None:
    channels = exact_stems()
    original = channels.sum(axis=0)
    ready = np.zeros(-(-channels.shape[2] // CHUNK), np.uint8)
    m = Mixer(max_channels=4)
    m.prepare(SR, BLOCK)
    track = _track(channels, ready)
    m.post(SetTrack(track))
    m.post(Play())
    out = np.zeros((20 * BLOCK, 2), np.float32)
    for b in range(20):
        if b == 7:  # the chunk under the head (and the next) land between two blocks
            land(track, channels, 0, 1)
        m.process(out[b * BLOCK : (b + 1) * BLOCK])
        assert m.track is not None and m.track.is_mix == (b < 7)
    # Before and after the switch, the output is the original, sample for sample.
    np.testing.assert_array_equal(out[m._xfade_len :].T, original[:, m._xfade_len : 20 * BLOCK])
    assert m.read_meters().names == ("ch0", "ch1", "ch2")


def test_muted_stem_goes_away_with_the_glide_once_its_chunk_is_ready() -> None:
    channels = exact_stems()
    original = channels.sum(axis=0)
    ready = np.zeros(-(-channels.shape[2] // CHUNK), np.uint8)
    m = Mixer(max_channels=4)
    m.prepare(SR, BLOCK)
    track = _track(channels, ready)
    m.post(SetTrack(track))
    m.post(StripTarget(1, 1.0, True, False, 0.0))  # muted while the original stands in
    m.post(Play())
    edge = 8 * BLOCK
    out = np.zeros((edge + 4 * m._ramp_len, 2), np.float32)
    for a in range(0, len(out), BLOCK):
        if a == edge:
            land(track, channels, 0)
        m.process(out[a : a + BLOCK])
    np.testing.assert_array_equal(out[BLOCK:edge].T, original[:, BLOCK:edge])
    r = m._ramp_len
    gain = 1.0 - np.arange(1, r + 1) / r  # the muted strip glides from unity to 0
    want = channels[[0, 2], :, edge : edge + r].sum(axis=0) + channels[1, :, edge : edge + r] * gain
    np.testing.assert_allclose(out[edge : edge + r].T, want, atol=1e-6)
    rest = channels[[0, 2], :, edge + r : len(out)].sum(axis=0)
    np.testing.assert_allclose(out[edge + r :].T, rest, atol=1e-6)


def test_block_across_a_chunk_edge_plays_the_original_until_both_are_ready() -> None:
    channels = exact_stems()
    ready = np.zeros(-(-channels.shape[2] // CHUNK), np.uint8)
    ready[0] = 1
    m = Mixer(max_channels=4)
    m.prepare(SR, BLOCK)
    m.post(SetTrack(_track(channels, ready)))
    m.post(StripTarget(2, 1.0, True, False, 0.0))
    m.post(Play())
    block = np.zeros((BLOCK, 2), np.float32)
    while m.position + BLOCK + m._xfade_len <= CHUNK:
        m.process(block)
        assert m.track is not None and not m.track.is_mix
    m.process(block)  # this block's crossfade would reach chunk 1, not ready: the original
    assert m.track is not None and m.track.is_mix
    x = m._xfade_len
    pos = m.position - BLOCK
    fade = np.arange(1, x + 1) / x
    sent = channels[[0, 1], :, pos : pos + x].sum(axis=0)
    want = sent * (1 - fade) + channels[:, :, pos : pos + x].sum(axis=0) * fade
    np.testing.assert_allclose(block[:x].T, want, atol=1e-6)
    np.testing.assert_array_equal(block[x:].T, channels.sum(axis=0)[:, pos + x : pos + BLOCK])


def test_seek_into_an_unready_chunk_crossfades_to_the_original() -> None:
    channels = exact_stems()
    original = channels.sum(axis=0)
    ready = np.zeros(-(-channels.shape[2] // CHUNK), np.uint8)
    ready[0] = 1
    m = Mixer(max_channels=4)
    m.prepare(SR, BLOCK)
    m.post(SetTrack(_track(channels, ready)))
    m.post(StripTarget(0, 1.0, True, False, 0.0))
    m.post(Play())
    block = np.zeros((BLOCK, 2), np.float32)
    for _ in range(8):
        m.process(block)
    pos = m.position
    target = 5 * CHUNK
    m.post(Seek(target / SR))
    m.process(block)
    x = m._xfade_len
    fade = np.arange(1, x + 1) / x
    stems_out = channels[[1, 2], :, pos : pos + x].sum(axis=0)
    want = stems_out * (1 - fade) + original[:, target : target + x] * fade
    np.testing.assert_allclose(block[:x].T, want, atol=1e-6)
    np.testing.assert_array_equal(block[x:].T, original[:, target + x : target + BLOCK])


@pytest.mark.parametrize("loop_ready", [False, True])
def test_loop_wrapping_in_a_block_counts_its_start(loop_ready: bool) -> None:
    channels = exact_stems()
    ready = np.zeros(-(-channels.shape[2] // CHUNK), np.uint8)
    ready[2] = 1
    if loop_ready:
        ready[0] = 1
    m = Mixer(max_channels=4)
    m.prepare(SR, BLOCK)
    m.post(SetTrack(_track(channels, ready)))
    start, end = 100, 2 * CHUNK + 3 * BLOCK + 10  # the wrap falls inside a block
    m.post(Loop(start / SR, end / SR))
    m.post(Seek((2 * CHUNK) / SR))
    m.post(Play())
    block = np.zeros((BLOCK, 2), np.float32)
    for _ in range(3):
        m.process(block)
    assert m.track is not None and not m.track.is_mix
    m.process(block)  # wraps to the loop's start: stems only if it is ready
    assert m.track.is_mix != loop_ready


@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_at_another_rate_the_stems_play_only_where_every_tap_is_ready(rate: float) -> None:
    """A 44.1 kHz track on a 48 kHz mixer, at the vinyl rate ``rate``: the read head
    reads up to twice as many track frames as output frames, and its interpolator's
    taps on either side. The stems (their unready chunks zeros) play only where all
    of that is ready, so the output is the original's, read the same way, throughout;
    the original takes over before the head's reach meets the first unready chunk."""
    sr = 44100
    channels = exact_stems(seconds=1.0, sr=sr)
    ready = np.zeros(-(-channels.shape[2] // CHUNK), np.uint8)
    ready[:4] = 1
    original = Track(channels.sum(axis=0, keepdims=True), sr, ("mix",), is_mix=True)
    outs = []
    views = []
    for track in (original, _track(channels, ready, sr)):
        m = Mixer(max_channels=4)
        m.prepare(SR, BLOCK)
        m.post(SetTrack(track))
        m.post(Rate(rate))
        m.post(Play())
        out = np.zeros((BLOCK * int(5 * CHUNK * SR / sr / (BLOCK * rate)), 2), np.float32)
        for a in range(0, len(out), BLOCK):
            m.process(out[a : a + BLOCK])
            assert m.track is not None
            views.append((m.position, m.track.is_mix))
        outs.append(out)
    np.testing.assert_allclose(outs[1], outs[0], atol=2e-6)
    stems = [pos for pos, is_mix in views[len(views) // 2 :] if not is_mix]
    assert stems and max(stems) < 4 * CHUNK  # the stems played, and only in ready chunks
    assert views[-1][1]  # the original past them


def test_progressive_blocks_allocate_no_array_data() -> None:
    channels = exact_stems(seconds=3.0)
    ready = np.zeros(-(-channels.shape[2] // CHUNK), np.uint8)
    m = Mixer(max_channels=4)
    m.prepare(SR, 1024)
    track = _track(channels, ready)
    m.post(SetTrack(track))
    m.post(Play())
    out = np.zeros((1024, 2), np.float32)
    m.process(out)
    enter_audio_thread()
    tracemalloc.start()
    worst = 0
    try:
        for i in range(60):
            land(track, channels, i // 2)  # to the channels and back, block after block
            if i % 7 == 3:
                m.post(Seek(i * 0.03 + 1.0))
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            m.process(out)
            worst = max(worst, tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
        np.setbufsize(8192)
    assert worst < 8192, worst


@pytest.mark.parametrize("compiled", [True, False])
def test_stems_coming_in_after_silence_fade_in_at_their_levels(compiled: bool) -> None:
    """A stem file's span lands while the head plays its silent stand-in: the stems
    glided from unity (right where they replace an original they sum to), so a muted
    stem sounded at full level for 10 ms and came in with a click. From silence they
    now fade in over the crossfade with every strip at its level: a muted stem
    stays silent, the others come in from zero, and the final whole takes over
    without a step."""
    if compiled and not Mixer(compiled=None).kernel == "compiled":
        pytest.skip("the compiled kernel is not built")
    n = 2 * SR
    stems = np.zeros((3, 2, n), np.float32)
    stems[1] = 0.25  # a steady level: any step or glide shows
    stems[2] = 0.5  # muted
    silence = np.broadcast_to(np.zeros((1, 2, 1), np.float32), (1, 2, n))
    ready = np.zeros(-(-n // CHUNK), np.uint8)
    track = Track(
        stems, SR, ("a", "b", "v"), mix=silence, ready=ready, chunk=CHUNK, silent_mix=True
    )
    m = Mixer(max_channels=3, compiled=compiled)
    m.prepare(SR, BLOCK)
    m.post(StripTarget(2, 1.0, True, False, 0.0))
    m.post(SetTrack(track))
    m.post(Play())
    out = np.zeros((BLOCK, 2), np.float32)
    for _ in range(4):
        m.process(out)
        assert not out.any()  # silence: nothing decoded yet
    ready[:] = 1
    played = []
    for _ in range(8):
        m.process(out)
        played.append(out[:, 0].copy())
    level = np.concatenate(played)
    xfade = round(m.xfade_ms * SR / 1000)
    assert level.max() <= 0.25 + 1e-6  # never the muted stem
    assert np.all(np.diff(level[: xfade + 1]) >= -1e-7)  # a fade in from 0
    assert level[0] < 0.25 * 2 / xfade + 1e-6
    np.testing.assert_allclose(level[xfade + 1 :], 0.25, atol=1e-6)
    m.post(SetTrack(Track(stems, SR, ("a", "b", "v")), same_audio=True))  # the whole
    m.process(out)
    np.testing.assert_allclose(out[:, 0], 0.25, atol=1e-6)
