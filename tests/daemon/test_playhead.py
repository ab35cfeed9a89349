"""The heard play head: the mixer's position less what is still to be heard."""

from __future__ import annotations

import numpy as np
import pytest

from stemdeck.core.mixer.commands import Track
from stemdeck.daemon.playhead import HeardPlayHead


class Engine:
    def __init__(self) -> None:
        self.track: Track | None = Track(np.zeros((1, 2, 48000), np.float32), 48000, ("mix",))
        self.position = 0
        self.rate = 1.0
        self.rolling = True

    def seconds(self, frames: int) -> float:
        return frames / 48000


def test_the_output_latency_is_read_at_every_reading() -> None:
    """A sample is heard half a block (on average) and the output's latency after the
    mixer's position says; the latency is asked again each time (a reopened stream
    may have another)."""
    engine = Engine()
    latency = [0.010]
    now = [1.0]
    head = HeardPlayHead(engine, block_s=0.004, latency=lambda: latency[0], clock=lambda: now[0])
    engine.position = 24000  # 0.5 s
    line = head.sample()
    assert line.s_ref == pytest.approx(0.5 - 0.002 - 0.010, abs=1e-12)
    assert line.time_of(0.5) == pytest.approx(1.0 + 0.012, abs=1e-12)
    latency[0] = 0.050  # 40 ms more: a jump of the line, to the new latency
    engine.position = 24048
    now[0] = 1.001
    line = head.sample()
    assert line.jumps == 2
    assert line.s_ref == pytest.approx(0.501 - 0.002 - 0.050, abs=1e-12)
