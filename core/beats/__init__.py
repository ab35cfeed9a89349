"""Beat analysis: tempo, a constant-tempo beat grid, downbeats, and its edits.

Modules
-------
analysis
    :func:`analyze_beats` (audio, optionally the drums and bass channels, to a
    :class:`BeatAnalysis`), :func:`autocorrelation` (of an envelope, at the
    lags a tempo reads), ``DJ_RANGE``.
features
    What the analysis reads of a track, streamed block by block (memory flat in
    the track's length): :func:`stream_features` (:class:`Features`: the onset
    envelopes, the bass chroma), :func:`onset_envelopes`, :func:`mono_pieces`,
    :class:`BankedSTFT`, ``ANALYSIS_SR``, ``HOP``.
filters
    librosa's mel and chroma filter banks in numpy: :func:`mel_filters`,
    :func:`chroma_filters`, :func:`mel_frequencies`.
grid
    :class:`BeatGrid` (bpm, a downbeat, beats per bar; halve, double, set the
    tempo, shift, move a downbeat to the play head), :class:`TapTempo`,
    ``BPM_LIMITS``.
store
    :class:`BeatStore`: the analysis, the user's edit and the hot cues
    (:class:`HotCue`, ``MAX_CUES``) of each track (:class:`BeatRecord`) in a
    sidecar ``<cache>/beats/<audio hash>.json``;
    :func:`audio_hash`, :func:`track_record` (a track's record, stored or analysed
    now).
"""

from __future__ import annotations

from .analysis import BeatAnalysis, analyze_beats
from .grid import BeatGrid, TapTempo
from .store import MAX_CUES, BeatRecord, BeatStore, HotCue, audio_hash, track_record

__all__ = [
    "MAX_CUES",
    "BeatAnalysis",
    "BeatGrid",
    "BeatRecord",
    "BeatStore",
    "HotCue",
    "TapTempo",
    "analyze_beats",
    "audio_hash",
    "track_record",
]
