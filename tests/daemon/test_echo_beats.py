"""``/fx/echo/beats`` (issue 25 item 2): the echo's delay in beats on the grid, following
the rate, re-aimed when the grid arrives, is edited or goes with a new track; one
setting with ``/fx/echo/ms`` in two units; its errors, /state, scenes and morphs.

In-process on the real registry and mixer (``tests/osc_host.py``: the device runs at
8 kHz, so 0.25 s is 2000 samples), the delay read where the audio thread put it.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
from osc_host import SENDER, SR, FakeHost, make_server
from registry_helpers import set_value

from stemdeck.core.beats.analysis import BeatAnalysis
from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Batch, Command, EchoTarget, Rate
from stemdeck.core.mixer.engine import Mixer
from stemdeck.daemon.echo_beats import EchoBeats
from stemdeck.daemon.osc import Feedback, OscControl
from stemdeck.daemon.scenes import SceneStore
from stemdeck.daemon.track_beats import TrackBeats

GRID = BeatGrid(120.0, 0.5, 4)
RANGE = "/fx/echo/beats takes 1/16..4 beats (0.0625..4), got"


def ask(control: OscControl, address: str, *args: object) -> list[tuple[str, list]]:
    return [(a, list(v)) for a, v in control.handle([(address, list(args))], SENDER)]


def delay(host: FakeHost) -> float:
    """The echo's delay in samples as the audio thread holds it, after one block."""
    host.block()
    return host.engine.echo_delay()


def echo_of(control: OscControl) -> list[tuple[str, list]]:
    return ask(control, "/fx/echo/ms") + ask(control, "/fx/echo/beats")


@pytest.fixture
def host() -> FakeHost:
    host = FakeHost()
    host.give_grid(GRID)
    return host


def test_half_a_beat_at_120_bpm_is_a_quarter_second_and_follows_the_rate(host: FakeHost) -> None:
    control = OscControl(host)
    assert delay(host) == 0.5 * SR  # the default 500 ms
    assert ask(control, "/fx/echo/beats", 0.5) == []
    assert delay(host) == 0.25 * SR
    assert echo_of(control) == [("/fx/echo/ms", [250.0]), ("/fx/echo/beats", [0.5])]
    assert host.engine.echo_state(None) == (250.0, 0.5, 0.0, 1.0)
    assert ask(control, "/transport/rate", 1.25) == []
    host.block()  # the rate and the echo's new delay in the same block
    assert (host.engine.rate, host.engine.echo_delay()) == (1.25, 0.2 * SR)
    assert echo_of(control) == [("/fx/echo/ms", [200.0]), ("/fx/echo/beats", [0.5])]
    assert ask(control, "/transport/bpm", 120.0) == []  # rate 1 again, through the tempo
    assert delay(host) == 0.25 * SR


def test_a_rate_and_the_beats_in_one_bundle_land_together(host: FakeHost) -> None:
    control = OscControl(host)
    replies = control.handle([("/transport/rate", [1.25]), ("/fx/echo/beats", [1.0])], SENDER)
    assert replies == []
    host.block()
    assert (host.engine.rate, host.engine.echo_delay()) == (1.25, 0.4 * SR)


def test_grid_edits_re_aim_the_delay(host: FakeHost) -> None:
    control = OscControl(host)
    assert ask(control, "/fx/echo/beats", 0.5) == []
    assert delay(host) == 0.25 * SR
    assert ask(control, "/track/grid/double") == [("/track/grid", [240.0, 0.5, 4])]
    assert delay(host) == 0.125 * SR
    assert ask(control, "/track/grid/halve") == [("/track/grid", [120.0, 0.5, 4])]
    assert ask(control, "/track/grid/halve") == [("/track/grid", [60.0, 0.5, 4])]
    assert delay(host) == 0.5 * SR
    assert ask(control, "/track/grid/reset") == [("/track/grid", [120.0, 0.5, 4])]
    assert delay(host) == 0.25 * SR
    assert ask(control, "/track/bpm", 100.0) == [("/track/grid", [100.0, 0.5, 4])]
    assert delay(host) == 0.3 * SR
    assert echo_of(control) == [("/fx/echo/ms", [300.0]), ("/fx/echo/beats", [0.5])]


def test_without_a_grid_the_last_delay_stays_until_the_grid_arrives() -> None:
    host = FakeHost()  # the grid is not there yet
    control = OscControl(host)
    assert ask(control, "/fx/echo/ms", 400.0) == []
    assert ask(control, "/fx/echo/beats", 0.5) == []  # accepted: the documented fallback
    assert delay(host) == 0.4 * SR
    assert echo_of(control) == [("/fx/echo/ms", [400.0]), ("/fx/echo/beats", [0.5])]
    host.give_grid(GRID)  # published by the analysis thread: the echo follows it
    assert delay(host) == 0.25 * SR
    assert echo_of(control) == [("/fx/echo/ms", [250.0]), ("/fx/echo/beats", [0.5])]


def test_a_new_track_keeps_the_delay_until_its_grid_is_published(host: FakeHost) -> None:
    control = OscControl(host)
    assert ask(control, "/fx/echo/beats", 1.0) == []
    assert delay(host) == 0.5 * SR
    gate = _Gate()
    beats = host.beats
    beats.analyze = lambda y, sr: gate.analysis(BeatGrid(100.0, 0.0, 4))
    track = host.engine.track
    assert track is not None
    thread = beats.start(track.channels.sum(axis=0), SR, 2, "next")  # a new track
    assert beats.grid() is None  # the old grid is gone at once ...
    assert delay(host) == 0.5 * SR  # ... and the echo keeps its delay
    gate.open()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert beats.grid() == BeatGrid(100.0, 0.0, 4)
    assert delay(host) == 0.6 * SR
    assert echo_of(control) == [("/fx/echo/ms", [600.0]), ("/fx/echo/beats", [1.0])]


def test_ms_and_beats_are_one_setting_the_last_one_set_rules(host: FakeHost) -> None:
    control = OscControl(host)
    assert ask(control, "/fx/echo/beats", 0.25) == []
    assert ask(control, "/fx/echo/ms", 300.0) == []  # back to milliseconds
    assert echo_of(control) == [("/fx/echo/ms", [300.0]), ("/fx/echo/beats", [0.0])]
    assert ask(control, "/transport/rate", 2.0) == []
    assert ask(control, "/track/grid/double") == [("/track/grid", [240.0, 0.5, 4])]
    assert delay(host) == 0.3 * SR  # ms do not follow the tempo
    assert ask(control, "/fx/echo/beats", 4.0) == []  # 4 beats at 240 BPM × 2: 0.5 s
    assert delay(host) == 0.5 * SR
    # Both in one bundle: the last one sets the unit.
    both = [("/fx/echo/beats", [2.0]), ("/fx/echo/ms", [123.0])]
    assert control.handle(both, SENDER) == []
    assert echo_of(control) == [("/fx/echo/ms", [123.0]), ("/fx/echo/beats", [0.0])]


def test_a_delay_past_4_s_stands_at_4_s() -> None:
    host = FakeHost()
    host.give_grid(BeatGrid(40.0, 0.0, 4))
    control = OscControl(host)
    assert ask(control, "/transport/rate", 0.5) == []
    assert ask(control, "/fx/echo/beats", 4.0) == []  # 12 s: the line holds 4
    assert delay(host) == 4.0 * SR
    assert echo_of(control) == [("/fx/echo/ms", [4000.0]), ("/fx/echo/beats", [4.0])]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([0.05], f"{RANGE} 0.05"),
        ([4.5], f"{RANGE} 4.5"),
        ([0.0], f"{RANGE} 0"),
        ([-1.0], f"{RANGE} -1"),
        ([math.inf], f"{RANGE} inf"),
        ([-math.inf], f"{RANGE} -inf"),
        ([math.nan], "/fx/echo/beats got NaN"),
        (["half"], "/fx/echo/beats takes a number, got str 'half'"),
        ([True], "/fx/echo/beats takes a number, got bool True"),
        ([1.0, 2.0], "/fx/echo/beats takes one number, got 2 arguments"),
    ],
)
def test_a_bad_value_is_one_error_and_changes_nothing(
    host: FakeHost, args: list, error: str
) -> None:
    control = OscControl(host)
    assert ask(control, "/fx/echo/beats", 0.5) == []
    before = (host.registry.snapshot(), delay(host))
    bundle = [("/fx/echo/ms", [100.0]), ("/fx/echo/beats", args)]
    assert [(a, list(v)) for a, v in control.handle(bundle, SENDER)] == [("/error", [error])]
    assert (host.registry.snapshot(), delay(host)) == before


def test_state_and_the_registry_say_which_unit_is_in_force(host: FakeHost) -> None:
    control = OscControl(host)
    state = dict(control.state())
    assert (state["/fx/echo/ms"], state["/fx/echo/beats"]) == ([500.0], [0.0])
    assert ask(control, "/fx/echo/beats", 0.75) == []
    state = dict(control.state())
    assert (state["/fx/echo/ms"], state["/fx/echo/beats"]) == ([375.0], [0.75])
    assert host.registry.snapshot()["echo"] == {
        "ms": 375.0,
        "beats": 0.75,
        "feedback": 0.5,
        "filter": 0.0,
        "level": 1.0,
    }


def test_the_clock_followers_rate_re_aims_the_echo_in_the_same_command() -> None:
    posted: list[Command] = []

    def post(command: Command) -> bool:
        posted.append(command)
        return True

    registry = Registry(["a"])
    follower = EchoBeats(registry, _Grid(GRID), post)
    follower.grid_changed()
    assert posted == []  # the delay is in ms: nothing to re-aim
    set_value(registry, "/fx/echo/beats", [0.5])
    assert registry.echo.ms == 250.0
    assert follower.post(Rate(1.25))
    assert posted == [Batch((EchoTarget(200.0, 0.5, 0.0, 1.0), Rate(1.25)))]
    assert follower.post(Rate(1.25))  # the same rate: the echo stays
    assert posted[-1] == Rate(1.25)


def test_a_jack_leaders_tempo_re_aims_the_echo_without_a_rate() -> None:
    """The JACK timebase follower sets the rate in the audio thread: the daemon's main
    loop tells the echo the session's tempo (EchoBeats.leader_tempo), and only the
    echo's delay is posted, never a Rate that would fight the follower."""
    posted: list[Command] = []

    def post(command: Command) -> bool:
        posted.append(command)
        return True

    registry = Registry(["a"])
    follower = EchoBeats(registry, _Grid(GRID), post)
    follower.grid_changed()
    set_value(registry, "/fx/echo/beats", [0.5])
    follower.leader_tempo(150.0)  # 150 over the grid's 120: rate 1.25
    assert posted == [EchoTarget(200.0, 0.5, 0.0, 1.0)]
    assert registry.rate == 1.25
    follower.leader_tempo(150.0)  # the same tempo: nothing
    follower.leader_tempo(None)  # no tempo from the master: nothing
    follower.leader_tempo(math.nan)
    assert len(posted) == 1
    follower.leader_tempo(1000.0)  # the rate stands at 2
    assert posted[1:] == [EchoTarget(125.0, 0.5, 0.0, 1.0)] and registry.rate == 2.0
    no_grid = EchoBeats(Registry(["a"]), _Grid(None), post)
    no_grid.leader_tempo(150.0)
    assert len(posted) == 2


def test_a_full_queue_is_retried_until_the_grid_is_followed() -> None:
    refused = [3]
    posted: list[Command] = []

    def post(command: Command) -> bool:
        if refused[0]:
            refused[0] -= 1
            return False
        posted.append(command)
        return True

    registry = Registry(["a"])
    set_value(registry, "/fx/echo/beats", [2.0])
    EchoBeats(registry, _Grid(GRID), post).grid_changed()
    assert (refused[0], posted) == (0, [EchoTarget(1000.0, 0.5, 0.0, 1.0)])
    assert registry.grid_bpm == 120.0


def test_the_delay_in_samples_at_48_khz() -> None:
    """The control side computes the delay; the engine holds 0.25 s × 48000 samples."""
    engine = Mixer(max_channels=1)
    engine.prepare(48000, 64)
    registry = Registry(["a"])
    follower = EchoBeats(registry, _Grid(GRID), engine.post)
    follower.grid_changed()
    set_value(registry, "/fx/echo/beats", [0.5], post=engine.post)
    engine.process(np.zeros((64, 2), np.float32))
    assert engine.echo_delay() == 12000.0
    assert follower.post(Rate(1.25))
    engine.process(np.zeros((64, 2), np.float32))
    assert engine.echo_delay() == 9600.0


def test_scenes_keep_the_unit_and_a_recall_follows_todays_grid(
    host: FakeHost, tmp_path: Path
) -> None:
    control = OscControl(host)
    store = SceneStore(host.registry, host.post, tmp_path / "scenes")
    assert ask(control, "/fx/echo/beats", 0.5) == []
    text = store.save("half").read_text()
    assert "[echo]\nms = 250.0\nbeats = 0.5\nfeedback = 0.5\n" in text
    assert ask(control, "/fx/echo/ms", 700.0) == []
    store.save("ms700")
    assert ask(control, "/track/grid/double") == [("/track/grid", [240.0, 0.5, 4])]
    store.recall("half")
    assert echo_of(control) == [("/fx/echo/ms", [125.0]), ("/fx/echo/beats", [0.5])]
    assert delay(host) == 0.125 * SR
    store.recall("ms700")
    assert echo_of(control) == [("/fx/echo/ms", [700.0]), ("/fx/echo/beats", [0.0])]
    # A scene saved before the delay had beats names ms only: ms are in force.
    assert ask(control, "/fx/echo/beats", 1.0) == []
    (tmp_path / "scenes" / "old.toml").write_text("[echo]\nms = 333.0\n")
    store.recall("old")
    assert echo_of(control) == [("/fx/echo/ms", [333.0]), ("/fx/echo/beats", [0.0])]
    assert delay(host) == 333.0 * SR / 1000.0


def test_a_recall_writes_only_the_unit_in_force() -> None:
    registry = Registry(["a"])
    with registry.transaction() as txn:
        txn.restore({"echo": {"ms": 250.0, "beats": 0.5, "feedback": 0.25}})
        assert txn.written == {"/fx/echo/beats", "/fx/echo/feedback"}
    with registry.transaction() as txn:
        txn.restore({"echo": {"ms": 250.0, "beats": 0.0}})
        assert txn.written == {"/fx/echo/ms"}
    with registry.transaction() as txn:
        txn.restore({"echo": {"beats": 0.01}})  # clamped, as every scene value
        assert txn.get("/fx/echo/beats") == 0.0625


class _Grid:
    def __init__(self, grid: BeatGrid | None) -> None:
        self._grid = grid

    def grid(self) -> BeatGrid | None:
        return self._grid


class _Gate:
    """Holds an analysis until :meth:`open`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def analysis(self, grid: BeatGrid) -> BeatAnalysis:
        assert self._event.wait(10)
        return BeatAnalysis(grid, 4.0)

    def open(self) -> None:
        self._event.set()


def test_feedback_says_the_unit_and_a_tempo_change_moves_the_ms(host: FakeHost) -> None:
    _, server = make_server(host=host)
    feedback = Feedback(server)
    control = server.control
    feedback.changes(control.state())  # every value once, as a new subscriber gets them
    assert ask(control, "/fx/echo/beats", 0.5) == []
    changed = dict(feedback.changes(control.state()))
    assert (changed["/fx/echo/ms"], changed["/fx/echo/beats"]) == ([250.0], [0.5])
    assert ask(control, "/transport/rate", 1.25) == []
    host.block()
    changed = dict(feedback.changes(control.state()))
    assert (changed["/fx/echo/ms"], "/fx/echo/beats" in changed) == ([200.0], False)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[echo]\nbeats = "half"\n', "scene value echo beats='half' is not a number"),
        ("[echo]\nbeats = nan\n", "scene value echo beats=nan is not a number"),
        ("[echo]\nbeats = true\n", "scene value echo beats=True is not a number"),
    ],
)
def test_a_scene_with_bad_beats_is_one_error_and_changes_nothing(
    host: FakeHost, tmp_path: Path, text: str, error: str
) -> None:
    store = SceneStore(host.registry, host.post, tmp_path / "scenes")
    assert ask(OscControl(host), "/fx/echo/beats", 0.5) == []
    before = (host.registry.snapshot(), delay(host))
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "bad.toml").write_text(text)
    with pytest.raises(ParameterError) as caught:
        store.recall("bad")
    assert str(caught.value) == error
    assert (host.registry.snapshot(), delay(host)) == before


@pytest.mark.parametrize(("beats", "ms", "unit"), [(-1.0, 500.0, 0.0), (1e300, 2000.0, 4.0)])
def test_a_scenes_beats_out_of_range_are_clamped(
    host: FakeHost, tmp_path: Path, beats: float, ms: float, unit: float
) -> None:
    """As every scene value: below 0 is the delay in ms (the scene's, or as it is),
    above 4 is 4 beats."""
    store = SceneStore(host.registry, host.post, tmp_path / "scenes")
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "wide.toml").write_text(f"[echo]\nbeats = {beats!r}\n")
    store.recall("wide")
    assert echo_of(OscControl(host)) == [("/fx/echo/ms", [ms]), ("/fx/echo/beats", [unit])]


def test_grid_listeners_hear_every_change_and_a_failing_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new track (no grid), the grid published, each edit: one call each, in the
    thread that made it; a listener that raises is one log line and stops nothing."""
    heard: list[float | None] = []
    beats = TrackBeats(None, analyze=lambda y, sr: BeatAnalysis(GRID, 4.0))

    def listener() -> None:
        grid = beats.grid()
        heard.append(None if grid is None else grid.bpm)

    def broken() -> None:
        raise RuntimeError("listener bug")

    beats.add_listener(broken)
    beats.add_listener(listener)
    with caplog.at_level("WARNING", logger="stemdeck.daemon.track_beats"):
        beats.start(np.zeros(SR, np.float32), SR, 1, "song").join()
        beats.edit(BeatGrid.doubled)
        beats.reset()
        beats.edit(lambda g: g.with_bpm(90.0))
    assert heard == [None, 120.0, 240.0, 120.0, 90.0]
    failures = [r.getMessage() for r in caplog.records if "listener" in r.getMessage()]
    assert len(failures) == 5
    assert failures[0].endswith("failed: RuntimeError('listener bug')")
