"""Beat analysis on generated songs whose beats are exact (core/material/songs.py:
beat k at k * 60 / bpm, a bar every four beats from 0 s)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stemdeck.core.beats.analysis import analyze_beats, autocorrelation
from stemdeck.core.errors import AudioFileError, ParameterError
from stemdeck.core.material.songs import Song, SongSpec, render_song

SR = 22050
TOLERANCE = 0.015  # s: a fifth of mir_eval's 70 ms window; measured error is under 7 ms


def _song(bpm: float, bars: int, drum_pattern: int) -> Song:
    return render_song(SongSpec(bpm=bpm, bars=bars, drum_pattern=drum_pattern), sr=SR)


@pytest.fixture(scope="module")
def song_120() -> Song:
    return _song(120.0, 12, 0)


def _truth(bpm: float, bars: int) -> np.ndarray:
    return 60.0 / bpm * np.arange(bars * 4)


def _assert_on_truth(est: np.ndarray, truth: np.ndarray, duration: float) -> None:
    """Every true beat has its estimate within TOLERANCE, in order; the only
    other beat allowed is one at the very end (the truth's next beat falls on
    the track's last sample, a grid a hair slower lists it)."""
    assert np.abs(est[: len(truth)] - truth).max() < TOLERANCE
    extra = est[len(truth) :]
    assert len(extra) == 0 or (len(extra) == 1 and extra[0] > duration - TOLERANCE), extra


def test_the_grid_of_a_120_bpm_song_lands_on_every_true_beat_and_bar(song_120: Song) -> None:
    a = analyze_beats(song_120.mix, SR)
    truth = _truth(120.0, 12)
    assert abs(a.bpm - 120.0) < 0.1
    assert a.grid.beats_per_bar == 4
    beats, downbeats = a.beats(), a.downbeats()
    assert len(beats) == len(truth) and len(downbeats) == 12
    assert np.abs(beats - truth).max() < TOLERANCE
    assert np.abs(downbeats - truth[::4]).max() < TOLERANCE
    assert a.key is None
    assert a.duration == song_120.mix.shape[1] / SR


def test_as_dict_is_the_cli_json_form(song_120: Song) -> None:
    a = analyze_beats(song_120.mix, SR)
    d = a.as_dict()
    assert list(d) == ["bpm", "beats", "downbeats", "beats_per_bar", "key"]
    assert d["bpm"] == round(a.bpm, 4) and d["beats_per_bar"] == 4 and d["key"] is None
    assert d["beats"] == [round(float(t), 4) for t in a.beats()]
    assert d["downbeats"] == [round(float(t), 4) for t in a.downbeats()]


@pytest.mark.parametrize(
    ("bpm", "pattern"),
    [
        (70.0, 0),  # hi-hats on eighths pull a plain tracker to 140
        (170.0, 0),  # kick on one and three pulls it to 85
        (120.0, 2),  # a half-time pattern (snare on three) pulls it to 60
        # The syncopated pattern (kicks on eighths 1, 4 and 6), read by the octave
        # prior alone as 150, 75, 87.5 and 82.5: the backbeat decides.
        (75.0, 1),
        (150.0, 1),
        (175.0, 1),
        (165.0, 1),
        # Read as 3:2 relatives (a kick every three eighths) before the 3:2
        # families were weighed: 110 (165 x 2/3), 104 (78 x 4/3), 106.7 (160 x 2/3).
        (165.0, 3),
        (78.0, 1),
        (160.0, 0),
        # At the DJ range's top: a fine tempo of 180.03 is still in range (read
        # as 90 or 120 before).
        (180.0, 1),
    ],
)
def test_the_tempo_octave_is_the_true_one(bpm: float, pattern: int) -> None:
    song = _song(bpm, 12, pattern)
    a = analyze_beats(song.mix, SR)
    assert abs(a.bpm / bpm - 1) < 0.005, a.bpm
    _assert_on_truth(a.beats(), _truth(bpm, 12), a.duration)


def test_the_drums_and_bass_channels_are_taken_as_evidence(song_120: Song) -> None:
    a = analyze_beats(song_120.mix, SR, drums=song_120.stems["drums"], bass=song_120.stems["bass"])
    assert abs(a.bpm - 120.0) < 0.1
    assert np.abs(a.downbeats() - _truth(120.0, 12)[::4]).max() < TOLERANCE


def test_a_mono_track_at_another_rate_gives_the_same_grid(song_120: Song) -> None:
    from stemdeck.core.audiofile.samples import resample

    mono = resample(song_120.mix.mean(axis=0, keepdims=True), SR, 44100)
    a = analyze_beats(mono[0], 44100)
    assert abs(a.bpm - 120.0) < 0.1
    assert np.abs(a.downbeats() - _truth(120.0, 12)[::4]).max() < TOLERANCE


@pytest.mark.parametrize(
    ("y", "kwargs", "error", "message"),
    [
        (
            np.zeros((2, SR)),
            {},
            ParameterError,
            "track is 1.00 s long: a beat grid needs at least 2 s of audio",
        ),
        (
            np.full((2, 3 * SR), np.nan),
            {},
            AudioFileError,
            "track: 132300 samples are NaN or infinite; re-export the file",
        ),
        (np.zeros((2, 0)), {}, AudioFileError, "track: no samples (zero-length audio)"),
        (
            np.zeros((2, 3 * SR)),
            {"beats_per_bar": 0},
            ParameterError,
            "beats per bar must be at least 1, got 0",
        ),
        (
            np.zeros((2, 3 * SR)),
            {"drums": np.zeros((2, 0))},
            ParameterError,
            "the drums channel has 0 samples, the track 66150",
        ),
        (
            np.zeros((2, 3 * SR)),
            {"drums": np.full((2, 3 * SR), np.inf)},
            AudioFileError,
            "drums channel: 132300 samples are NaN or infinite; re-export the file",
        ),
    ],
)
def test_bad_input_is_one_exact_error(y, kwargs, error, message: str) -> None:
    with pytest.raises(error) as info:
        analyze_beats(y, SR, **kwargs)
    assert str(info.value) == message


def test_a_channel_of_another_length_is_one_exact_error(song_120: Song) -> None:
    n = song_120.mix.shape[1]
    with pytest.raises(ParameterError) as info:
        analyze_beats(song_120.mix, SR, bass=song_120.stems["bass"][:, :-5])
    assert str(info.value) == f"the bass channel has {n - 5} samples, the track {n}"


def test_silence_gives_a_grid_and_no_crash() -> None:
    a = analyze_beats(np.zeros((2, 4 * SR), np.float32), SR)
    assert 70.0 <= a.bpm <= 180.0


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_the_filter_banks_are_librosas_without_importing_it() -> None:
    """The analysis computes librosa's mel and chroma filter banks itself: importing
    ``librosa.filters`` (scipy.signal, numba) took about 2 s of a first grid."""
    import librosa

    from stemdeck.core.beats.filters import chroma_filters, mel_filters, mel_frequencies

    for sr, n_fft, n_mels, fmax in ((22050, 1024, 64, 8000.0), (44100, 2048, 40, 500.0)):
        expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmax=fmax)
        assert np.array_equal(mel_filters(sr, n_fft, n_mels, fmax), expected)
        assert mel_filters(sr, n_fft, n_mels, fmax).dtype == expected.dtype == np.float32
        assert np.array_equal(
            mel_frequencies(n_mels, fmax), librosa.mel_frequencies(n_mels=n_mels, fmax=fmax)
        )
    for sr, n_fft, ctroct, octwidth in ((5512, 2048, 3.0, 1.0), (22050, 4096, 5.0, 2.0)):
        expected = librosa.filters.chroma(
            sr=sr, n_fft=n_fft, tuning=0.0, ctroct=ctroct, octwidth=octwidth
        )
        got = chroma_filters(sr, n_fft, ctroct=ctroct, octwidth=octwidth)
        assert got.dtype == np.float32 and np.array_equal(got, expected)


@pytest.mark.e2e  # a fresh interpreter: what the analysis imports
def test_the_analysis_imports_no_librosa() -> None:
    code = (
        "import sys, numpy as np\n"
        "from stemdeck.core.beats.analysis import analyze_beats\n"
        "rng = np.random.default_rng(0)\n"
        "analyze_beats(rng.uniform(-0.5, 0.5, (2, 3 * 22050)).astype(np.float32), 22050)\n"
        "heavy = ('librosa', 'scipy', 'numba')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_the_autocorrelation_is_numpys_at_the_lags_read_and_holds_no_fft_of_the_track() -> None:
    """An hour's envelope (310,000 frames): the lags a tempo reads, as np.correlate
    gives them, without a transform of the whole envelope padded to twice its length
    (24 MiB; the envelope itself is 2.4 MiB)."""
    import tracemalloc

    env = np.maximum(np.random.default_rng(5).standard_normal(310_000), 0.0)
    tracemalloc.start()
    try:
        ac = autocorrelation(env, 210)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    part = env[:10_000]  # np.correlate is quadratic: the reference on a shorter part
    x = part - part.mean()
    full = np.correlate(x, x, mode="full")[len(x) - 1 : len(x) + 210]
    assert np.allclose(autocorrelation(part, 210), full / full[0], rtol=1e-12, atol=1e-15)
    assert ac.shape == (211,) and ac[0] == 1.0
    assert peak < 2 * env.nbytes, f"{peak / 2**20:.1f} MiB"
    short = autocorrelation(np.array([0.0, 1.0, 0.0, 1.0]), 6)
    assert short.tolist() == [1.0, -0.75, 0.5, -0.25, 0.0, 0.0, 0.0]


def test_the_compiled_fold_is_the_reference_bit_for_bit() -> None:
    """The tempo search's fold runs in the mixer's compiled kernel: every bin is
    the numpy reference's bits, whatever the envelope's length (none too), scale,
    the period (shorter than a bin, than a frame, a whole number of frames) and the
    bins (1 to 256); a float32 envelope or more bins take the reference."""
    from stemdeck.core.beats import analysis
    from stemdeck.core.mixer.kernel import COMPILED

    assert COMPILED is not None
    rng = np.random.default_rng(5)
    for trial in range(120):
        n = int(rng.integers(0, 6000)) if trial else 0
        env = rng.random(n) * float(rng.choice([1.0, 1e-3, 1e5]))
        env[: n // 50] = 0.0
        period = float(rng.choice([rng.uniform(0.3, 400), 1e-3, 1.0, 2.0, 48.0, 43.066, 1 / 3]))
        bins = int(rng.choice([1, 2, 3, 48, 100, 256]))
        want = analysis._fold_reference(env, period, bins)
        got = analysis._fold(env, period, bins)
        assert got.shape == (bins,)
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
    with pytest.raises(ValueError):
        COMPILED.fold(np.zeros(8), 0.0, np.empty(48))
    with pytest.raises(ValueError):
        COMPILED.fold(np.zeros(8), 43.0, np.empty(257))
    # Where a frame's phase would leave the C's exact range (i / period up to
    # 2^52), or the period is not a finite positive number: the reference's values.
    wide = rng.random(40)
    for period in (1e-15, 1e-300, np.inf, 1e301):
        np.testing.assert_array_equal(
            analysis._fold(wide, period, 48), analysis._fold_reference(wide, period, 48)
        )
    with pytest.raises(ValueError):
        COMPILED.fold(wide, 1e-15, np.empty(48))
    env32 = rng.random(500).astype(np.float32)
    np.testing.assert_array_equal(
        analysis._fold(env32, 43.0, 48), analysis._fold_reference(env32, 43.0, 48)
    )


def test_the_grid_is_the_same_with_the_compiled_fold_or_without(
    song_120: Song, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stemdeck.core.beats import analysis

    compiled = analyze_beats(song_120.mix, song_120.sr)
    monkeypatch.setattr(analysis, "COMPILED", None)
    assert analyze_beats(song_120.mix, song_120.sr) == compiled
