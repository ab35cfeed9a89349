"""The built-in demo track with its four true stems.

About 30 s at 120 BPM in A minor: a drum kit, a bass line, a chord pad with an
arpeggio, and a voice-like lead (a glottal pulse train through vowel formants,
with vibrato and legato phrasing). The mixture is exactly the sum of the stems:
ground truth for tests, benchmarks and the quality table. It is never used to
train the stems model.
"""

from __future__ import annotations

from dataclasses import replace

from .songs import STEM_NAMES, Song, SongSpec, render_song

__all__ = ["STEM_NAMES", "DemoTrack", "demo_track"]

DemoTrack = Song
DEMO_NAME = "stemdeck-demo"


def demo_track(*, sr: int = 44100, seconds: float = 30.0) -> Song:
    """Synthesize the demo track and its true stems (same call, same audio, bit for bit).

    Parameters
    ----------
    sr : int
        Sample rate.
    seconds : float
        Length, rounded down to whole bars (2 s at 120 BPM), at least one bar; the
        music repeats with the same four-bar phrases.
    """
    bars = max(1, int(seconds / 2.0))
    return render_song(replace(SongSpec(), bars=bars), sr=sr, name=DEMO_NAME)
