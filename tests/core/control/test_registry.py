import itertools
import math
from functools import partial

import pytest
from registry_helpers import commit, set_value

from stemdeck.core.control.registry import Registry, Transaction
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import (
    Batch,
    Command,
    EchoTarget,
    MasterTarget,
    Play,
    Quantized,
    Rate,
    Seek,
    StripTarget,
)
from stemdeck.core.mixer.params import db_to_fader, fader_to_db

NAMES = ["drums", "bass", "vocals", "other"]


@pytest.mark.parametrize(
    ("f", "db"),
    [(1.0, 10.0), (0.75, 0.0), (0.5, -10.0), (0.25, -30.0), (0.0625, -60.0), (0.0, -math.inf)],
)
def test_fader_taper(f: float, db: float) -> None:
    assert fader_to_db(f) == pytest.approx(db)
    assert db_to_fader(db) == pytest.approx(f)


def test_taper_is_monotone_and_invertible() -> None:
    positions = [i / 1000 for i in range(1, 1001)]
    dbs = [fader_to_db(p) for p in positions]
    assert all(b > a for a, b in itertools.pairwise(dbs))
    assert all(abs(db_to_fader(d) - p) < 1e-9 for d, p in zip(dbs, positions, strict=True))


def test_names_indices_and_views() -> None:
    reg = Registry(NAMES)
    (cmd,) = set_value(reg, "/ch/bass/fader", [0.5])
    assert isinstance(cmd, StripTarget) and cmd.gain == pytest.approx(10 ** (-10 / 20))
    assert cmd == StripTarget(1, cmd.gain, False, False, 0.0)
    assert reg.get("/ch/2/db") == pytest.approx(-10.0)
    assert reg.get("/ch/2/fader") == pytest.approx(0.5)
    set_value(reg, "/ch/2/db", [float("-inf")])
    assert reg.get("/ch/2/gain") == 0.0 and reg.get("/ch/2/fader") == 0.0
    set_value(reg, "/ch/2/gain", [1.0])
    assert reg.get("/ch/2/fader") == pytest.approx(0.75)
    set_value(reg, "/ch/vocals/mute", [True])
    assert reg.get("/ch/3/mute") == 1
    (cmd,) = set_value(reg, "/master/db", [-6.0])
    assert isinstance(cmd, MasterTarget) and cmd.gain == pytest.approx(0.501, abs=1e-3)


def test_a_value_with_parameters_below_it_has_a_second_name_one_level_down() -> None:
    """OSCQuery lists /ch/N/filter as /ch/N/filter/knob (no node is both a value and a
    container); OSC takes both names, answers on the one sent, patterns the first."""
    reg = Registry(["drums", "bass"])
    assert reg.match("/ch/bass/filter/knob") == [("/ch/2/filter", "/ch/bass/filter/knob")]
    assert reg.match("/ch/1/echo/send") == [("/ch/1/echo", "/ch/1/echo/send")]
    assert reg.match("/master/filter/knob") == [("/master/filter", "/master/filter/knob")]
    assert reg.match("/ch/2/filter/res") == [("/ch/2/filter/res", "/ch/2/filter/res")]
    for address in ("/ch/1/fader/knob", "/master/echo/send", "/master/knob", "/ch/1/knob"):
        with pytest.raises(ParameterError, match=f"unknown address {address}"):
            reg.match(address)
    assert reg.match("/ch/1/filter/*") == [("/ch/1/filter/res", "/ch/1/filter/res")]
    set_value(reg, "/ch/bass/filter/knob", [-0.5])
    assert reg.get("/ch/2/filter") == -0.5


def test_patterns() -> None:
    reg = Registry(NAMES)
    commands = set_value(reg, "/ch/*/mute", [1])
    assert len(commands) == 4
    assert all(isinstance(c, StripTarget) and c.mute for c in commands)
    assert reg.resolve("/ch/[1-2]/solo") == ["/ch/1/solo", "/ch/2/solo"]
    assert reg.resolve("/ch/{bass,other}/pan") == ["/ch/2/pan", "/ch/4/pan"]
    assert reg.resolve("/ch/?/fader") == [f"/ch/{i}/fader" for i in range(1, 5)]
    assert reg.resolve("/master/*") == [
        f"/master/{p}" for p in ("fader", "gain", "db", "mute", "filter")
    ]
    assert reg.resolve("/ch/[!1]/mute") == ["/ch/2/mute", "/ch/3/mute", "/ch/4/mute"]


@pytest.mark.parametrize(
    ("address", "args", "reason"),
    [
        ("/ch/9/fader", [0.5], "unknown channel '9'"),
        ("/ch/piano/fader", [0.5], "unknown channel 'piano'"),
        ("/ch/1/volume", [0.5], "unknown address"),
        ("/ch/1/fader", [float("nan")], "NaN"),
        ("/ch/1/fader", [1.5], "0..1"),
        ("/ch/1/fader", ["loud"], "takes a number"),
        ("/ch/1/fader", [0.1, 0.2], "one number"),
        ("/ch/1/db", [12.0], r"at most \+10 dB"),
        ("/ch/1/mute", [2], "1/0 or T/F"),
        ("/ch/1/pan", [-3.0], "-1..1"),
        ("/nope/*", [1], "no control matches"),
    ],
)
def test_bad_input_changes_nothing(address: str, args: list, reason: str) -> None:
    reg = Registry(NAMES)
    before = reg.snapshot()
    with pytest.raises(ParameterError, match=reason):
        set_value(reg, address, args)
    assert reg.snapshot() == before


def test_norm_views_and_snapshot_roundtrip() -> None:
    reg = Registry(NAMES)
    commit(reg, lambda txn: txn.set_norm("/ch/1/fader", 0.5))
    assert reg.get_norm("/ch/1/db") == pytest.approx(0.5)
    commit(reg, lambda txn: txn.set_norm("/ch/1/pan", 0.0))
    assert reg.get("/ch/1/pan") == -1.0
    commit(reg, lambda txn: txn.set_norm("/ch/2/mute", 1.0))
    scene = reg.snapshot()
    other = Registry(NAMES)
    commands = commit(other, lambda txn: txn.restore(scene))
    # Four strips, the master, the echo and the reverb bus (a snapshot holds them).
    assert other.snapshot() == scene and len(commands) == 7


def test_a_refused_commit_keeps_nothing_and_can_be_retried() -> None:
    reg = Registry(NAMES)
    before = reg.snapshot()
    offered: list[Command] = []
    room = [False]

    def post(command: Command) -> bool:
        offered.append(command)
        return room[0]

    with reg.transaction() as txn:
        txn.set("/ch/1/fader", [0.5])
        txn.set("/master/mute", [1])
        assert txn.get("/ch/1/fader") == pytest.approx(0.5)  # staged, read back
        assert not txn.commit(post, [Play()])  # the queue is full
        assert reg.snapshot() == before
        room[0] = True
        assert txn.commit(post, [Play()])
    (batch,) = set(offered)  # the same one command, offered twice
    assert isinstance(batch, Batch) and batch.commands[-1] == Play()  # extra after the state
    assert reg.get("/ch/1/fader") == pytest.approx(0.5) and reg.get("/master/mute") == 1


def test_set_names_takes_effect_with_the_commit_and_sends_the_whole_state() -> None:
    reg = Registry(NAMES)
    set_value(reg, "/ch/2/fader", [0.5])
    with reg.transaction() as txn:
        txn.set_names(["kick", "bass", "keys"])
        assert txn.snapshot()["channels"]["bass"]["gain"] == pytest.approx(10 ** (-10 / 20))
        assert reg.names == NAMES
        with pytest.raises(RuntimeError, match="before set_names"):
            txn.set("/ch/1/mute", [1])
        commands = txn.commands()
        assert txn.commit(lambda command: True)
    assert [type(c) for c in commands] == [MasterTarget] + [StripTarget] * 3
    assert reg.names == ["kick", "bass", "keys"] and len(reg.strips) == 3
    assert reg.get("/ch/2/fader") == pytest.approx(0.5)


def test_written_since_names_the_values_each_kept_commit_wrote() -> None:
    reg = Registry(NAMES)
    g0 = reg.generation
    assert reg.written_since(g0) == set()
    set_value(reg, "/ch/bass/fader", [0.5])
    set_value(reg, "/ch/*/mute", [0])  # the value it had: written all the same
    commit(reg, lambda txn: txn.set_norm("/master/db", 0.5))
    g1 = reg.generation
    assert g1 == g0 + 3
    assert reg.written_since(g0) == {"/ch/2/gain", "/master/gain"} | {
        f"/ch/{i}/mute" for i in range(1, 5)
    }
    assert reg.written_since(g1) == set()
    # A scene writes what it names, though its commit sends every strip.
    scene = {"channels": {"vocals": {"pan": 0.5, "solo": True}, "piano": {"gain": 0.1}}}
    commit(reg, lambda txn: txn.restore(scene | {"master": {"mute": True}}))
    assert reg.written_since(g1) == {"/ch/3/pan", "/ch/3/solo", "/master/mute"}
    # A refused commit writes nothing; a commit with nothing staged writes nothing.
    with reg.transaction() as txn:
        txn.set("/ch/1/pan", [0.25])
        assert txn.written == {"/ch/1/pan"}
        assert not txn.commit(lambda command: False)
    g2 = reg.generation
    assert reg.written_since(g2 - 1) == {"/ch/3/pan", "/ch/3/solo", "/master/mute"}
    commit(reg, lambda txn: None)
    assert reg.written_since(g2) == set()


def test_new_channel_names_count_as_a_write_of_every_channel_value() -> None:
    reg = Registry(NAMES)
    set_value(reg, "/master/fader", [0.5])
    g = reg.generation
    commit(reg, lambda txn: txn.set_names(NAMES))  # the same channels: nothing written
    assert reg.written_since(g) == set()
    commit(reg, lambda txn: txn.set_names(["piano", "voice"]))
    assert reg.written_since(g) == {
        f"/ch/{i}/{p}"
        for i in (1, 2)
        for p in (
            "gain",
            "mute",
            "solo",
            "pan",
            "filter",
            "filter/res",
            "echo",
            "echo/pre",
            "reverb",
        )
    }
    assert reg.written_since(g - 1) == reg.written_since(g) | {"/master/gain"}


def test_the_echo_in_beats_follows_the_grid_and_every_rate_a_commit_posts() -> None:
    """``/fx/echo/beats``: ms = beats × 60000 / (grid BPM × rate), re-aimed by
    ``set_grid`` and by a ``Rate`` among a commit's extra commands (alone, in a
    ``Batch`` or a ``Quantized``; clamped as the engine clamps it, NaN ignored)."""
    reg = Registry(["a"])
    set_value(reg, "/fx/echo/beats", [0.5])
    assert (reg.echo.ms, reg.echo.beats) == (500.0, 0.5)  # no grid: the delay stays
    assert commit(reg, lambda txn: txn.set_grid(120.0)) == [EchoTarget(250.0, 0.5, 0.0, 1.0)]
    nan = Rate(float("nan"))
    for extra, ms, sent in (
        (Rate(1.25), 200.0, True),
        (Batch((Seek(1.0), Rate(2.0))), 125.0, True),
        (Quantized(96, Batch((Rate(0.25),))), 500.0, True),  # the engine's 0.5 at the least
        (nan, 500.0, False),  # the engine keeps its rate: so does the echo
        (Rate(0.5), 500.0, False),  # the rate it has
    ):
        posted: list[Command] = []
        with reg.transaction() as txn:
            assert txn.commit(partial(_keep, posted), [extra])
        echo = EchoTarget(ms, 0.5, 0.0, 1.0)
        assert posted == ([Batch((echo, extra))] if sent else [extra])
        assert reg.echo.ms == ms
    assert reg.rate == 0.5
    assert commit(reg, lambda txn: txn.set_grid(None)) == []  # the grid gone: ms kept
    assert (reg.echo.ms, reg.echo.beats, reg.grid_bpm) == (500.0, 0.5, None)
    set_value(reg, "/fx/echo/ms", [300.0])  # ms again: the tempo no longer moves it
    assert commit(reg, lambda txn: txn.set_grid(60.0)) == []
    assert (reg.echo.ms, reg.echo.beats) == (300.0, 0.0)


def test_the_echo_beats_0_to_1_view_steps_through_the_divisions() -> None:
    reg = Registry(["a"])
    assert reg.get_norm("/fx/echo/beats") == 0.0  # in ms
    steps = []
    for k in range(12):
        commit(reg, partial(Transaction.set_norm, address="/fx/echo/beats", x=k / 11))
        steps.append(reg.get("/fx/echo/beats"))
        assert reg.get_norm("/fx/echo/beats") == k / 11
    assert steps == [1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0, 1.5, 2.0, 3.0, 4.0]


def _keep(out: list[Command], command: Command) -> bool:
    out.append(command)
    return True


def test_a_tempo_that_leaves_the_echo_where_it_is_posts_no_echo() -> None:
    reg = Registry(["a"])
    commit(reg, lambda txn: txn.set_grid(120.0))
    set_value(reg, "/fx/echo/beats", [1.0])
    assert reg.echo.ms == 500.0
    assert commit(reg, lambda txn: txn.set_grid(120.0)) == []  # the same grid again
    assert commit(reg, lambda txn: txn.set_grid(60.0)) == [EchoTarget(1000.0, 0.5, 0.0, 1.0)]
