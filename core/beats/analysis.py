"""Beat analysis of a track: tempo, a constant-tempo grid, beat and downbeat times.

The analysis runs on an onset envelope (spectral flux of a log-mel spectrogram
at 22,050 Hz, one frame every 256 samples), which :mod:`.features` computes in
one pass over the track, block by block (its memory flat in the track's length),
and assumes the tempo is constant, as in the music a DJ grid is made for:

1. **Tempo, coarse.** The envelope's autocorrelation is read at the lags of
   every tempo from 50 to 220 BPM.
2. **Tempo relatives.** The candidates are the tempo's octaves and those of
   its 3:2 and 2:3 relatives inside :data:`DJ_RANGE`. The family (octaves of
   one of the three) whose member folds the envelope much more sharply than
   the autocorrelation's own tempo is taken (:func:`_choose_tempo`); within
   it, each octave is scored by the autocorrelation of the full-band envelope
   *and* of the low band (kick and bass, below about 200 Hz), a log-normal
   prior centred on 120 BPM, and the backbeat: whether the kicks (low band)
   and the snares (1-5 kHz) alternate on its beats (:func:`_backbeat`). A
   separated drums (and bass) channel can be added to the mix's envelopes
   (``drums=``, ``bass=``).
3. **Tempo, fine, and phase.** The envelope is folded modulo each period in a
   narrow band around the chosen tempo; the period whose fold has the sharpest
   peak wins, and that peak's phase places the first beat. Over a whole track
   this fits the period to a few hundredths of a BPM.
4. **Downbeats.** Each of the ``beats_per_bar`` beat phases is scored by the
   low-band onsets on it and by the change of the bass register's pitch
   classes from the bar before it to the bar after: chords, bass roots
   and kicks change or fall on bar starts.

The result is a :class:`~.grid.BeatGrid` (bpm, first downbeat, beats per bar:
what the mixer quantizes to) plus the beat and downbeat times it lays over the
track. The key is left out (``None``): see :func:`analyze_beats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..audiofile.samples import validate_audio
from ..errors import ParameterError
from ..mixer.kernel import COMPILED
from .features import ANALYSIS_SR, BASS_FPS, HOP, stream_features
from .grid import BeatGrid

__all__ = ["DJ_RANGE", "BeatAnalysis", "analyze_beats", "autocorrelation"]

#: Tempi a grid may have (BPM): a DJ's range; relatives outside it are not chosen.
DJ_RANGE = (70.0, 180.0)
# A relative this much outside DJ_RANGE still counts: a 180-BPM track's fine
# tempo may read 180.1.
_RANGE_SLACK = 0.01
_PRIOR_BPM = 120.0
_PRIOR_OCTAVES = 0.9  # standard deviation of the log2-tempo prior
_FOLD_BINS = 48  # phase bins of a beat: a quarter to half an envelope frame each
# How much a backbeat (_backbeat, -1 to 1) weighs against the autocorrelation
# and the prior: a clear backbeat (0.3) multiplies a tempo's score by 1.6. Set
# on generated songs of other seeds and tempi than bench/beats.py's (any weight
# from 1.5 to 3 gave the same tempi there); the lowest keeps the most real
# clips' tempi (musdb: docs/beats.md).
_BACKBEAT_WEIGHT = 1.5
# How much more sharply (_sharpness) a 3:2 relative's family must fold the
# envelope than the autocorrelation's own tempo's for it to be taken. On the
# generated songs of other seeds, a relative that was the beat folded 1.6-2.4
# times as sharply, one that was not at most 0.64 times; real 7-second clips
# (musdb) read 1.0-1.2 where the relative was doubtful.
_FAMILY_MARGIN = 1.3
_LOW_WEIGHT = 0.5  # the low band's onsets against the harmonic change, for downbeats


@dataclass(frozen=True)
class BeatAnalysis:
    """What the analysis found in a track.

    Attributes
    ----------
    grid : BeatGrid
        The constant-tempo grid: bpm, first downbeat (s), beats per bar.
    duration : float
        Track length in seconds: the grid's beats are laid over ``[0, duration)``.
    key : str or None
        The musical key; ``None``: not estimated (see :func:`analyze_beats`).
    """

    grid: BeatGrid
    duration: float
    key: str | None = None

    @property
    def bpm(self) -> float:
        """The grid's tempo in beats per minute."""
        return self.grid.bpm

    def beats(self) -> np.ndarray:
        """Beat times in seconds of the track, shape (n,)."""
        return self.grid.beats(self.duration)

    def downbeats(self) -> np.ndarray:
        """Bar starts in seconds of the track, shape (n,)."""
        return self.grid.downbeats(self.duration)

    def as_dict(self) -> dict[str, object]:
        """The ``stemdeck beats --json`` form: ``bpm``, ``beats``, ``downbeats``,
        ``beats_per_bar``, ``key``; times in seconds, rounded to 0.1 ms."""
        return {
            "bpm": round(self.grid.bpm, 4),
            "beats": [round(float(t), 4) for t in self.beats()],
            "downbeats": [round(float(t), 4) for t in self.downbeats()],
            "beats_per_bar": self.grid.beats_per_bar,
            "key": self.key,
        }


def _whiten(env: np.ndarray) -> np.ndarray:
    """The envelope less its running mean (about 1 s), so that loud and quiet
    passages weigh alike and only the pulse is left."""
    width = max(1, round(ANALYSIS_SR / HOP))
    kernel = np.ones(width) / width
    out = env - np.convolve(env, kernel, mode="same")
    out = np.maximum(out, 0.0)
    scale = float(out.std())
    return out / scale if scale > 0 else out


def autocorrelation(env: np.ndarray, max_lag: int) -> np.ndarray:
    """The autocorrelation of ``env`` less its mean at lags 0..``max_lag``, divided
    by lag 0's (when positive).

    One product a lag: the analysis reads about 200 lags, and an FFT of the whole
    envelope padded to twice its length held 24 MiB for an hour's envelope.

    Parameters
    ----------
    env : np.ndarray, shape (frames,)
        An onset envelope.
    max_lag : int
        The last lag, in frames; lags at or beyond ``frames`` are 0.

    Returns
    -------
    np.ndarray, shape (max_lag + 1,), float64
    """
    x = env - env.mean()
    n = len(x)
    ac = np.zeros(max_lag + 1)
    for lag in range(min(max_lag, n - 1) + 1):
        ac[lag] = float(x[: n - lag] @ x[lag:])
    return ac / ac[0] if ac[0] > 0 else ac


def _ac_at(ac: np.ndarray, bpm: float) -> float:
    """Autocorrelation at the lag of ``bpm``, interpolated, with its first
    multiple (a pulse repeats at twice its period too)."""
    fps = ANALYSIS_SR / HOP
    total = 0.0
    for mult, weight in ((1, 1.0), (2, 0.5)):
        lag = mult * 60.0 * fps / bpm
        i = int(lag)
        if i + 1 >= len(ac):
            continue
        frac = lag - i
        # the peak of a pulse's autocorrelation is one frame wide: take the best
        # of the neighbourhood so a fractional lag does not fall beside it
        lo, hi = max(0, i - 1), min(len(ac), i + 3)
        total += weight * max(float(ac[lo:hi].max()), (1 - frac) * ac[i] + frac * ac[i + 1])
    return total


def _coarse_tempo(ac: np.ndarray) -> float:
    """The tempo (50-220 BPM, 0.5 BPM apart) whose lag the envelope repeats at
    most strongly."""
    bpms = np.arange(50.0, 220.0, 0.5)
    scores = np.array([_ac_at(ac, b) for b in bpms])
    return float(bpms[int(np.argmax(scores))])


def _prior(bpm: float) -> float:
    return math.exp(-0.5 * (math.log2(bpm / _PRIOR_BPM) / _PRIOR_OCTAVES) ** 2)


def _sharpness(env: np.ndarray, bpm: float) -> float:
    """How sharply ``env`` folded modulo a beat at ``bpm`` peaks: the fold's
    largest value over its mean (1: no pulse at that period)."""
    fold = _smoothed_fold(env, 60.0 * ANALYSIS_SR / HOP / bpm, _FOLD_BINS)
    mean = float(fold.mean())
    return float(fold.max()) / mean if mean > 0 else 0.0


def _backbeat(full: np.ndarray, low: np.ndarray, mid: np.ndarray, bpm: float) -> float:
    """How much kicks and snares alternate on the beats of ``bpm``: -1 to 1.

    The low band (kicks) and the mid band (snares) are folded modulo two beats
    and read on the two beats (placed by the full band's fold): the kick's
    stronger beat is ``a``, the other ``b``. The score is the kick's lead on
    ``a`` times the snare's lead on ``b``, each fold scaled by its largest value:
    well above 0 for a backbeat on these beats (kick on one and three, snare on
    two and four), near 0 when both beats carry the same (a tempo twice too
    slow: its snares fall between its beats), below 0 when the snare shares
    the kick's beat and nothing marks the other (a tempo twice too fast: its
    second beat is an off-beat).
    """
    period = 60.0 * ANALYSIS_SR / HOP / bpm
    a = int(np.argmax(_smoothed_fold(full, period, _FOLD_BINS)))
    b = a + _FOLD_BINS
    kick = _smoothed_fold(low, 2 * period, 2 * _FOLD_BINS)
    snare = _smoothed_fold(mid, 2 * period, 2 * _FOLD_BINS)
    kick /= max(float(kick.max()), 1e-12)
    snare /= max(float(snare.max()), 1e-12)
    if kick[a] < kick[b]:
        a, b = b, a
    return float((kick[a] - kick[b]) * (snare[b] - snare[a]))


def _relatives(bpm: float) -> list[list[float]]:
    """The tempi a beat at ``bpm`` may really have inside :data:`DJ_RANGE`
    (give or take :data:`_RANGE_SLACK`), by family: its octaves (x1/4 ... x4),
    those of its 3:2 relative (x3/4, x3/2, x3) and those of its 2:3 relative
    (x1/3, x2/3, x4/3). The range spans more than an octave: no family is empty."""
    lo = DJ_RANGE[0] * (1 - _RANGE_SLACK)
    hi = DJ_RANGE[1] * (1 + _RANGE_SLACK)
    return [
        [t for t in (bpm * base * 2.0**k for k in range(-3, 4)) if lo <= t <= hi]
        for base in (1.0, 1.5, 2.0 / 3.0)
    ]


def _choose_tempo(
    bpm: float,
    full: np.ndarray,
    low: np.ndarray,
    mid: np.ndarray,
    ac_full: np.ndarray,
    ac_low: np.ndarray,
) -> float:
    """Of the relatives of ``bpm`` (:func:`_relatives`), the beat.

    1. **Family** (the 3:2 relation): the family with the member whose fold of
       the full-band envelope peaks most sharply (:func:`_sharpness`). A beat
       read a third too slow or too fast (a syncopated kick, on eighths 1, 4
       and 6, repeats every three eighths) spreads the true eighths over thirds
       of its beat; the true beat and its octaves fold them onto a few phases.
    2. **Octave** within the family: the autocorrelation of the full and the
       low band at each member's lag, times a log-normal prior centred on 120
       BPM, times ``exp(_BACKBEAT_WEIGHT * backbeat)`` (:func:`_backbeat`):
       where the kicks and the snares fall decides between 75 and 150 BPM, the
       prior where the drums do not tell (no backbeat, or a half-time pattern,
       whose snare on three is a backbeat at half the tempo).
    """
    families = _relatives(bpm)
    sharpness = [max(_sharpness(full, t) for t in members) for members in families]
    best = int(np.argmax(sharpness))
    family = families[best] if sharpness[best] >= _FAMILY_MARGIN * sharpness[0] else families[0]

    def score(t: float) -> float:
        evidence = _ac_at(ac_full, t) + _ac_at(ac_low, t)
        return evidence * _prior(t) * math.exp(_BACKBEAT_WEIGHT * _backbeat(full, low, mid, t))

    return max(family, key=score)


def _fold(env: np.ndarray, period: float, bins: int) -> np.ndarray:
    """Mean of ``env`` by phase of ``period`` frames, in ``bins`` phase bins; each
    frame is shared between its two nearest bins, so no bin is left empty when a
    bin is narrower than a frame. The compiled kernel's ``fold`` where it is built
    (the tempo search folds a track 642 times: 7 times faster there), the same
    bits as :func:`_fold_reference` for a finite envelope; elsewhere the reference."""
    if (
        COMPILED is not None
        and env.dtype == np.float64
        and 1 <= bins <= 256
        and 0.0 < period <= 1e300
        and len(env) / period < 2.0**52  # every frame's phase in the C's exact range
    ):
        out = np.empty(bins)
        COMPILED.fold(env, period, out)
        return out
    return _fold_reference(env, period, bins)


def _fold_reference(env: np.ndarray, period: float, bins: int) -> np.ndarray:
    """:func:`_fold` in numpy: the compiled kernel's reference."""
    pos = (np.arange(len(env)) / period % 1.0) * bins
    lo = pos.astype(np.intp) % bins
    frac = pos - np.floor(pos)
    hi = (lo + 1) % bins
    sums = np.bincount(lo, weights=env * (1 - frac), minlength=bins)
    sums += np.bincount(hi, weights=env * frac, minlength=bins)
    counts = np.bincount(lo, weights=1 - frac, minlength=bins)
    counts += np.bincount(hi, weights=frac, minlength=bins)
    return sums / np.maximum(counts, 1e-9)


def _smoothed_fold(env: np.ndarray, period: float, bins: int) -> np.ndarray:
    """:func:`_fold` smoothed over three bins (circularly): a peak split between
    two bins counts whole."""
    fold = _fold(env, period, bins)
    return fold + 0.5 * (np.roll(fold, 1) + np.roll(fold, -1))


def _fine_tempo(env: np.ndarray, bpm: float) -> tuple[float, float]:
    """The tempo within ±4 % of ``bpm`` whose fold peaks sharpest, and the
    first beat's time (s) in ``[0, period)``."""
    fps = ANALYSIS_SR / HOP
    bins = _FOLD_BINS
    best = (-1.0, bpm, 0.0)
    for b in np.linspace(bpm * 0.96, bpm * 1.04, 321):
        smooth = _smoothed_fold(env, 60.0 * fps / b, bins)
        k = int(np.argmax(smooth))
        if smooth[k] > best[0]:
            left, mid, right = smooth[k - 1], smooth[k], smooth[(k + 1) % bins]
            denom = left - 2 * mid + right
            offset = 0.5 * (left - right) / denom if denom < 0 else 0.0
            phase = ((k + 0.5 + offset) / bins) % 1.0
            best = (float(smooth[k]), float(b), phase * 60.0 / float(b))
    return best[1], best[2]


def _harmonic_change(chroma: np.ndarray, fps: float, beats: np.ndarray, width: int) -> np.ndarray:
    """How much the pitch classes of the ``width`` beats after each beat differ
    from those of the ``width`` beats before it (0 same, 1 unrelated), shape (beats,).
    With ``width`` a bar, the change is whole at a bar start and partial elsewhere.

    Whole beats are compared, not a fixed window around the beat: a pad's slow
    attack moves the change of a fixed window late, a beat's mean keeps it.
    """
    edges = np.clip(np.round(np.append(beats, beats[-1] + np.diff(beats[-2:])) * fps), 0, None)
    edges = np.minimum(edges.astype(np.intp), chroma.shape[1])
    cs = np.concatenate([np.zeros((12, 1)), np.cumsum(chroma, axis=1)], axis=1)
    per_beat = (cs[:, edges[1:]] - cs[:, edges[:-1]]).T  # (beats, 12)
    per_beat /= np.maximum(np.linalg.norm(per_beat, axis=1, keepdims=True), 1e-9)
    n = len(beats)
    change = np.zeros(n)
    for b in range(width, n - width + 1):
        before = per_beat[b - width : b].sum(axis=0)
        after = per_beat[b : b + width].sum(axis=0)
        norm = np.linalg.norm(before) * np.linalg.norm(after)
        change[b] = 1.0 - float(before @ after) / norm if norm > 0 else 0.0
    return change


def _at(env: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The envelope's largest value within ±2 frames of each time (s)."""
    fps = ANALYSIS_SR / HOP
    idx = np.round(times * fps).astype(np.intp)
    out = np.zeros(len(idx))
    for d in range(-2, 3):
        j = np.clip(idx + d, 0, len(env) - 1)
        out = np.maximum(out, env[j])
    return out


def _downbeat_phase(
    beats: np.ndarray, low: np.ndarray, changes: np.ndarray, beats_per_bar: int
) -> int:
    """Which of the first ``beats_per_bar`` beats starts a bar: the phase with
    the most low-band onsets and harmonic change on it."""
    lows = _at(low, beats)
    changes = changes.copy()
    lows /= max(float(lows.mean()), 1e-9)
    changes /= max(float(changes.mean()), 1e-9)
    # Weights set on the generated songs (bench/beats.py): the harmonic change
    # is the surer sign, kicks fall on other beats too.
    scores = [
        float(_LOW_WEIGHT * lows[p::beats_per_bar].mean() + changes[p::beats_per_bar].mean())
        for p in range(min(beats_per_bar, len(beats)))
    ]
    return int(np.argmax(scores)) if scores else 0


def analyze_beats(
    y: np.ndarray,
    sr: int,
    *,
    drums: np.ndarray | None = None,
    bass: np.ndarray | None = None,
    beats_per_bar: int = 4,
) -> BeatAnalysis:
    """Tempo, beat grid and downbeats of a track.

    Parameters
    ----------
    y : np.ndarray, shape (samples,) or (channels, samples)
        The track (the mix) at rate ``sr``.
    sr : int
        Its sample rate.
    drums, bass : np.ndarray or None, shape like ``y``
        The separation's drums and bass channels, when there are any: the
        drums' whitened envelopes (full, low and mid band) are added to the
        mix's, the bass's low band to the mix's low band (the backbeat's kicks,
        the octave and the downbeats).
    beats_per_bar : int
        Beats in a bar (default 4).

    Returns
    -------
    BeatAnalysis
        The grid and the track's duration; ``key`` is ``None``: a template key
        estimate's accuracy on real music could not be measured here, and a
        wrong key is worse than none (docs/beats.md).

    Raises
    ------
    AudioFileError
        Empty audio or NaN/inf samples.
    ParameterError
        ``sr`` or ``beats_per_bar`` below 1, the track shorter than two
        seconds (too short to hold a tempo), or a channel of another length
        than the track.
    """
    if int(sr) < 1:
        raise ParameterError(f"sample rate must be positive, got {sr!r}")
    if int(beats_per_bar) < 1:
        raise ParameterError(f"beats per bar must be at least 1, got {beats_per_bar!r}")
    y = validate_audio(y, name="track")
    n = y.shape[1]
    duration = n / sr
    for name, channel in (("drums", drums), ("bass", bass)):
        if channel is not None and np.shape(channel)[-1] != n:
            raise ParameterError(
                f"the {name} channel has {np.shape(channel)[-1]} samples, the track {n}"
            )
    if duration < 2.0:
        raise ParameterError(
            f"track is {duration:.2f} s long: a beat grid needs at least 2 s of audio"
        )
    # One pass over the track, block by block (features.py): the bass chroma is
    # taken with the envelopes though a track too short for two bars needs none.
    mix = stream_features(y, sr, chroma=True)
    full_w, low_w, mid_w = _whiten(mix.full), _whiten(mix.low), _whiten(mix.mid)
    if drums is not None:
        drum_env = stream_features(validate_audio(drums, name="drums channel"), sr, chroma=False)
        full_w = full_w + _whiten(drum_env.full)[: len(full_w)]
        low_w = low_w + _whiten(drum_env.low)[: len(low_w)]
        mid_w = mid_w + _whiten(drum_env.mid)[: len(mid_w)]
    if bass is not None:
        bass_env = stream_features(validate_audio(bass, name="bass channel"), sr, chroma=False)
        low_w = low_w + _whiten(bass_env.low)[: len(low_w)]
    fps = ANALYSIS_SR / HOP
    max_lag = int(2 * 60.0 * fps / 50.0) + 2
    ac_full = autocorrelation(full_w, max_lag)
    ac_low = autocorrelation(low_w, max_lag)
    pulse = full_w + 0.5 * low_w
    bpm, _ = _fine_tempo(pulse, _coarse_tempo(ac_full))
    bpm = _choose_tempo(bpm, full_w, low_w, mid_w, ac_full, ac_low)
    bpm, first_beat = _fine_tempo(pulse, bpm)
    period = 60.0 / bpm
    beats = np.arange(first_beat, duration, period)
    if len(beats) >= 2 * beats_per_bar and mix.chroma is not None:
        changes = _harmonic_change(mix.chroma, BASS_FPS, beats, int(beats_per_bar))
    else:
        changes = np.zeros(len(beats))
    phase = _downbeat_phase(beats, low_w, changes, int(beats_per_bar))
    grid = BeatGrid(bpm=bpm, downbeat=first_beat + phase * period, beats_per_bar=beats_per_bar)
    return BeatAnalysis(grid=grid.normalized(), duration=duration, key=None)
