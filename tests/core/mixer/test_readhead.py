"""The read head between rates (core/mixer/_kernel.c ``read``): its quality, the
compiled kernel against the numpy reference, blocks of any size, and a track at
its own rate in the mixer (positions in the track's time)."""

from typing import Any

import numpy as np
import pytest
from scipy.signal import firwin, resample_poly

from stemdeck.core.mixer.commands import (
    Command,
    Loop,
    MasterTarget,
    Pause,
    Play,
    Rate,
    Seek,
    SetTrack,
    Stop,
    StripTarget,
    Track,
)
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread
from stemdeck.core.mixer.kernel import COMPILED, READ_TABLE
from stemdeck.core.mixer.numpy_kernel import NumpyKernel

SR = 48000


def _read(x: np.ndarray, step: float) -> np.ndarray:
    """All of mono ``x`` read at ``step`` from 0 (the compiled kernel), float64."""
    assert COMPILED is not None
    src = x[np.newaxis, np.newaxis, :].astype(np.float32)
    state = np.array([0.0, 0.0, step, step, 0.0, 0.0])
    dst = np.zeros((1, 1, int(len(x) / step) + 8), np.float32)
    count = COMPILED.read(src, state, dst.shape[2], len(x), dst, READ_TABLE)
    return dst[0, 0, :count].astype(np.float64)


# (source rate, output rate): up and down, small and large ratios, and the
# 44.1 kHz track on the 48 kHz device at the vinyl rate 1.08.
RATIOS = [(44100, 48000), (48000, 44100), (32000, 48000), (96000, 48000), (44100, 48000 / 1.08)]


@pytest.mark.parametrize(("sr_in", "sr_out"), RATIOS)
def test_the_interpolator_is_flat_and_clean_in_its_passband(sr_in: int, sr_out: float) -> None:
    """Up to 0.4 of the lower rate: every sine comes out at its level within
    0.005 dB (the measured ripple is 0.0012 dB), and a sum of 40 sines at random
    phases equals the ideal band-limited signal at the output's times to better
    than 85 dB SNR (measured 86.5-87.5 dB). The offline reference, scipy's
    resample_poly with a long filter (64 zero crossings each side, Kaiser beta 12,
    the same cutoff: itself within 130 dB of the ideal), agrees to better than 85 dB."""
    step = sr_in / sr_out
    low = min(sr_in, sr_out)
    rng = np.random.default_rng(7)
    t = np.arange(sr_in // 2) / sr_in
    freqs = rng.uniform(20.0, 0.4 * low, 40)
    phases = rng.uniform(0.0, 2 * np.pi, 40)
    x = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(freqs, phases, strict=True)) / 40
    y = _read(np.asarray(x), step)
    to = np.arange(len(y)) * step / sr_in
    ideal = sum(np.sin(2 * np.pi * f * to + p) for f, p in zip(freqs, phases, strict=True)) / 40
    inner = slice(200, len(y) - 200)  # away from the ends (the track is 0 outside)
    err = y[inner] - np.asarray(ideal)[inner]
    snr = 10 * np.log10(np.sum(np.asarray(ideal)[inner] ** 2) / np.sum(err**2))
    assert snr > 85.0
    gains = []
    for f in np.linspace(20.0, 0.4 * low, 21):
        out = _read(np.sin(2 * np.pi * f * t), step)[inner]
        want = np.sin(2 * np.pi * f * to)[inner]
        gains.append(20 * np.log10(np.dot(out, want) / np.dot(want, want)))
    assert max(gains) - min(gains) < 0.005
    assert max(abs(g) for g in gains) < 0.005
    if float(sr_out).is_integer():  # the offline reference needs a rational ratio
        g = int(np.gcd(sr_in, int(sr_out)))
        up, down = int(sr_out) // g, sr_in // g
        h = firwin(128 * max(up, down) + 1, 0.96 / max(up, down), window=("kaiser", 12.0))
        ref = resample_poly(np.asarray(x), up, down, window=h)
        n = min(len(ref), len(y)) - 4000  # away from the ends, where the two pad differently
        diff = y[2000 : 2000 + n] - ref[2000 : 2000 + n]
        assert 10 * np.log10(np.sum(ref[2000 : 2000 + n] ** 2) / np.sum(diff**2)) > 85.0


@pytest.mark.parametrize(("sr_in", "sr_out"), [(96000, 48000), (48000, 36000), (48000, 30000)])
def test_nothing_aliases_when_the_head_reads_faster(sr_in: int, sr_out: int) -> None:
    """Reading faster than the output (downsampling), the cutoff narrows: a sine
    at 0.6 of the output's rate or above (up to the source's Nyquist) comes out
    at least 80 dB down (measured 83.2 dB at worst); what folds back from
    between 0.5 and 0.6 lands above 0.4, outside the passband."""
    t = np.arange(sr_in // 4) / sr_in
    worst = -np.inf
    for f in np.linspace(0.6 * sr_out, 0.499 * sr_in, 15):
        y = _read(np.sin(2 * np.pi * f * t), sr_in / sr_out)[200:-200]
        worst = max(worst, 20 * np.log10(np.sqrt(2 * np.mean(y**2)) + 1e-30))
    assert worst < -80.0


def _read_chunks(
    kern: Any, src: np.ndarray, state: np.ndarray, sizes: list[int], end: int
) -> np.ndarray:
    parts = []
    for size in sizes:
        dst = np.zeros((src.shape[0], 2, size), np.float32)
        count = kern.read(src, state, size, end, dst, READ_TABLE)
        parts.append(dst[: src.shape[0], : src.shape[1], :count].copy())
        if count < size:
            break
    return np.concatenate(parts, axis=2)


@pytest.mark.parametrize("sides", [1, 2])
@pytest.mark.parametrize(
    "glide", [(0.91875, 0.91875, 0), (1.7, 1.7, 0), (0.9, 1.2, 700), (1.0, 1.0, 0), (3.0, 0.5, 99)]
)
def test_the_compiled_read_is_the_reference_in_any_chunks(
    sides: int, glide: tuple[float, float, int]
) -> None:
    """The compiled read and the numpy reference give the same samples and end in
    the same state; cut in chunks of any size, the same as in one call."""
    assert COMPILED is not None
    rng = np.random.default_rng(sides)
    src = (rng.standard_normal((3, sides, 6000)) * 0.3).astype(np.float32)
    step, target, left = glide
    inc = (target - step) / left if left else 0.0

    def fresh() -> np.ndarray:
        return np.array([17.0, 0.375, step, target, inc, float(left)])

    whole_state = fresh()
    whole = _read_chunks(COMPILED, src, whole_state, [20000], 5000)
    for kern, sizes in (
        (COMPILED, [int(s) for s in rng.integers(1, 600, 200)]),
        (NumpyKernel(4, 600), [600] * 200),
        (NumpyKernel(4, 600), [int(s) for s in rng.integers(1, 300, 400)]),
    ):
        state = fresh()
        got = _read_chunks(kern, src, state, sizes, 5000)
        np.testing.assert_array_equal(got, whole)
        np.testing.assert_array_equal(state, whole_state)
    assert whole_state[0] >= 5000  # it read up to the end, and no further
    assert whole_state[0] < 5000 + max(step, target)


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.int32)


@pytest.mark.parametrize("sides", [1, 2])
@pytest.mark.parametrize("n", [3, 8, 9, 33])
def test_many_rows_read_the_same_bits_as_the_reference(n: int, sides: int) -> None:
    """The compiled read takes 4 rows and more a piece of frames at a time, in
    groups of 16, 8 and 4 rows side by side: every row, in every group and in the
    rows left over, is the numpy reference bit for bit (the sign of a zero too),
    and so is the state. Steps slow and fast, a glide through them, taps wider than
    a piece's span (step 20: a frame at a time), from the track's first frame and
    up to its last, on strided buffers."""
    assert COMPILED is not None
    rng = np.random.default_rng(n * 10 + sides)
    length = 4000
    whole = (rng.standard_normal((2 * n, sides, 2 * length)) * 0.3).astype(np.float32)
    src = whole[::2, :, ::-2]  # every other channel, backwards: strided both ways
    src[:, :, 300:310] = 0.0  # zeros: a sum of +-0 keeps its sign as the reference's
    for step, target, left in (
        (1.08, 1.08, 0),
        (0.5, 0.5, 0),
        (7.9, 7.9, 0),
        (20.0, 20.0, 0),
        (0.9, 24.0, 300),
        (32.0, 0.7, 60),
        (1.0, 32.0, 10),  # the taps widen faster than the head moves: a first tap earlier
    ):
        inc = (target - step) / left if left else 0.0
        for start, end in ((0, length), (length - 900, length), (150, 2500)):
            got = []
            for kern in (COMPILED, NumpyKernel(max(n, 4), 700)):
                state = np.array([float(start), 0.625, step, target, inc, float(left)])
                big = np.full((n, 2, 1400), np.nan, np.float32)
                dst = big[:, :, ::2]  # a strided destination
                count = kern.read(src, state, 700, end, dst, READ_TABLE)
                got.append((count, _bits(dst[:, :sides, :count]), state))
            (count, a, sa), (count_ref, b, sb) = got
            assert count == count_ref > 0
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(sa, sb)


@pytest.mark.parametrize("compiled", [True, False])
def test_the_fastest_read_and_the_longest_glide_still_play(compiled: bool) -> None:
    """A 192 kHz track at rate 2 on an 8 kHz device would step 48 frames a frame,
    past the taps' reach (32): it plays at 32 (every block was refused, silence);
    a glide longer than the kernel takes (10**9 frames) is that long, not refused."""
    rng = np.random.default_rng(3)
    track = Track(
        (rng.standard_normal((2, 2, 192000)) * 0.2).astype(np.float32), 192000, ("a", "b")
    )
    m = Mixer(compiled=compiled)
    m.prepare(8000, 256)
    m.post(SetTrack(track))
    m.post(Rate(2.0, at_once=True))
    m.post(Play())
    out = np.zeros((256, 2), np.float32)
    for _ in range(10):
        m.process(out)
        assert np.abs(out).max() > 0.01
    assert m._rd[2] == 32.0
    assert m.nonfinite_blocks == 0
    m.post(Rate(1.2, glide=2_000_000_000))  # 24 * 1.2 = 28.8, from 32
    for _ in range(10):
        m.process(out)
        assert np.abs(out).max() > 0.01
    assert m._rd[3] == 24.0 * 1.2 and m._rd[5] == 10**9 - 10 * 256
    for glide in (float("inf"), float("nan")):  # not an int: bounded, or the usual glide
        m.post(Rate(1.1, glide=glide))  # type: ignore[arg-type]
        m.process(out)
        assert np.abs(out).max() > 0.01


def test_the_read_refuses_what_could_leave_a_buffer() -> None:
    assert COMPILED is not None
    src = np.zeros((2, 2, 100), np.float32)
    dst = np.zeros((2, 2, 64), np.float32)
    good = [10.0, 0.5, 1.1, 1.1, 0.0, 0.0]
    bad_states = [
        [-1.0, 0.5, 1.1, 1.1, 0.0, 0.0],  # before the track
        [10.5, 0.5, 1.1, 1.1, 0.0, 0.0],  # not a whole frame
        [10.0, 1.0, 1.1, 1.1, 0.0, 0.0],  # phase out of 0..1
        [10.0, np.nan, 1.1, 1.1, 0.0, 0.0],
        [10.0, 0.5, 0.0, 1.1, 0.0, 0.0],  # no step
        [10.0, 0.5, 33.0, 1.1, 0.0, 0.0],  # faster than the taps allow
        [10.0, 0.5, 1.1, np.inf, 0.0, 0.0],
        [10.0, 0.5, 1.1, 1.1, 1.0, 100.0],  # a glide past the fastest step
        [10.0, 0.5, 1.1, 1.1, 0.0, -1.0],
        [10.0, 0.5, 1.0, 1.0, 1.0, 30.0],  # a glide whose far end is below 0
        [10.0, 0.5, 32.0, 32.0, -1.0, 30.0],  # a glide whose far end is 62
        [10.0, 0.5, 1.1, 1.1, 0.0, 2.5],  # frames left not whole
        [10.0, 0.5, 1.1, 1.1, 0.0, 2e9],  # a glide longer than the kernel takes
        [2.0**53 + 2, 0.5, 1.1, 1.1, 0.0, 0.0],  # past a double's whole numbers
        [np.inf, 0.5, 1.1, 1.1, 0.0, 0.0],
    ]
    for bad in bad_states:
        for kern in (COMPILED, NumpyKernel(4, 64)):  # the reference refuses them alike
            with pytest.raises(ValueError):
                kern.read(src, np.array(bad), 64, 100, dst, READ_TABLE)
    for count, end, out, table in (
        (65, 100, dst, READ_TABLE),  # more than dst holds
        (0, 100, dst, READ_TABLE),
        (64, 101, dst, READ_TABLE),  # an end past the track
        (64, -1, dst, READ_TABLE),
        (64, 100, np.zeros((1, 2, 64), np.float32), READ_TABLE),  # fewer rows than src
        (64, 100, dst, READ_TABLE[:-1]),
    ):
        with pytest.raises(ValueError):
            COMPILED.read(src, np.array(good), count, end, out, table)
    assert COMPILED.read(src, np.array(good), 64, 10, dst, READ_TABLE) == 0  # at the end


def _sine_track(sr: int, hz: float, seconds: float) -> Track:
    t = np.arange(int(sr * seconds)) / sr
    y = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return Track(np.stack([y, y])[:, np.newaxis, :], sr, ("a", "b"))


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 96000, 192000])
def test_a_track_plays_at_its_own_rate(sr: int) -> None:
    """A 1 kHz sine at any source rate comes out at 1 kHz on the 48 kHz device
    (the pitch is kept), at its level, and the head moves in the track's time."""
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    m.post(SetTrack(_sine_track(sr, 1000.0, 1.0)))
    m.post(Play())
    out = np.zeros((SR // 2, 2), np.float32)
    for i in range(0, len(out), 256):
        m.process(out[i : i + 256])
    assert m.dropped == 0
    assert m.position == pytest.approx(sr / 2, abs=1)
    assert m.seconds(m.position) == pytest.approx(0.5, abs=1.01 / sr)
    y = out[2000:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spectrum)] == pytest.approx(1000.0, abs=3)
    assert np.sqrt(2 * np.mean(y**2)) == pytest.approx(1.0, rel=1e-3)  # two channels of 0.5


@pytest.mark.parametrize("sr", [7999, 192001])
def test_a_track_at_a_rate_out_of_range_is_refused(sr: int) -> None:
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    m.post(SetTrack(_sine_track(sr, 1000.0, 0.1)))
    m.process(np.zeros((256, 2), np.float32))
    assert m.track is None
    assert m.dropped == 1


def test_positions_count_the_tracks_frames() -> None:
    """Seek, loop, length and the meters' position are in the track's time."""
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    track = _sine_track(44100, 440.0, 2.0)
    m.post(SetTrack(track))
    m.post(Seek(1.0))
    m.process(np.zeros((256, 2), np.float32))
    assert m.position == 44100
    assert m.read_meters().position == 1.0
    assert m.frame_rate == 44100
    m.post(Loop(0.5, 0.75))
    m.post(Play())
    out = np.zeros((256, 2), np.float32)
    m.process(out)
    assert m.loop == (22050, 33075)
    for _ in range(400):  # 2.1 s of output: the loop (0.25 s) wraps 8 times
        m.process(out)
        assert 22050 <= m.position < 33075
    m.post(Loop(0.0, 0.0))
    m.post(Seek(1.9))
    m.process(out)
    for _ in range(30):  # 0.16 s: past the end of the track, it stops there
        m.process(out)
    assert not m.playing
    assert m.position == 0


def _random_command(rng: np.random.Generator, tracks: list[Track]) -> Command:
    kind = rng.integers(0, 12)
    if kind < 5:
        return StripTarget(
            int(rng.integers(0, 4)),
            float(rng.choice([0.0, 1.0, rng.uniform(0, 2)])),
            bool(rng.random() < 0.2),
            bool(rng.random() < 0.1),
            float(rng.uniform(-1, 1)),
        )
    if kind == 5:
        return MasterTarget(float(rng.uniform(0, 2)), bool(rng.random() < 0.1))
    if kind == 6:
        return Seek(float(rng.uniform(0, 0.5)))
    if kind == 7:
        start = float(rng.uniform(0, 0.5))
        return Loop(start, start + float(rng.uniform(0, 0.2)))
    if kind == 8:
        transport: list[Command] = [Play(), Pause(), Stop()]
        return transport[int(rng.integers(0, 3))]
    if kind == 9:
        return SetTrack(tracks[int(rng.integers(0, len(tracks)))], bool(rng.random() < 0.5))
    if kind == 10:
        return Rate(float(rng.choice([1.0, 0.5, 2.0, 1.08, rng.uniform(0.5, 2.0)])))
    return Play()


@pytest.mark.parametrize("seed", range(4))
def test_tracks_at_other_rates_mix_the_same_on_both_kernels(seed: int) -> None:
    """Random command streams over tracks at 44.1, 32, 48 and 96 kHz (swaps of the
    same audio across rates, loops, seeks, fading heads of another rate, rate
    changes and their glides), blocks of every size: the compiled kernel gives the
    numpy reference's samples."""
    rng = np.random.default_rng(100 + seed)

    def channels(n: int, sides: int, sr: int) -> np.ndarray:
        return (rng.standard_normal((n, sides, sr // 2)) * 0.2).astype(np.float32)

    tracks = [
        Track(channels(3, 2, 44100), 44100, ("a", "b", "c")),
        Track(channels(2, 1, 32000), 32000, ("m1", "m2")),
        Track(channels(1, 2, 44100), 44100, ("mix",), is_mix=True),
        Track(channels(4, 2, 48000), 48000, ("w", "x", "y", "z")),
        Track(channels(2, 2, 96000), 96000, ("p", "q")),
    ]
    mixers = [Mixer(max_channels=4, compiled=c, at_end="loop") for c in (True, False)]
    for m in mixers:
        m.prepare(SR, 256)
        m.post(SetTrack(tracks[0]))
        m.post(Play())
    enter_audio_thread()
    for _ in range(250):
        commands = [_random_command(rng, tracks) for _ in range(rng.integers(0, 3))]
        frames = int(rng.choice([1, 7, 64, 255, 256, 300]))
        outs = []
        for m in mixers:
            for c in commands:
                m.post(c)
            out = np.full((frames, 2), np.nan, np.float32)
            m.process(out)
            outs.append(out)
        np.testing.assert_array_equal(outs[0], outs[1])
        assert mixers[0].position == mixers[1].position
        assert mixers[0].playing == mixers[1].playing
    assert mixers[0].dropped == 0


def test_a_track_at_another_rate_is_the_same_in_any_blocks() -> None:
    """The output does not depend on how the stream is cut into blocks (positions,
    loop wraps, seeks and their crossfades, rate glides, all between rates)."""
    rng = np.random.default_rng(3)
    track = Track(
        (rng.standard_normal((3, 2, 44100)) * 0.2).astype(np.float32), 44100, tuple("abc")
    )
    plan: dict[int, list[Command]] = {0: [Play(), Loop(0.2, 0.31)], 30000: [Seek(0.05)]}
    plan[40000] = [Rate(1.7)]
    plan[50000] = [Loop(0.0, 0.0)]
    plan[60000] = [Rate(0.6)]
    plan[70000] = [Seek(0.4)]
    plan[80000] = [Rate(1.0)]
    outs = []
    for cuts in ([256] * 400, [int(c) for c in rng.integers(1, 256, 1000)]):
        m = Mixer(max_channels=4)
        m.prepare(SR, 256)
        m.post(SetTrack(track))
        total, chunks, done = 100000, [], 0
        for size in cuts:
            size = min(size, total - done)
            if size <= 0:
                break
            # Commands land at the first block that starts at or after their frame.
            for frame in [f for f in plan if done <= f < done + size]:
                if frame != done:  # cut here so the command lands at its frame
                    first = frame - done
                    out = np.zeros((first, 2), np.float32)
                    m.process(out)
                    chunks.append(out)
                    done += first
                    size -= first
                for c in plan[frame]:
                    m.post(c)
            out = np.zeros((size, 2), np.float32)
            m.process(out)
            chunks.append(out)
            done += size
        outs.append(np.concatenate(chunks))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0]).max() > 0.1


def _play_blocks(m: Mixer, frames: int, block: int = 256) -> np.ndarray:
    out = np.zeros((frames, m.out_channels), np.float32)
    for i in range(0, frames, block):
        m.process(out[i : i + block])
    return out


def _peak_hz(y: np.ndarray) -> float:
    y = y.astype(np.float64) * np.hanning(len(y))
    spectrum = np.abs(np.fft.rfft(y, 8 * len(y)))
    return float(np.fft.rfftfreq(8 * len(y), 1 / SR)[np.argmax(spectrum)])


@pytest.mark.parametrize("sr", [48000, 44100])
def test_the_rate_plays_faster_and_higher(sr: int) -> None:
    """Vinyl mode: at rate 1.08 a 1 kHz sine sounds at 1080 Hz and the play head
    moves 1.08 seconds of the track a second."""
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    m.post(SetTrack(_sine_track(sr, 1000.0, 3.0)))
    m.post(Rate(1.08))
    m.post(Play())
    assert m.rate == 1.0  # applied with the next block
    _play_blocks(m, 2560)  # the glide (30 ms) is over
    assert m.rate == 1.08
    start = m.position
    out = _play_blocks(m, SR)
    assert m.position - start == pytest.approx(1.08 * sr, abs=2)
    assert _peak_hz(out[:, 0]) == pytest.approx(1080.0, abs=1.0)
    assert np.sqrt(2 * np.mean(out[:, 0].astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)


def _second_difference_peak(y: np.ndarray) -> float:
    return float(np.abs(np.diff(y.astype(np.float64), 2)).max())


def test_a_rate_change_glides_without_a_click() -> None:
    """From 1.0 to 2.0 and back the step glides (30 ms): the sine's curvature never
    exceeds that of its highest pitch (a step that jumped would put a corner in it:
    the same check catches that with no glide), and after 40 ms the pitch is there."""
    amplitude, hz = 1.0, 1000.0  # two channels of 0.5
    bound = amplitude * (2 * np.pi * 2 * hz / SR) ** 2  # the curvature at 2 kHz

    def run(glide_ms: float) -> tuple[float, np.ndarray]:
        m = Mixer(max_channels=4, rate_glide_ms=glide_ms)
        m.prepare(SR, 256)
        m.post(SetTrack(_sine_track(SR, hz, 3.0)))
        m.post(Play())
        _play_blocks(m, 2560)  # the fade in is over
        m.post(Rate(2.0))
        up = _play_blocks(m, 2560)
        m.post(Rate(1.0))
        down = _play_blocks(m, 4096)
        both = np.concatenate([up[:, 0], down[:, 0]])
        return _second_difference_peak(both) / bound, up

    ratio, up = run(30.0)
    assert ratio < 1.01
    assert _peak_hz(up[1920:, 0]) == pytest.approx(2000.0, abs=4.0)
    clicked, _ = run(0.0)  # the step jumps in one frame
    assert clicked > 1.5


def test_a_bend_over_two_blocks_covers_a_step_at_once_without_a_corner() -> None:
    """A sync leader's tempo step (daemon/timebase.py): ``Rate(peak, glide=256)`` then
    ``Rate(rate, glide=256)``, the peak past the new rate by half the step, moves
    the head as far as the step at once would have (to the frame) and, unlike the
    step, puts no corner in the wave: its curvature stays within the sine's at the
    highest pitch it passes (1 kHz), where a 30 ms glide to 0.75 lags 3.75 ms."""
    hz, block, rate = 1000.0, 256, 0.75
    bound = (2 * np.pi * hz / SR) ** 2  # amplitude 1

    def mixer(lead: int) -> tuple[Mixer, np.ndarray]:
        m = Mixer(max_channels=4)
        m.prepare(SR, block)
        m.post(SetTrack(_sine_track(SR, hz, 3.0)))
        m.post(Play())
        return m, _play_blocks(m, 2560 + lead)[-block:, 0]  # the fade in is over

    m, before = mixer(0)
    start = m.position
    m.post(Rate(rate + (rate - 1.0) / 2, glide=block))
    first = _play_blocks(m, block)
    m.post(Rate(rate, glide=block))
    second = _play_blocks(m, block)
    assert abs(m.position - start - 2 * block * rate) <= 1, m.position - start
    assert m.rate == rate
    after = _play_blocks(m, 2048)
    wave = np.concatenate([before, first[:, 0], second[:, 0], after[:, 0]])
    assert _second_difference_peak(wave) / bound < 1.01
    assert _peak_hz(after[:, 0]) == pytest.approx(rate * hz, abs=6.0)
    # The step at once, where the sine is steep: a corner.
    m, before = mixer(153)
    m.post(Rate(rate, at_once=True))
    stepped = np.concatenate([before, _play_blocks(m, 2 * block)[:, 0]])
    assert _second_difference_peak(stepped) / bound > 1.5


def test_a_rate_at_once_steps_from_the_blocks_first_sample() -> None:
    """``Rate(r, at_once=True)`` (a sync leader's start or locate, under its fade or
    crossfade) takes the step from the block's first sample: 1.25 × 256 frames in
    the first block, where the 30 ms glide had moved 256 and a bit."""
    moved = []
    for at_once in (True, False):
        m = Mixer(max_channels=4)
        m.prepare(SR, 256)
        m.post(SetTrack(_sine_track(SR, 1000.0, 3.0)))
        m.post(Play())
        _play_blocks(m, 2560)
        start = m.position
        m.post(Rate(1.25, at_once=at_once))
        _play_blocks(m, 256)
        moved.append(m.position - start)
    assert moved[0] == 320
    assert moved[1] == 261  # the glide: 256 × (1 + 0.25 × 256 / 1440 / 2), rounded down


def test_back_at_rate_one_the_output_is_exact_again() -> None:
    """After a rate excursion the head lands on a whole frame (crossfaded) and
    then plays the track sample for sample, as if the rate had never changed."""
    rng = np.random.default_rng(5)
    audio = (rng.standard_normal((1, 2, SR * 2)) * 0.3).astype(np.float32)
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    m.post(SetTrack(Track(audio, SR, ("a",))))
    m.post(Play())
    _play_blocks(m, 1024)
    m.post(Rate(1.3))
    _play_blocks(m, 2048)
    m.post(Rate(1.0))
    _play_blocks(m, 2048)  # the glide (1440 frames), then the landing crossfade (240)
    pos = m.position
    out = _play_blocks(m, 1024)
    np.testing.assert_array_equal(out.T, audio[0, :, pos : pos + 1024])
    assert m.position == pos + 1024


def test_loops_and_seeks_work_at_any_rate() -> None:
    """At rate 0.5 and 2.0 a loop keeps the head inside it, a seek lands where it is sent."""
    for rate in (0.5, 2.0):
        m = Mixer(max_channels=4)
        m.prepare(SR, 256)
        m.post(SetTrack(_sine_track(44100, 440.0, 2.0)))
        m.post(Rate(rate))
        m.post(Loop(0.5, 0.6))
        m.post(Play())
        out = np.zeros((256, 2), np.float32)
        for _ in range(100):  # 0.53 s of output: the 0.1 s loop wraps 2.6 or 10.7 times
            m.process(out)
            assert 22050 <= m.position < 26460
        m.post(Loop(0.0, 0.0))
        m.post(Seek(1.0))
        m.process(out)
        assert (
            m.position == 44100 + round(256 * rate * 44100 / SR)
            or abs(m.position - (44100 + 256 * rate * 44100 / SR)) <= 1
        )


def test_a_rate_out_of_range_is_clamped_and_nan_ignored() -> None:
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    for sent, held in ((5.0, 2.0), (0.1, 0.5), (float("nan"), 0.5), (1.25, 1.25)):
        m.post(Rate(sent))
        m.process(np.zeros((256, 2), np.float32))
        assert m.rate == held


def test_a_block_between_rates_allocates_no_array_data() -> None:
    """As ``test_block_allocates_no_array_data`` (test_engine.py), with a 44.1 kHz
    track on the 48 kHz mixer and rate changes gliding: the compiled read head
    writes into the buffer prepare made; a block makes only views and scalars."""
    import tracemalloc

    rng = np.random.default_rng(9)
    channels = (rng.standard_normal((8, 2, 44100 * 3)) * 0.1).astype(np.float32)
    m = Mixer(max_channels=8)
    m.prepare(SR, 1024)
    m.post(SetTrack(Track(channels, 44100, tuple(map(str, range(8))))))
    out = np.zeros((1024, 2), np.float32)
    m.post(Play())
    for _ in range(5):
        m.process(out)
    enter_audio_thread()
    tracemalloc.start()
    worst = steady = 0
    try:
        for i in range(100):
            if i % 10 == 0:
                m.post(StripTarget(i % 8, 0.5, False, i % 20 == 0, 0.3))
            if i % 25 == 3:
                m.post(Seek(0.5))
            if i % 30 == 8:
                m.post(Rate(1.08 if i < 60 else 0.93))
            if i == 50:
                m.post(Loop(1.0, 1.05))
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            m.process(out)
            took = tracemalloc.get_traced_memory()[1] - base
            worst = max(worst, took)
            if i % 10 not in (0, 3, 8):  # no command this block
                steady = max(steady, took)
    finally:
        tracemalloc.stop()
        np.setbufsize(8192)
    assert worst < 8192 and steady < 4096, (worst, steady)


def test_the_old_track_fades_out_at_its_own_rate() -> None:
    """A track change leaves the old head reading at the old track's step: over
    the crossfade the output is the same whatever the new (silent) track's rate."""
    outs = []
    for new_sr in (96000, 48000, 22050):
        m = Mixer(max_channels=4)
        m.prepare(SR, 256)
        m.post(SetTrack(_sine_track(96000, 1000.0, 1.0)))
        m.post(Play())
        _play_blocks(m, 2560)
        silent = Track(np.zeros((2, 1, new_sr), np.float32), new_sr, ("a", "b"))
        m.post(SetTrack(silent))
        outs.append(_play_blocks(m, 512))
    assert np.abs(outs[0][:200]).max() > 0.1  # the old track sounds while it fades
    np.testing.assert_array_equal(outs[1], outs[0])
    np.testing.assert_array_equal(outs[2], outs[0])


def test_prepared_again_the_track_keeps_its_speed() -> None:
    """``prepare`` again with a track in (a new stream): the head steps at that
    track's rate over the new device rate, not at 1."""
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    m.post(SetTrack(_sine_track(44100, 440.0, 2.0)))
    m.process(np.zeros((256, 2), np.float32))
    m.prepare(SR, 256)
    m.post(Play())
    _play_blocks(m, SR // 2)
    assert m.position == pytest.approx(22050, abs=1)
