"""The one progress display of the command line: a line on stderr, redrawn in place.

``separate``, ``plot`` and the stem-file writer show a bar of a separation's
stages (call the instance as ``line(stage, fraction)``); ``prep`` shows a line of
its own making (:meth:`ProgressLine.show`). On a terminal the line is redrawn in
place; elsewhere it is silent, or, with ``log_interval``, written as a line of
its own every so often, so a log of a long run shows it moving.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from stemdeck.core.separation.keys import STAGES

__all__ = ["ProgressLine"]


class ProgressLine:
    """One line of progress.

    Parameters
    ----------
    label : str
        What the stage bar is for (``separating song``); :meth:`show` does not use it.
    stream : TextIO, optional
        Where the line goes (default ``sys.stderr``).
    interval : float
        Least seconds between two redraws on a terminal; a stage that reaches 1,
        or ``show(..., force=True)``, is drawn at once.
    log_interval : float or None
        When the stream is not a terminal: seconds between two lines written, or
        None (the default) to write nothing there.
    enabled : bool
        False draws nothing anywhere.
    width : int
        Characters of the stage bar.
    """

    def __init__(
        self,
        label: str = "",
        *,
        stream: TextIO | None = None,
        interval: float = 0.05,
        log_interval: float | None = None,
        enabled: bool = True,
        width: int = 30,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = enabled and (self.tty or log_interval is not None)
        self.interval = interval if self.tty else (log_interval or 0.0)
        self.width = width
        self._last = -math.inf
        self._drawn = 0  # characters of the line on the terminal now
        self._done: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        """A separation stage's report (``separate(progress=...)``): the bar of the
        whole, each stage weighted by its share (``STAGES``); a step of its own
        (``encoding``) is the whole."""
        self._done[stage] = max(self._done.get(stage, 0.0), min(max(fraction, 0.0), 1.0))
        if not self._due(force=fraction >= 1.0):
            return
        if stage in STAGES:
            total = sum(STAGES.get(s, 0.0) * f for s, f in self._done.items())
            total = min(total / sum(STAGES.values()), 1.0)
        else:
            total = self._done[stage]
        filled = round(total * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self._draw(f"{self.label} [{bar}] {total * 100:3.0f}% {stage:<12}")

    def show(self, text: str, *, force: bool = False) -> None:
        """Draw ``text`` as the line, unless the last one is too recent and not ``force``."""
        if self._due(force=force):
            self._draw(text)

    def close(self) -> None:
        """Clear the line from the terminal."""
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0

    def _due(self, *, force: bool) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return False
        self._last = now
        return True

    def _draw(self, text: str) -> None:
        if self.tty:
            pad = max(0, self._drawn - len(text))  # what is left of a longer line
            self.stream.write(f"\r{text}{' ' * pad}")
            self._drawn = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
