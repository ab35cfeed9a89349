"""Loops and jumps in beats over OSC (issue 23): ``/transport/loop/beats``,
``/transport/loop/halve``, ``/transport/loop/double``, ``/transport/beatjump`` and
``/transport/roll``; exact regions, exact errors, on the grid at any rate, and a roll
that returns to where the head would have been.

In-process on the real registry and mixer (``tests/osc_host.py``, 8 kHz, blocks of
64); strip 1 reads its own frame index, so the output says where the head read.
"""

from __future__ import annotations

import numpy as np
import pytest
from osc_host import BLOCK, PROBE_GRID, SENDER, SR, FakeHost, probe_host, render

from stemdeck.core.mixer.commands import Rate
from stemdeck.daemon.osc import OscControl

GRID = PROBE_GRID  # a beat every 0.5 s (4000 frames) from 0.3 s
BEAT = 4000


def ask(control: OscControl, address: str, *args: object) -> list[tuple[str, list]]:
    return [(a, list(v)) for a, v in control.handle([(address, list(args))], SENDER)]


@pytest.fixture
def host() -> FakeHost:
    host = probe_host()
    render(host, 100)  # head at 6400 frames (0.8 s): 1.0 beat past the first downbeat
    return host


def test_a_loop_in_beats_starts_at_the_head_with_quantize_off(host: FakeHost) -> None:
    control = OscControl(host)
    head = host.engine.position
    assert ask(control, "/transport/loop/beats", 2) == []
    render(host, 1)
    assert host.engine.loop == (head, head + 2 * BEAT)


@pytest.mark.parametrize(
    ("beats", "start"),
    [(4, 6400), (1, 6400), (0.5, 6400), (0.25, 6400), (3.0, 6400)],
)
def test_quantized_a_loop_starts_on_the_current_beat(
    host: FakeHost, beats: float, start: int
) -> None:
    control = OscControl(host)
    render(host, 10)  # head 7040: inside the beat from 6400 (0.8 s)
    ask(control, "/quantize", "beat")
    assert ask(control, "/transport/loop/beats", beats) == []
    render(host, 1)
    assert host.engine.loop == (start, start + round(beats * BEAT))
    assert host.engine.position > start  # the head plays on inside it: no jump


def test_a_short_quantized_loop_starts_on_its_own_subdivision(host: FakeHost) -> None:
    control = OscControl(host)
    render(host, 30)  # head 8320: 0.48 beat past 6400
    ask(control, "/quantize", "bar")
    assert ask(control, "/transport/loop/beats", 0.125) == []
    render(host, 1)
    # 1/8-beat steps (500 frames) from the downbeat at 2400: 7900 is the one at or
    # before 8320.
    assert host.engine.loop == (7900, 8400)


@pytest.mark.parametrize("rate", [0.92, 1.08])
def test_a_loop_in_beats_stays_on_the_grid_at_any_rate(rate: float) -> None:
    host = probe_host()
    control = OscControl(host)
    host.engine.post(Rate(rate))
    render(host, 100)
    ask(control, "/quantize", "beat")
    ask(control, "/transport/loop/beats", 1)
    out = render(host, 400)[:, 0]
    falling = np.diff(out) < 0
    wraps = np.flatnonzero(falling[1:] & ~falling[:-1]) + 2  # each wrap's first sample
    assert len(wraps) >= 5
    loop = host.engine.loop
    assert loop is not None
    start, end = loop
    assert end - start == BEAT and (start - 2400) % BEAT == 0  # on the beat grid
    # Every pass lasts BEAT / rate output samples (to one), and they add up with no drift.
    passes = np.diff(wraps)
    assert np.all(np.abs(passes - BEAT / rate) <= 1)
    assert abs((wraps[-1] - wraps[0]) - len(passes) * BEAT / rate) <= 1


def test_halve_and_double_keep_the_start(host: FakeHost) -> None:
    control = OscControl(host)
    ask(control, "/quantize", "beat")
    ask(control, "/transport/loop/beats", 4)
    render(host, 1)
    assert host.engine.loop == (6400, 6400 + 4 * BEAT)
    assert ask(control, "/transport/loop/halve") == []
    render(host, 1)
    assert host.engine.loop == (6400, 6400 + 2 * BEAT)
    assert ask(control, "/transport/loop/double", 1) == []  # a button's press
    render(host, 1)
    assert host.engine.loop == (6400, 6400 + 4 * BEAT)
    assert ask(control, "/transport/loop/double", 0) == []  # its release: nothing
    render(host, 1)
    assert host.engine.loop == (6400, 6400 + 4 * BEAT)


@pytest.mark.parametrize(
    ("address", "args", "error"),
    [
        ("/transport/loop/halve", [], "/transport/loop/halve: no loop is set"),
        ("/transport/loop/double", [], "/transport/loop/double: no loop is set"),
        (
            "/transport/loop/beats",
            [0],
            "/transport/loop/beats must be 1/32 to 64 beats, got 0",
        ),
        (
            "/transport/loop/beats",
            [65.0],
            "/transport/loop/beats must be 1/32 to 64 beats, got 65",
        ),
        ("/transport/loop/beats", [], "/transport/loop/beats takes a number, got []"),
        ("/transport/loop/beats", ["4"], "/transport/loop/beats takes a number, got ['4']"),
        ("/transport/loop/beats", [float("nan")], "/transport/loop/beats got nan"),
        (
            "/transport/loop/beats",
            [32],
            "/transport/loop/beats: 32 beats from 0.800 s end past the end of the track (8.000 s)",
        ),
        (
            "/transport/roll",
            [100],
            "/transport/roll must be 1/32 to 64 beats (0 ends a roll), got 100",
        ),
        (
            "/transport/beatjump",
            [0],
            "/transport/beatjump takes beats, non-zero, within ±1024, got 0",
        ),
        (
            "/transport/beatjump",
            [2000],
            "/transport/beatjump takes beats, non-zero, within ±1024, got 2000",
        ),
    ],
)
def test_bad_input_is_one_exact_error_and_changes_nothing(
    host: FakeHost, address: str, args: list, error: str
) -> None:
    control = OscControl(host)
    head = host.engine.position
    assert ask(control, address, *args) == [("/error", [error])]
    render(host, 1)
    assert host.engine.loop is None and host.engine.position == head + BLOCK


def test_resizing_past_the_limits_is_an_exact_error(host: FakeHost) -> None:
    control = OscControl(host)
    ask(control, "/transport/loop", 6.5, 7.5)
    render(host, 1)
    assert ask(control, "/transport/loop/double") == [
        (
            "/error",
            [
                "/transport/loop/double: the doubled loop would end past the end of the "
                "track (8.500 s > 8.000 s)"
            ],
        )
    ]
    ask(control, "/transport/loop", 1.0, 1.03)
    render(host, 1)
    assert ask(control, "/transport/loop/halve") == [
        (
            "/error",
            ["/transport/loop/halve: the loop is at its shortest (30.0 ms; at least 20 ms)"],
        )
    ]
    assert host.engine.loop == (8000, 8240)


@pytest.mark.parametrize("address", ["/transport/loop/beats", "/transport/roll"])
def test_no_grid_is_the_grids_error(address: str) -> None:
    host = probe_host(grid=False)
    control = OscControl(host)
    assert ask(control, address, 1) == [("/error", [f"{address}: no beat grid yet for the track"])]
    assert ask(control, "/transport/beatjump", 1) == [
        ("/error", ["/transport/beatjump: no beat grid yet for the track"])
    ]


def test_a_beat_jump_moves_the_head_exactly(host: FakeHost) -> None:
    control = OscControl(host)
    head = host.engine.position
    assert ask(control, "/transport/beatjump", 4) == []
    render(host, 1)
    assert host.engine.position == head + 4 * BEAT + BLOCK
    head = host.engine.position
    ask(control, "/transport/beatjump", -0.5)
    render(host, 1)
    assert host.engine.position == head - BEAT // 2 + BLOCK
    ask(control, "/transport/beatjump", -64)  # before the start: at 0
    render(host, 1)
    assert host.engine.position == BLOCK


def test_a_beat_jump_moves_the_loop_with_it(host: FakeHost) -> None:
    control = OscControl(host)
    ask(control, "/quantize", "beat")
    ask(control, "/transport/loop/beats", 2)
    render(host, 1)
    head = host.engine.position
    ask(control, "/transport/beatjump", 8)
    render(host, 1)
    assert host.engine.loop == (6400 + 8 * BEAT, 6400 + 10 * BEAT)
    assert host.engine.position == head + 8 * BEAT + BLOCK
    assert ask(control, "/transport/beatjump", 16) == [
        (
            "/error",
            ["/transport/beatjump: the loop would leave the track (16 beats from 4.800..5.800 s)"],
        )
    ]


@pytest.mark.parametrize("rate", [1.0, 1.08])
def test_a_roll_returns_to_where_the_head_would_have_been(rate: float) -> None:
    rolled, plain = probe_host(), probe_host()
    for h in (rolled, plain):
        h.engine.post(Rate(rate))
        render(h, 100)
    control = OscControl(rolled)
    assert ask(control, "/transport/roll", 0.25) == []
    out = render(rolled, 150)[:, 0]
    render(plain, 150)
    assert len(np.flatnonzero(np.diff(out) < 0)) >= 10  # it rolled
    assert rolled.engine.loop is not None
    assert ask(control, "/transport/roll", 0) == []  # the release
    a, b = render(rolled, 20), render(plain, 20)
    xfade = round(0.005 * SR)
    assert rolled.engine.loop is None
    assert rolled.engine.position == plain.engine.position
    assert np.array_equal(a[xfade + 1 :], b[xfade + 1 :])  # the same samples as without it


def test_a_roll_inside_a_loop_returns_into_that_loop(host: FakeHost) -> None:
    control = OscControl(host)
    ask(control, "/quantize", "beat")
    ask(control, "/transport/loop/beats", 1)
    render(host, 1)
    loop = host.engine.loop
    assert loop == (6400, 10400)
    ask(control, "/transport/roll", 0.125)
    render(host, 100)  # 6400 frames: the loop of 4000 would have wrapped once
    head = host.engine.position
    roll = host.engine.loop
    assert roll is not None and roll[1] - roll[0] == 500
    ask(control, "/transport/roll", 0)
    render(host, 1)
    assert host.engine.loop == loop
    assert loop[0] <= host.engine.position < loop[1]
    assert head != host.engine.position
