"""The one status line: the console shows it, OSC ``/status`` sends it.

It starts with the playing track's name and says ``ready`` once the channels play
(before: ``separating N% (STAGE M%)``, N the share of the whole separation done
by the stages' weights :data:`~stemdeck.core.separation.keys.STAGES`, M the
stage's own, or ``verifying the cache``; ``stems N% ready`` while the stems play
as their chunks are separated, N the share of chunks ready; ``original only`` when the separation
failed and the original goes on), ``loading NAME`` while a requested track is
read, then the transport (with the beat grid's tempo, ``128.0 BPM``, once there is
one), levels and
every counter that says something went wrong: xruns, dropped commands, engine
errors, silenced non-finite blocks, recorder overruns and errors, MIDI errors;
then who leads when a leader is chosen (``sync midi 120.00 BPM +0.4 ms``,
``sync jack 126.00 BPM -0.1 ms``: the MIDI clock's or the JACK timebase's tempo
and the play head's phase error) and the MIDI clock sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stemdeck.core.separation.keys import STAGES

from .loader_base import STEMS_STAGE

if TYPE_CHECKING:  # the OSC server's, imported once the audio runs (daemon/osc/__init__.py)
    from .osc import Counters

__all__ = ["Status", "format_status"]


@dataclass(frozen=True)
class Status:
    """Everything the status line shows, gathered by the daemon."""

    track: str
    playing: bool
    position: float  # seconds
    length: float  # seconds
    progress: tuple[str, float] | None  # (stage, fraction) until the channels play
    levels: tuple[tuple[str, float], ...]  # (channel name, dB)
    xruns: int
    drops: int
    slowest_ms: float
    recent_slowest_ms: float | None = None  # the slowest of the last seconds
    engine_errors: int = 0
    nonfinite_blocks: int = 0
    osc_clients: int = 0
    osc: Counters | None = None  # datagrams in, errors, refused, scheduled
    midi: tuple[int, int] | None = None  # messages in, bad
    web: tuple[int, int] | None = None  # WebSocket clients, requests and messages refused
    recorder: tuple[int, str | None] | None = None  # overruns, error
    scheduling: str = ""
    problem: str | None = None  # the last track load's or separation's failure
    loading: str | None = None  # the requested track, being read
    separated: bool = True  # the channels play (False: the original, separation failed)
    gc: tuple[int, float] | None = None  # full collector passes, the longest pass (ms)
    bpm: float | None = None  # the beat grid's tempo (None: no grid yet)
    sync: str = "off"  # who leads (SyncControl.describe): shown unless off
    clock_out: tuple[int, int] | None = None  # MIDI clock ticks sent, late


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def _share(stage: str, fraction: float) -> float:
    """The share of the whole separation done at ``fraction`` of ``stage``."""
    done = 0.0
    for name, weight in STAGES.items():
        if name == stage:
            return done + weight * min(max(fraction, 0.0), 1.0)
        done += weight
    return 0.0  # "starting", or a stage this line does not know


def _stage(stage: str, fraction: float) -> str:
    return f"{stage} {fraction * 100:.0f}%" if stage in STAGES else stage


def format_status(s: Status) -> str:
    """One line, most important first (a narrow console cuts the tail)."""
    if s.progress is None:
        state = "ready" if s.separated else "original only"
    elif s.progress[0] == "verifying":
        state = "verifying the cache"
    elif s.progress[0] == STEMS_STAGE:  # the stems play where ready, the original elsewhere
        state = f"stems {min(max(s.progress[1], 0.0), 1.0) * 100:.0f}% ready"
    else:
        state = f"separating {_share(*s.progress) * 100:.0f}% ({_stage(*s.progress)})"
    if s.loading is not None:
        state += f" | loading {s.loading}"
    tempo = f" {s.bpm:.1f} BPM" if s.bpm is not None else ""
    parts = [
        f"{s.track} {'playing' if s.playing else 'stopped'} "
        f"{_clock(s.position)}/{_clock(s.length)}{tempo} {state}"
    ]
    if s.levels:
        parts.append(
            " ".join(
                f"{name[:6]} {'off' if math.isinf(db) else f'{db:+.0f}'}" for name, db in s.levels
            )
        )
    counters = f"xruns {s.xruns} drops {s.drops} slowest block {s.slowest_ms:.2f} ms"
    if s.recent_slowest_ms is not None:
        counters += f" (last 5 s {s.recent_slowest_ms:.2f} ms)"
    if s.engine_errors:
        counters += f" engine errors {s.engine_errors}"
    if s.nonfinite_blocks:
        counters += f" silenced non-finite blocks {s.nonfinite_blocks}"
    if s.gc is not None:
        counters += f" gc passes max {s.gc[1]:.1f} ms ({s.gc[0]} full)"
    parts.append(counters)
    if s.recorder is not None:
        overruns, error = s.recorder
        parts.append(f"rec {error}" if error else f"rec overruns {overruns}")
        if error and overruns:
            parts[-1] += f" overruns {overruns}"
    if s.midi is not None:
        parts.append(f"midi {s.midi[0]} in {s.midi[1]} bad")
    if s.sync != "off":
        parts.append(f"sync {s.sync}")
    if s.clock_out is not None:
        parts.append(f"clock out {s.clock_out[0]} ticks {s.clock_out[1]} late")
    osc = f"osc clients {s.osc_clients}"
    if s.osc is not None:
        c = s.osc
        osc += f" in {c.received} errors {c.errors} refused {c.refused} scheduled {c.scheduled}"
    parts.append(osc)
    if s.web is not None:
        parts.append(f"web clients {s.web[0]} refused {s.web[1]}")
    if s.scheduling:
        parts.append(s.scheduling)
    if s.problem:
        parts.append(f"problem: {s.problem}")
    return " | ".join(parts)
