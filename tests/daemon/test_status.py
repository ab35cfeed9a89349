"""The one status line (console and OSC /status)."""

import json
import math
import re
from dataclasses import replace
from pathlib import Path

from stemdeck.core.separation.keys import STAGES
from stemdeck.daemon import web
from stemdeck.daemon.osc import Counters
from stemdeck.daemon.status import Status, format_status

BASE = Status(
    track="my song",
    playing=True,
    position=75.25,
    length=200.0,
    progress=None,
    levels=(("drums", 0.0), ("bass", -math.inf), ("vocals", -6.4)),
    xruns=2,
    drops=1,
    slowest_ms=0.42,
    osc_clients=3,
    scheduling="SCHED_FIFO 70, memory locked",
)


def test_everything_on_one_line() -> None:
    assert format_status(BASE) == (
        "my song playing 1:15.2/3:20.0 ready | drums +0 bass off vocals -6 | "
        "xruns 2 drops 1 slowest block 0.42 ms | osc clients 3 | SCHED_FIFO 70, memory locked"
    )


def test_problems_are_shown() -> None:
    line = format_status(
        replace(
            BASE,
            progress=("nmf", 0.5),
            playing=False,
            engine_errors=4,
            nonfinite_blocks=1,
            recorder=(7, None),
            midi=(10, 2),
            problem="file vanished",
        )
    )
    # The share of the whole separation (stft 5% + half of nmf's 55%), then the stage's own.
    assert line.startswith("my song stopped 1:15.2/3:20.0 separating 32% (nmf 50%) | ")
    assert "engine errors 4 silenced non-finite blocks 1" in line
    recent = format_status(replace(BASE, recent_slowest_ms=1.5))
    assert "xruns 2 drops 1 slowest block 0.42 ms (last 5 s 1.50 ms) |" in recent
    assert "| rec overruns 7 |" in line and "| midi 10 in 2 bad |" in line
    assert line.endswith("| problem: file vanished")
    assert "verifying the cache" in format_status(replace(BASE, progress=("verifying", 0)))
    gave_up = format_status(replace(BASE, separated=False, problem="separation failed: boom"))
    assert gave_up.startswith("my song playing 1:15.2/3:20.0 original only | ")
    assert gave_up.endswith("| problem: separation failed: boom")


def test_osc_counters_are_shown() -> None:
    line = format_status(
        replace(BASE, osc=Counters(received=1200, errors=17, refused=5, scheduled=3))
    )
    assert "| osc clients 3 in 1200 errors 17 refused 5 scheduled 3 |" in line


def test_garbage_collector_passes_are_shown() -> None:
    line = format_status(replace(BASE, gc=(3, 0.4567)))
    assert line.split(" | ")[2] == (
        "xruns 2 drops 1 slowest block 0.42 ms gc passes max 0.5 ms (3 full)"
    )


def test_web_clients_are_shown() -> None:
    line = format_status(replace(BASE, osc=Counters(received=1), web=(2, 5)))
    assert "| osc clients 3 in 1 errors 0 refused 0 scheduled 0 | web clients 2 refused 5 |" in line


def test_progress_is_the_share_of_the_whole_separation_not_the_stage() -> None:
    """#21: with only the STFT done the line said ``separating 100%``."""
    stft_done = format_status(replace(BASE, progress=("stft", 1.0)))
    assert stft_done.startswith("my song playing 1:15.2/3:20.0 separating 5% (stft 100%) | ")
    nearly = format_status(replace(BASE, progress=("reconstruct", 0.5)))
    assert nearly.startswith("my song playing 1:15.2/3:20.0 separating 88% (reconstruct 50%) | ")
    starting = format_status(replace(BASE, progress=("starting", 0.0)))
    assert starting.startswith("my song playing 1:15.2/3:20.0 separating 0% (starting) | ")


def test_a_requested_track_being_read_is_shown_beside_the_playing_one() -> None:
    line = format_status(replace(BASE, progress=("nmf", 0.0), loading="next song"))
    assert line.startswith(
        "my song playing 1:15.2/3:20.0 separating 5% (nmf 0%) | loading next song | "
    )


def test_the_page_weighs_the_stages_as_the_status_line() -> None:
    script = Path(web.__file__).parent / "static" / "mixer.js"
    found = re.search(r"const STAGES = (\[.*\]);", script.read_text())
    assert found is not None
    assert dict(json.loads(found.group(1))) == STAGES


def test_stems_playing_as_they_come_show_the_share_ready() -> None:
    line = format_status(replace(BASE, progress=("stems", 0.375)))
    assert line.startswith("my song playing 1:15.2/3:20.0 stems 38% ready | drums +0 ")
