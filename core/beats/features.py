"""The beat analysis's front end: a track's onset envelopes and bass chroma, streamed.

The track (in the daemon, a memory map of the decoded file) is read
:data:`BLOCK_FRAMES` frames at a time, mixed to mono, resampled to
:data:`ANALYSIS_SR` through one soxr stream, and cut into STFT frames whose power
goes through a filter bank a block of frames at a time. No copy of the track, of
its mono mix, of the bass register's mix or of a spectrogram is ever whole: only
what is per frame is (the envelopes, one value per :data:`HOP` samples at
:data:`ANALYSIS_SR`; the bass chroma, 12 values per :data:`BASS_HOP` samples at
:data:`BASS_SR`), so the analysis's memory is flat in the track's length beyond
those (an hour's mono mix alone would be 318 MB, its mel spectrogram 79 MB).

Every piece equals the whole-track computation bit for bit (tests/core/beats/
test_features.py feeds it in pieces of any size against the whole): soxr's stream
gives the samples of one call on the whole signal, the STFT's frames come from a
buffer carried across pieces (padded by reflection at both ends, as ``np.pad``
does), and each bank product is taken on the same blocks of frames, from frame 0,
whatever the pieces (how BLAS splits a product's sums depends on its width).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soxr

from ..audiofile.samples import validate_audio
from ..errors import ParameterError
from .filters import chroma_filters, mel_filters, mel_frequencies

__all__ = [
    "ANALYSIS_SR",
    "BASS_FPS",
    "BLOCK_FRAMES",
    "HOP",
    "BankedSTFT",
    "Features",
    "mono_pieces",
    "onset_envelopes",
    "stream_features",
]

#: Rate the analysis runs at (Hz): onsets need nothing above 11 kHz.
ANALYSIS_SR = 22050
#: Samples per envelope frame at :data:`ANALYSIS_SR` (about 11.6 ms).
HOP = 256
_N_FFT = 1024
_N_MELS = 64
_MEL_FMAX = 8000.0
_LOW_HZ = 200.0  # the low band's top: kick drums and bass notes
# The mid band: a snare's noise and crack, above the bass and the kick's body and
# below most of the hi-hats' energy.
_MID_HZ = (1000.0, 5000.0)
BASS_SR = 5512  # the bass register's chroma needs nothing above 2.7 kHz
_BASS_N_FFT = 2048
BASS_HOP = 256
#: Frames a second of the bass chroma.
BASS_FPS = BASS_SR / BASS_HOP
#: Frames of the track read, mixed and resampled at a time: 1 MiB of the mono mix
#: at 44.1 kHz; any size gives the same samples (soxr's stream is seamless).
BLOCK_FRAMES = 1 << 18
_FFT_FRAMES = 256  # frames transformed at a time inside a bank block: bounds the copies


def mono_pieces(y: np.ndarray, sr: int, *, block: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """The channels' mean at :data:`ANALYSIS_SR` (float32), in pieces.

    ``block`` frames of ``y`` at a time are mixed and go through one soxr stream
    (VHQ), so the pieces put end to end are the samples of the whole track's
    mean resampled at once, with no copy of the track nor of its mix.

    Parameters
    ----------
    y : np.ndarray, shape (channels, samples), float32
        The track (validated: :func:`~stemdeck.core.audiofile.samples.validate_audio`).
    sr : int
        Its sample rate.
    block : int
        Frames of ``y`` read at a time.

    Raises
    ------
    ParameterError
        ``sr`` not positive.
    """
    n = y.shape[1]
    if sr == ANALYSIS_SR:
        for a in range(0, n, block):
            yield np.ascontiguousarray(y[:, a : a + block].mean(axis=0))
        return
    if sr <= 0:
        raise ParameterError(f"sample rates must be positive, got {sr} -> {ANALYSIS_SR}")
    stream = soxr.ResampleStream(sr, ANALYSIS_SR, 1, dtype="float32", quality="VHQ")
    for a in range(0, n, block):
        yield stream.resample_chunk(y[:, a : a + block].mean(axis=0), last=a + block >= n)


class BankedSTFT:
    """``bank @ |STFT|**2`` (bank rows, frames) of a mono signal fed in pieces.

    Hann window of ``n_fft``, frames centred every ``hop`` samples, the signal
    padded by reflection at both ends (zeros around a signal of ``n_fft // 2``
    samples or fewer). numpy's FFT: librosa's ``stft`` spends about two seconds
    compiling on its first call, which a first grid cannot afford.

    :meth:`process` takes the next piece and returns the frames it completed,
    :meth:`flush` the last ones; put end to end they are the whole signal's, the
    same whatever the pieces. Only a block of frames is ever held: each block's
    power goes through ``bank`` at once (``(2 << 20) // n_fft`` frames, from frame
    0, so the products are the same as over the whole signal's blocks).

    Parameters
    ----------
    n_fft, hop : int
        Window length and hop in samples.
    bank : np.ndarray, shape (rows, n_fft // 2 + 1), float32
        The filter bank.
    """

    def __init__(self, n_fft: int, hop: int, bank: np.ndarray) -> None:
        self.n_fft = n_fft
        self.hop = hop
        self.bank = bank
        self.pad = n_fft // 2
        self.step = max(1, (2 << 20) // n_fft)  # frames a block: bounds the temporaries
        self._window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
        # The signal's start until it is longer than the padding (its reflection
        # needs it), then None; the padded signal from the next frame's first sample;
        # the signal's last pad + 1 samples (the end's reflection).
        self._head: np.ndarray | None = np.empty(0, np.float32)
        self._buffer = np.empty(0, np.float32)
        self._tail = np.empty(0, np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        """The frames that ``x``, the signal's next samples, completes."""
        x = np.asarray(x, dtype=np.float32)
        if len(x) == 0:
            return self._empty()
        keep = self.pad + 1
        self._tail = np.concatenate([self._tail[-keep:], x[-keep:]])[-keep:]
        if self._head is not None:
            self._head = np.concatenate([self._head, x])
            if len(self._head) <= self.pad:
                return self._empty()
            x = np.concatenate([self._head[1 : self.pad + 1][::-1], self._head])
            self._head = None
        self._buffer = np.concatenate([self._buffer, x])
        return self._drain(last=False)

    def flush(self) -> np.ndarray:
        """The signal has ended: its last frames (those over its end's padding)."""
        if self._head is not None:  # too short to reflect: zeros around it
            self._buffer = np.pad(self._head, self.pad)
            self._head = None
        else:
            self._buffer = np.concatenate([self._buffer, self._tail[:-1][::-1]])
        return self._drain(last=True)

    def _empty(self) -> np.ndarray:
        return np.empty((self.bank.shape[0], 0), np.float32)

    def _drain(self, *, last: bool) -> np.ndarray:
        """Whole blocks of frames in the buffer (with ``last``, the rest too)."""
        n_fft, hop = self.n_fft, self.hop
        out = []
        while len(self._buffer) >= n_fft:
            ready = 1 + (len(self._buffer) - n_fft) // hop
            if ready < self.step and not last:
                break
            count = min(ready, self.step)
            power = np.empty((n_fft // 2 + 1, count), np.float32)
            for j in range(0, count, _FFT_FRAMES):
                m = min(_FFT_FRAMES, count - j)
                x = self._buffer[j * hop : (j + m - 1) * hop + n_fft]
                frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
                power[:, j : j + m] = np.abs(np.fft.rfft(frames * self._window, axis=1)).T
            np.multiply(power, power, out=power)
            out.append(self.bank @ power)
            self._buffer = self._buffer[count * hop :]
        if not out:
            return self._empty()
        return out[0] if len(out) == 1 else np.concatenate(out, axis=1)


def _row_mean(a: np.ndarray) -> np.ndarray:
    """``a.mean(axis=0)`` of a float32 (rows, frames) as numpy takes it for a wide
    array (the rows added in order), for any width: for one frame numpy sums the
    column pairwise, which rounds otherwise."""
    acc = a[0].copy()
    for row in a[1:]:
        acc += row
    return np.true_divide(acc, np.intp(a.shape[0]), out=acc, casting="unsafe")


class _Flux:
    """Spectral flux of the log-mel power, block by block: full, low and mid band."""

    def __init__(self) -> None:
        centres = mel_frequencies(_N_MELS + 2, _MEL_FMAX)[1:-1]
        self.low = centres < _LOW_HZ
        self.mid = (centres >= _MID_HZ[0]) & (centres < _MID_HZ[1])
        self._last: np.ndarray | None = None  # the previous block's last frame
        self.full_parts: list[np.ndarray] = []
        self.low_parts: list[np.ndarray] = []
        self.mid_parts: list[np.ndarray] = []

    def add(self, power: np.ndarray) -> None:
        if power.shape[1] == 0:
            return
        mel = np.log1p(1000.0 * power)
        both = mel if self._last is None else np.concatenate([self._last, mel], axis=1)
        flux = np.maximum(both[:, 1:] - both[:, :-1], 0.0)
        if self._last is None:  # the first frame has no flux
            flux = np.concatenate([np.zeros((_N_MELS, 1), flux.dtype), flux], axis=1)
        self._last = mel[:, -1:]
        self.full_parts.append(_row_mean(flux))
        self.low_parts.append(_row_mean(flux[self.low]))
        self.mid_parts.append(_row_mean(flux[self.mid]))

    def envelopes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        full = np.concatenate(self.full_parts).astype(float)
        low = np.concatenate(self.low_parts).astype(float)
        return full, low, np.concatenate(self.mid_parts).astype(float)


@dataclass(frozen=True)
class Features:
    """What the analysis reads of a track, per frame.

    Attributes
    ----------
    full, low, mid : np.ndarray, shape (frames,), float64
        Spectral flux of the 64-band log-mel spectrogram (1024-point FFT) over all
        bands, over those below about 200 Hz (kick drums, bass notes) and over
        those from 1 to 5 kHz (snare drums); frame ``i`` is at
        ``i * HOP / ANALYSIS_SR`` seconds.
    chroma : np.ndarray or None, shape (12, frames), float32
        Pitch-class energy of the bass register, :data:`BASS_FPS` frames a second;
        None when not asked for.
    """

    full: np.ndarray
    low: np.ndarray
    mid: np.ndarray
    chroma: np.ndarray | None


def stream_features(y: np.ndarray, sr: int, *, chroma: bool) -> Features:
    """The onset envelopes (and with ``chroma`` the bass chroma) of a track, in one
    pass over it, block by block.

    The bass chroma: a long window (0.37 s) resolves semitones down to 40 Hz; the
    chroma weights centre on C3 and fall off within an octave, so the bass line
    and the chords' roots count and a sung melody, which changes on any beat, little.

    Parameters
    ----------
    y : np.ndarray, shape (channels, samples), float32
        The track, validated (:func:`~stemdeck.core.audiofile.samples.validate_audio`).
    sr : int
        Its sample rate.
    chroma : bool
        Whether to compute the bass chroma too.

    Raises
    ------
    ParameterError
        ``sr`` not positive.
    """
    mel = BankedSTFT(_N_FFT, HOP, mel_filters(ANALYSIS_SR, _N_FFT, _N_MELS, _MEL_FMAX))
    flux = _Flux()
    bass: BankedSTFT | None = None
    bass_stream = None
    chroma_parts: list[np.ndarray] = []
    if chroma:
        fb = chroma_filters(BASS_SR, _BASS_N_FFT, ctroct=3.0, octwidth=1.0)
        bass = BankedSTFT(_BASS_N_FFT, BASS_HOP, fb)
        bass_stream = soxr.ResampleStream(ANALYSIS_SR, BASS_SR, 1, dtype="float32", quality="VHQ")
    pieces = mono_pieces(y, sr)
    piece = next(pieces, None)
    while piece is not None:
        following = next(pieces, None)
        flux.add(mel.process(piece))
        if bass is not None and bass_stream is not None:
            low = bass_stream.resample_chunk(piece, last=following is None)
            chroma_parts.append(bass.process(low))
        piece = following
    flux.add(mel.flush())
    full, low_band, mid_band = flux.envelopes()
    if bass is None:
        return Features(full, low_band, mid_band, None)
    chroma_parts.append(bass.flush())
    return Features(full, low_band, mid_band, np.concatenate(chroma_parts, axis=1))


def onset_envelopes(y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """The full-band and low-band onset envelopes of ``y``, one value a :data:`HOP`.

    Parameters
    ----------
    y : np.ndarray, shape (samples,) or (channels, samples)
        Audio at rate ``sr``.
    sr : int
        Its sample rate.

    Returns
    -------
    full, low : np.ndarray, shape (frames,)
        Spectral flux of the log-mel spectrogram over all bands, and over those
        below about 200 Hz; frame ``i`` is at ``i * HOP / ANALYSIS_SR`` seconds.

    Raises
    ------
    AudioFileError
        Empty audio or NaN/inf samples.
    ParameterError
        ``sr`` not positive.
    """
    features = stream_features(validate_audio(y, name="track"), sr, chroma=False)
    return features.full, features.low
