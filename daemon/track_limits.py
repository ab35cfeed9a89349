"""How long a track may be, and how much memory loading and separating it takes.

A track is checked from its header (frames x channels, :func:`probe_audio`), before
any of it is decoded: a one-hour silent FLAC is 600 KiB on disk and gigabytes once
decoded and separated. :class:`TrackLimits` refuses it with one reason when it is
longer than ``serve --max-minutes`` or needs more memory than the machine can give
now (``MemAvailable`` in ``/proc/meminfo``).

The memory a load needs, in bytes of the decoded track (float32, at most two
channels, at its own rate):

- the daemon: the decoded track, its copy in shared memory for the worker, the
  original, and the channels at the source rate (a memory map of the cache: the
  mixer's read head converts the rate as it reads); only a rate the read head
  does not take (``plays_at``: outside 8..192 kHz) adds the channels resampled
  to the engine's rate;
- the separation worker's working set, measured with ``separate()`` on 30 s and
  60 s of stereo noise at 44.1 kHz, no cache (peak RSS over the process's RSS
  before, per byte of decoded audio): stems mode 19 to 22, components mode (the
  default preset, 8 components) 30 to 31. :data:`WORKING_SET` rounds up. With a
  cache the worker separates in chunks (``separation_worker.py``): its working set
  is that of two chunks whatever the track's length, :data:`CHUNKED_WORKING_SET`
  (``bench/memory.py`` measures it).

A stem file is not separated. With a cache folder its stems are decoded at its own
rate straight into a memory map of a scratch file there, and their mix beside them
(page cache: the stems' size and the mix's, once); without one, at the engine's rate
into the heap (about twice their size while decoding).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.params import plays_at

if TYPE_CHECKING:  # the CLI's parser imports this module: no numpy for --help
    from stemdeck.core.separation.keys import Mode

__all__ = ["CHUNKED_WORKING_SET", "MAX_MINUTES", "WORKING_SET", "TrackLimits", "mem_available"]

#: Default longest track, in minutes: a two-hour set, the longest a DJ set commonly runs.
MAX_MINUTES = 120.0
#: The separation worker's peak memory per byte of the decoded track (measured, above).
WORKING_SET: dict[str, float] = {"stems": 22.0, "components": 32.0}
#: The separation worker's peak memory in bytes when it separates in chunks into the
#: cache: bounded, whatever the track's length (the issue's target for the worker).
CHUNKED_WORKING_SET = 600 * 2**20
_MEMINFO = Path("/proc/meminfo")


def mem_available(meminfo: Path = _MEMINFO) -> int | None:
    """Bytes the machine can give without swapping (``MemAvailable``), or None
    where ``/proc/meminfo`` does not say (then no memory check is made)."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            try:
                return int(fields[1]) * 1024  # kB
            except (IndexError, ValueError):
                return None
    return None


def _minutes(m: float) -> str:
    shown = f"{m:.0f}" if m >= 10 else f"{m:.2g}"
    return f"{shown} minute" if shown == "1" else f"{shown} minutes"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass(frozen=True)
class TrackLimits:
    """The longest track and the memory check of ``/track/load`` and ``serve``.

    Parameters
    ----------
    max_minutes : float
        Longest track accepted (``serve --max-minutes``).
    mode : {"stems", "components"}
        The separation's mode (its working set).
    available : callable
        Bytes of memory the machine can give now, or None when unknown
        (default :func:`mem_available`; a test passes its own).
    chunked : bool
        The worker separates in chunks (there is a cache): its working set is
        :data:`CHUNKED_WORKING_SET`, not a multiple of the track; a stem file is
        mapped in the cache folder.
    """

    max_minutes: float = MAX_MINUTES
    mode: Mode = "stems"
    available: Callable[[], int | None] = mem_available
    chunked: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ParameterError(
                f"--max-minutes must be a number of minutes above 0, got {self.max_minutes!r}"
            )

    def needed(
        self, frames: int, channels: int, sr: int, engine_sr: int, *, outputs: int, stems: int
    ) -> int:
        """Bytes loading (and separating) a track of ``frames`` x ``channels`` at
        ``sr`` takes, played at ``engine_sr`` on ``outputs`` channels; ``stems`` > 0
        for a stem file of that many stems (not separated)."""
        ch = min(max(channels, 1), 2)
        at_engine = frames * engine_sr / sr * ch * 4
        decoded = frames * ch * 4
        if stems and self.chunked and plays_at(sr):
            return int((stems + 1) * decoded)  # mapped at its own rate, and the mix
        if stems:
            return int(2 * stems * at_engine)
        # The mixer's read head converts a rate it plays (plays_at) as it reads:
        # no copy of the channels at the engine's rate then.
        resampled = 0 if sr == engine_sr or plays_at(sr) else outputs * at_engine
        worker = CHUNKED_WORKING_SET if self.chunked else decoded * WORKING_SET[self.mode]
        return int(decoded * 2 + worker + at_engine + resampled)

    def check(
        self,
        frames: int | None,
        channels: int,
        sr: int,
        engine_sr: int,
        *,
        outputs: int,
        stems: int = 0,
    ) -> None:
        """Refuse a track longer than :attr:`max_minutes` or needing more memory than
        is available. ``frames`` None (a header that declares no duration) passes:
        such a file is checked as it decodes, and running out of memory then is one
        clear error.

        Raises
        ------
        ParameterError
            Why the track is refused.
        """
        if frames is None or sr <= 0:
            return
        minutes = frames / sr / 60
        if minutes > self.max_minutes:
            raise ParameterError(
                f"{_minutes(minutes)} long; at most {self.max_minutes:g} (serve --max-minutes)"
            )
        free = self.available()
        need = self.needed(frames, channels, sr, engine_sr, outputs=outputs, stems=stems)
        if free is not None and need > free:
            what = "load" if stems else "load and separate"
            raise ParameterError(
                f"it needs about {_gib(need)} of memory to {what} "
                f"({_minutes(minutes)} of audio); {_gib(free)} available"
            )
