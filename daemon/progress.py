"""A one-line progress bar on a terminal (stderr); silent when not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from stemdeck.core.separation.separate import STAGES


class ProgressBar:
    """Shows the overall fraction of a separation from per-stage reports.

    Call the instance as ``bar(stage, fraction)``; it redraws at most 20 times a
    second and only when the stream is a terminal.
    """

    def __init__(self, label: str, *, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.width = width
        self._last_draw = 0.0
        self._done: dict[str, float] = {}
        self._shown = False

    def __call__(self, stage: str, fraction: float) -> None:
        self._done[stage] = max(self._done.get(stage, 0.0), min(max(fraction, 0.0), 1.0))
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.05 and fraction < 1.0:
            return
        self._last_draw = now
        if stage in STAGES:
            total = sum(STAGES.get(s, 0.0) * f for s, f in self._done.items())
            total = min(total / sum(STAGES.values()), 1.0)
        else:  # a step of its own (encoding): its fraction is the whole
            total = self._done[stage]
        filled = round(total * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {total * 100:3.0f}% {stage:<12}")
        self.stream.flush()
        self._shown = True

    def close(self, message: str | None = None) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r" + " " * (len(self.label) + self.width + 24) + "\r")
            self.stream.flush()
        if message:
            print(message, file=self.stream)
