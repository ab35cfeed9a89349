"""``/quantize`` over OSC (issue 23): the mode, exact replies and errors, /state and
feedback, and a quantized mute landing on the bar line in the rendered output at
rates 0.92, 1.0 and 1.08 (sample-exact: the output shows where the head read).

In-process on the real registry and mixer (``tests/osc_host.py``, 8 kHz, blocks of
64), the mixer rendering each strip on its own output pair.
"""

from __future__ import annotations

import numpy as np
import pytest
from osc_host import BLOCK, NAMES, PROBE_GRID, SENDER, SR, FakeHost, probe_host, render

from stemdeck.daemon.osc import OscControl
from stemdeck.daemon.quantize import Quantizer, parse_quantize
from stemdeck.daemon.scenes import SceneStore

GRID = PROBE_GRID  # a bar every 2 s from 0.3 s
USAGE = "/quantize takes off, beat, bar or a number of beats (0.03125..64) as a string, got"


def ask(control: OscControl, address: str, *args: object) -> list[tuple[str, list]]:
    return [(a, list(v)) for a, v in control.handle([(address, list(args))], SENDER)]


@pytest.mark.parametrize("rate", [0.92, 1.0, 1.08])
def test_a_quantized_mute_starts_on_the_next_bar_line(rate: float) -> None:
    host = probe_host()
    control = OscControl(host)
    assert ask(control, "/transport/rate", rate) == []
    render(host, 60)  # 0.48 s: past the rate's glide and the first bar line (0.3 s)
    assert ask(control, "/quantize", "bar") == [("/quantize", ["bar"])]
    head = host.engine.position
    assert ask(control, "/ch/vocals/mute", 1) == []
    assert ask(control, "/ch/vocals/mute") == [("/ch/vocals/mute", [1])]  # the registry's
    bar = round(2.3 * SR)  # the next bar line after the head, in the track's frames
    assert head < bar < head + 2 * SR
    out = render(host, int(2.2 * SR / BLOCK / rate))
    vocals = out[:, 2 * NAMES.index("vocals")]
    start = int(np.flatnonzero(vocals < 0.5)[0])  # the mute's ramp
    # Sample-exact (1 sample: 0.125 ms at 8 kHz): the sample before read short of the
    # bar line, this one at or past it (to a hundredth of a frame: float32 rounding).
    assert out[start - 1, 0] < bar + 0.01 and out[start, 0] > bar - 0.01
    assert out[start - 1, 2 * NAMES.index("vocals")] == 0.5
    if rate == 1.0:
        assert out[start, 0] == bar
    assert host.engine.strip_state(NAMES.index("vocals")).mute
    # The other strips never moved.
    assert np.all(out[:, 2 * NAMES.index("bass")] == 0.5)


def test_beat_and_numbers_of_beats_land_on_their_grid_points() -> None:
    host = probe_host()
    control = OscControl(host)
    render(host, 60)  # head at 0.48 s
    for mode, point in (("beat", 0.8), ("0.5", 0.55), ("2", 1.3)):
        assert ask(control, "/quantize", mode) == [("/quantize", [mode])]
        assert host.quantize.target() == round(point * SR), mode


def test_off_acts_at_once_and_bit_identically() -> None:
    a, b = probe_host(), probe_host()
    ca, cb = OscControl(a), OscControl(b)
    render(a, 60)
    render(b, 60)
    assert ask(ca, "/quantize", "bar") == [("/quantize", ["bar"])]
    assert ask(ca, "/quantize", "off") == [("/quantize", ["off"])]
    assert ask(ca, "/ch/2/mute", 1) == ask(cb, "/ch/2/mute", 1) == []
    assert np.array_equal(render(a, 20), render(b, 20))
    assert a.engine.strip_state(1).mute


def test_with_no_grid_or_stopped_a_mute_acts_at_once() -> None:
    host = FakeHost()  # no grid
    control = OscControl(host)
    assert ask(control, "/quantize", "bar") == [("/quantize", ["bar"])]
    assert host.quantize.target() is None
    ask(control, "/ch/1/mute", 1)
    host.block()
    assert host.engine.strip_state(0).mute


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["sometimes"], f"{USAGE} 'sometimes'"),
        (["nan"], f"{USAGE} 'nan'"),
        (["inf"], f"{USAGE} 'inf'"),
        (["128"], f"{USAGE} '128'"),
        (["0.01"], f"{USAGE} '0.01'"),
        (["-1"], f"{USAGE} '-1'"),
        ([""], f"{USAGE} ''"),
        ([2], f"{USAGE} 2"),
        ([0.5], f"{USAGE} 0.5"),
        (["bar", "beat"], "/quantize takes one mode, got 2 arguments"),
    ],
)
def test_bad_modes_are_one_exact_error_and_change_nothing(args: list, error: str) -> None:
    control = OscControl(FakeHost())
    ask(control, "/quantize", "beat")
    assert ask(control, "/quantize", *args) == [("/error", [error])]
    assert ask(control, "/quantize") == [("/quantize", ["beat"])]


def test_a_bad_mode_in_a_bundle_refuses_the_whole_bundle() -> None:
    host = FakeHost()
    control = OscControl(host)
    replies = control.handle([("/ch/1/mute", [1]), ("/quantize", ["often"])], SENDER)
    assert [(a, list(v)) for a, v in replies] == [("/error", [f"{USAGE} 'often'"])]
    assert ask(control, "/ch/1/mute") == [("/ch/1/mute", [0])]
    assert ask(control, "/quantize") == [("/quantize", ["off"])]


def test_modes_are_canonical_and_in_state() -> None:
    assert [parse_quantize(v) for v in ("OFF", " bar ", "4.0", "0.50", "0.03125")] == [
        "off",
        "bar",
        "4",
        "0.5",
        "0.03125",
    ]
    control = OscControl(FakeHost())
    assert ("/quantize", ["off"]) in control.state()
    ask(control, "/quantize", "4.0")
    assert ("/quantize", ["4"]) in control.state()
    assert ask(control, "/quantize") == [("/quantize", ["4"])]


def test_a_flood_of_quantized_mutes_keeps_memory_bounded() -> None:
    host = probe_host()
    control = OscControl(host)
    render(host, 60)
    ask(control, "/quantize", "bar")
    for i in range(5000):
        ask(control, "/ch/2/mute", i % 2)
        if i % 100 == 0:
            render(host, 1)
    render(host, 1)
    m = host.engine
    assert m._pq_count <= len(m._pq_cmd) == 256
    assert ask(control, "/ch/2/mute") == [("/ch/2/mute", [1])]  # the last one sent
    render(host, int(2.2 * SR / BLOCK))
    assert m.strip_state(1).mute  # the engine ends where the registry is


def test_quantizer_target_is_none_past_the_last_grid_point() -> None:
    host = probe_host(seconds=2.0)  # bar lines at 0.3 and 2.3 s: the second is past the end
    render(host, 60)
    q = Quantizer(host.engine, lambda: GRID)
    q.set_mode("bar")
    assert q.target() is None


def test_a_scene_recall_waits_for_the_bar_and_lands_whole(tmp_path) -> None:
    host = probe_host()
    control = OscControl(host)
    store = SceneStore(host.registry, host.post, tmp_path, quantized=host.quantize.post)
    ask(control, "/ch/bass/fader", 0.5)
    ask(control, "/ch/vocals/mute", 1)
    store.save("duo")
    ask(control, "/ch/bass/fader", 0.75)
    ask(control, "/ch/vocals/mute", 0)
    render(host, 60)
    ask(control, "/quantize", "bar")
    store.recall("duo")
    out = render(host, int(2.2 * SR / BLOCK))
    bar = round(2.3 * SR)
    bass, vocals = (2 * NAMES.index(n) for n in ("bass", "vocals"))
    first = int(np.flatnonzero(out[:, 0] > bar - 0.01)[0])
    assert np.all(out[:first, bass] == 0.5) and np.all(out[:first, vocals] == 0.5)
    assert out[first, bass] < 0.5 and out[first, vocals] < 0.5  # both ramps start there
    assert host.engine.strip_state(NAMES.index("vocals")).mute
