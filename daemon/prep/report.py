"""What a library prep tells: the progress line while it runs, the closing lines and
the JSON report at the end.

Paths are shown by :func:`~stemdeck.core.audiofile.files.printable_name`: a name
that is not UTF-8 has each byte that is not written ``\\xNN``, and gets one note
(:data:`NOT_UTF8`) in the report and the closing lines, so no encoder (the
terminal's, the report's) ever meets it raw.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stemdeck.core.audiofile.files import printable_name
from stemdeck.core.errors import AudioFileError

__all__ = ["NOT_UTF8", "PrepSummary", "Record", "Tally", "summary_lines", "write_report"]

#: The note of a track whose path is not UTF-8 (:func:`not_utf8`).
NOT_UTF8 = (
    "its name is not UTF-8: a byte that is not is shown as \\xNN, "
    "and is _ in the names of its output files"
)


def not_utf8(path: str) -> bool:
    """True when ``path`` holds bytes that are not UTF-8 (Python's surrogate escapes)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@dataclass
class Record:
    """One line of the report: what happened to one track."""

    source: str
    hash: str = ""
    duration: float = 0.0
    seconds: float = 0.0
    worker: str = ""
    outcome: str = ""  # separated, cached, up-to-date, stem-file, failed, cancelled
    error: str | None = None
    index: int = -1  # the track's place in the job, for the report's order
    finished: float = 0.0  # seconds from the start of the job to this record
    # The beat grid in force: bpm, downbeat, beats_per_bar, key (None: not known here)
    beats: dict[str, Any] | None = None

    @property
    def note(self) -> str | None:
        """:data:`NOT_UTF8` for a source whose name is not UTF-8, else None."""
        return NOT_UTF8 if not_utf8(self.source) else None

    def as_dict(self) -> dict[str, Any]:
        """The record as the report writes it: every string valid UTF-8."""
        out: dict[str, Any] = {
            "source": printable_name(self.source),
            "hash": self.hash,
            "duration": round(self.duration, 3),
            "seconds": round(self.seconds, 3),
            "worker": self.worker,
            "outcome": self.outcome,
            "finished": round(self.finished, 3),
            "beats": self.beats,
        }
        if self.error is not None:
            out["error"] = printable_name(self.error)
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclass
class PrepSummary:
    """Every track's record, the paths that could not be searched, and the run's figures."""

    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0
    interrupted: bool = False

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.records)

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if r.outcome == "failed"]


@dataclass
class Tally:
    """The job so far, for its progress line: tracks, audio hours, rate, ETA, failures."""

    total: int
    audio_total: float
    done: int = 0
    failed: int = 0
    audio_done: float = 0.0
    audio_separated: float = 0.0  # audio that went through a worker: the rate
    t0: float = field(default_factory=time.monotonic)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.t0, 1e-9)
        rate = self.done / elapsed * 60.0
        left = self.audio_total - self.audio_done
        speed = self.audio_separated / elapsed  # audio seconds per second
        eta = _minutes(left / speed) if speed > 0 and self.audio_separated > 0 else "--"
        return (
            f"prep {self.done}/{self.total} tracks | "
            f"{self.audio_done / 3600:.2f}/{self.audio_total / 3600:.2f} h audio | "
            f"{rate:.1f} tracks/min | ETA {eta} | {self.failed} failed"
        )


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def write_report(path: str | None, summary: PrepSummary) -> None:
    """``--report FILE.json``: one record per track in the order found; atomic.

    Raises
    ------
    AudioFileError
        The file cannot be written.
    """
    if not path:
        return
    target = Path(path).expanduser()
    doc = {
        "tracks": [r.as_dict() for r in sorted(summary.records, key=lambda r: r.index)],
        "problems": [printable_name(p) for p in summary.problems],
        "seconds": round(summary.seconds, 3),
        "workers": summary.workers,
        "interrupted": summary.interrupted,
    }
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AudioFileError(
            f"cannot write the report {str(target)!r}: {exc.strerror or exc}"
        ) from None


def summary_lines(summary: PrepSummary) -> list[str]:
    """The closing lines: counts, then one line per failure (a track, or a path that
    could not be searched), then one note per track whose name is not UTF-8."""
    n = len(summary.records)
    audio = sum(r.duration for r in summary.records)
    rate = n / summary.seconds * 60 if summary.seconds > 0 else math.nan
    lines = [
        f"prep: {n} tracks in {summary.seconds:.1f} s ({rate:.1f} tracks/min, "
        f"{audio / 3600:.2f} h audio): {summary.count('separated')} separated, "
        f"{summary.count('cached')} cached, {summary.count('up-to-date')} up to date, "
        f"{summary.count('stem-file')} stem files, {len(summary.failed)} failed"
    ]
    lines += [
        f"failed: {printable_name(r.source)}: {printable_name(r.error or '')}"
        for r in summary.failed
    ]
    lines += [f"failed: {printable_name(problem)}" for problem in summary.problems]
    ordered = sorted(summary.records, key=lambda r: r.index)
    lines += [f"note: {printable_name(r.source)}: {r.note}" for r in ordered if r.note]
    return lines
