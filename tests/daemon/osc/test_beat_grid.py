"""The beat grid over OSC (issue 23): ``/track/bpm``, ``/track/grid``, ``/track/key``,
``/transport/beat`` and the grid's edits, exact replies and errors, bundles, /state and
feedback, edits kept in the beat store; :class:`TrackBeats` superseding and failing.

In-process on the real registry and mixer (``tests/osc_host.py``): the play head is at
0.008 s (one block of 64 frames at 8 kHz), the track 4 s long.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from osc_host import SENDER, FakeHost, make_server

from stemdeck.core.beats.analysis import BeatAnalysis
from stemdeck.core.beats.grid import BeatGrid, TapTempo
from stemdeck.core.beats.store import BeatRecord, BeatStore, audio_hash
from stemdeck.core.errors import BeatStoreError
from stemdeck.daemon.osc import Feedback, OscControl
from stemdeck.daemon.osc.wire import Message, decode, encode_bundle, encode_message
from stemdeck.daemon.status import Status, format_status
from stemdeck.daemon.track_beats import TrackBeats
from stemdeck.daemon.web import websocket

HEAD = 64 / 8000  # the play head (s)
GRID = BeatGrid(120.0, 0.5, 4)
NO_GRID = "no beat grid yet for the track"
SHIFT = "shift must be -60000 to 60000 ms, got"
DOWNBEAT = "downbeat must be 0 to 4.000 s (the track), got"
BUTTON = "takes no arguments or one button value (1 press, 0 release), got"
EDITS = [
    ("/track/bpm", [128.0]),
    ("/track/grid/halve", []),
    ("/track/grid/double", []),
    ("/track/grid/shift", [10.0]),
    ("/track/grid/downbeat", []),
    ("/track/grid/tap", []),
    ("/track/grid/reset", []),
]


def ask(control: OscControl, address: str, *args: object) -> list[tuple[str, list]]:
    return [(a, list(v)) for a, v in control.handle([(address, list(args))], SENDER)]


@pytest.fixture
def control() -> OscControl:
    host = FakeHost()
    host.give_grid(GRID)
    return OscControl(host)


@pytest.mark.parametrize("address", ["/track/bpm", "/track/grid", "/track/grid/current"])
def test_no_grid_yet_is_one_exact_error(address: str) -> None:
    control = OscControl(FakeHost())
    assert ask(control, address) == [("/error", [f"{address}: {NO_GRID}"])]


@pytest.mark.parametrize(("address", "args"), [*EDITS, ("/transport/beat", [])])
def test_no_grid_refuses_every_edit_and_the_beat(address: str, args: list) -> None:
    control = OscControl(FakeHost())
    assert ask(control, address, *args) == [("/error", [f"{address}: {NO_GRID}"])]


def test_the_key_is_the_empty_string_while_unknown() -> None:
    assert ask(OscControl(FakeHost()), "/track/key") == [("/track/key", [""])]
    host = FakeHost()
    host.give_grid(GRID)  # the analysis estimates no key
    assert ask(OscControl(host), "/track/key") == [("/track/key", [""])]


def test_queries_answer_the_grid_on_the_address_as_sent(control: OscControl) -> None:
    assert ask(control, "/track/bpm") == [("/track/bpm", [120.0])]
    assert ask(control, "/track/grid") == [("/track/grid", [120.0, 0.5, 4])]
    assert ask(control, "/track/grid/current") == [("/track/grid/current", [120.0, 0.5, 4])]
    assert ask(control, "/transport/beat") == [("/transport/beat", [(HEAD - 0.5) / 0.5])]


@pytest.mark.parametrize(
    ("address", "args", "grid"),
    [
        ("/track/grid/halve", [], GRID.halved()),
        ("/track/grid/double", [], GRID.doubled()),
        ("/track/grid/double", [1], GRID.doubled()),  # a button's press
        ("/track/grid/halve", [1.0], GRID.halved()),
        ("/track/bpm", [128.0], BeatGrid(128.0, 0.5, 4)),
        ("/track/bpm", [100], BeatGrid(100.0, 0.5, 4)),  # an int is a number
        ("/track/grid/shift", [10.0], BeatGrid(120.0, 0.51, 4)),
        ("/track/grid/shift", [-600.0], BeatGrid(120.0, 1.9, 4)),
        ("/track/grid/downbeat", [], BeatGrid(120.0, HEAD, 4)),
        ("/track/grid/downbeat", [1.25], BeatGrid(120.0, 1.25, 4)),
        ("/track/grid/reset", [], GRID),
    ],
)
def test_each_edit_answers_the_grid_in_force(
    control: OscControl, address: str, args: list, grid: BeatGrid
) -> None:
    expected = [grid.bpm, grid.downbeat, grid.beats_per_bar]
    assert ask(control, address, *args) == [("/track/grid", expected)]
    assert ask(control, "/track/grid") == [("/track/grid", expected)]
    assert ask(control, "/track/bpm") == [("/track/bpm", [grid.bpm])]


@pytest.mark.parametrize("verb", ["halve", "double", "tap", "reset"])
def test_a_button_release_does_nothing_and_answers_nothing(control: OscControl, verb: str) -> None:
    assert ask(control, f"/track/grid/{verb}", 0) == []
    assert ask(control, "/track/grid") == [("/track/grid", [120.0, 0.5, 4])]


@pytest.mark.parametrize(
    ("address", "args", "error"),
    [
        ("/track/bpm", [1000.0], "/track/bpm: tempo must be 20 to 400 BPM, got 1000.0"),
        ("/track/bpm", [19.9], "/track/bpm: tempo must be 20 to 400 BPM, got 19.9"),
        ("/track/bpm", [float("nan")], "/track/bpm got nan"),
        ("/track/bpm", [float("inf")], "/track/bpm got inf"),
        ("/track/bpm", ["fast"], "/track/bpm takes a number, got ['fast']"),
        ("/track/bpm", [True], "/track/bpm takes a number, got [True]"),
        ("/track/bpm", [120.0, 1.0], "/track/bpm takes a number, got [120.0, 1.0]"),
        ("/track/bpm", [b"\x00"], "/track/bpm takes a number, got [b'\\x00']"),
        ("/track/grid/shift", [], "/track/grid/shift takes a number, got []"),
        ("/track/grid/shift", [1e9], f"/track/grid/shift: {SHIFT} 1e+09"),
        ("/track/grid/shift", [-60001.0], f"/track/grid/shift: {SHIFT} -60001"),
        ("/track/grid/shift", [float("-inf")], "/track/grid/shift got -inf"),
        ("/track/grid/downbeat", [-0.1], f"/track/grid/downbeat: {DOWNBEAT} -0.1"),
        ("/track/grid/downbeat", [4.5], f"/track/grid/downbeat: {DOWNBEAT} 4.5"),
        ("/track/grid/downbeat", ["now"], "/track/grid/downbeat takes a number, got ['now']"),
        ("/track/grid/downbeat", [1.0, 2.0], "/track/grid/downbeat takes a number, got [1.0, 2.0]"),
        ("/track/grid/halve", ["x"], f"/track/grid/halve {BUTTON} ['x']"),
        ("/track/grid/tap", [1, 1], f"/track/grid/tap {BUTTON} [1, 1]"),
        ("/track/grid/reset", [float("nan")], "/track/grid/reset got nan"),
        ("/track/grid", [1.0], "/track/grid takes no arguments, got 1"),
        ("/track/grid/current", [1], "/track/grid/current takes no arguments, got 1"),
        ("/track/key", ["C"], "/track/key takes no arguments, got 1"),
        ("/transport/beat", [2.0], "/transport/beat takes no arguments, got 1"),
        ("/track/grid/nudge", [1.0], "/track/grid/nudge: unknown address"),
    ],
)  # fmt: skip
def test_hostile_arguments_get_one_exact_error_and_change_nothing(
    control: OscControl, address: str, args: list, error: str
) -> None:
    assert ask(control, address, *args) == [("/error", [error])]
    assert ask(control, "/track/grid") == [("/track/grid", [120.0, 0.5, 4])]


def test_halving_past_the_tempo_range_is_refused() -> None:
    host = FakeHost()
    host.give_grid(BeatGrid(30.0, 0.5, 4))
    assert ask(OscControl(host), "/track/grid/halve") == [
        ("/error", ["/track/grid/halve: tempo must be 20 to 400 BPM, got 15.0"])
    ]


def test_a_bundle_of_edits_applies_in_order_all_or_nothing(control: OscControl) -> None:
    halve: tuple[str, list] = ("/track/grid/halve", [])
    replies = control.handle([halve, ("/track/grid/shift", [100.0]), halve], SENDER)
    assert replies == [
        ("/track/grid", [60.0, 0.5, 4]),
        ("/track/grid", [60.0, 0.6, 4]),
        ("/track/grid", [30.0, 0.6, 4]),
    ]
    # a reset after a halving to 15 BPM: the halving is refused, so the whole bundle is
    replies = control.handle([("/track/grid/reset", []), halve, halve, halve, halve], SENDER)
    assert replies == [("/error", ["/track/grid/halve: tempo must be 20 to 400 BPM, got 15.0"])]
    assert ask(control, "/track/grid") == [("/track/grid", [30.0, 0.6, 4])]
    # a reset inside a bundle: the edits after it start from the analysis's grid
    replies = control.handle([("/track/grid/reset", []), halve, halve], SENDER)
    assert replies == [
        ("/track/grid", [120.0, 0.5, 4]),
        ("/track/grid", [60.0, 0.5, 4]),
        ("/track/grid", [30.0, 0.5, 4]),
    ]


def test_a_bad_message_in_a_bundle_leaves_the_grid_alone(control: OscControl) -> None:
    replies = control.handle([("/track/grid/halve", []), ("/ch/1/fader", ["loud"])], SENDER)
    assert len(replies) == 1 and replies[0][0] == "/error"
    assert ask(control, "/track/grid") == [("/track/grid", [120.0, 0.5, 4])]


def test_patterns_do_not_reach_the_grid(control: OscControl) -> None:
    assert ask(control, "/track/grid/*") == [("/error", ["no control matches /track/grid/*"])]
    assert ask(control, "/track/{bpm,key}") == [("/error", ["no control matches /track/{bpm,key}"])]
    assert ask(control, "/track/grid") == [("/track/grid", [120.0, 0.5, 4])]


def test_tap_tempo_on_the_daemons_clock() -> None:
    host = FakeHost()
    now = [100.0]
    host.give_grid(GRID, clock=lambda: now[0])
    control = OscControl(host)
    unchanged = [("/track/grid", [120.0, 0.5, 4])]
    assert ask(control, "/track/grid/tap") == unchanged
    now[0] += 0.4
    assert ask(control, "/track/grid/tap", 1) == unchanged  # two taps: no tempo yet
    now[0] += 0.4
    # three taps 0.4 s apart: 150 BPM; the bar start nearest the play head (0.5 s) stays
    taps = TapTempo()
    t = 100.0
    for _ in range(3):  # as the clock read them
        taps.tap(t)
        t += 0.4
    bpm = taps.bpm
    assert bpm is not None and bpm == pytest.approx(150.0)
    tapped = BeatGrid(120.0, 0.5, 4).with_bpm(bpm, anchor=HEAD)
    assert ask(control, "/track/grid/tap") == [("/track/grid", [tapped.bpm, 0.5, 4])]
    now[0] += 5.0  # a pause over 2 s starts over: the grid stays as tapped
    assert ask(control, "/track/grid/tap") == [("/track/grid", [tapped.bpm, 0.5, 4])]


def test_state_and_feedback_carry_the_grid_and_the_beat() -> None:
    host, server = make_server()
    control = server.control
    surface = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    surface.bind(("127.0.0.1", 0))
    surface.settimeout(5.0)
    try:
        assert control.beat_state() == [
            ("/track/bpm", [0.0]),
            ("/track/grid", [0.0, 0.0, 0]),
            ("/track/key", [""]),
        ]
        control.add_feedback_target(surface.getsockname())
        feedback = Feedback(server)
        feedback.tick()
        first = _until(surface, "/transport/position")
        assert ("/track/grid", [0.0, 0.0, 0]) in first and ("/track/bpm", [0.0]) in first
        feedback.tick()  # no grid: nothing follows the position, then or now
        assert [a for a, _ in _until(surface, "/transport/position")] == [
            "/meter",
            "/transport/position",
        ]
        host.give_grid(GRID)
        state = control.state()
        assert state[-3:] == [
            ("/track/bpm", [120.0]),
            ("/track/grid", [120.0, 0.5, 4]),
            ("/track/key", [""]),
        ]
        feedback.tick()
        changes = _until(surface, "/transport/beat")
        position = float(host.engine.read_meters().position)  # as OSC carries it: float32
        assert changes == [
            ("/transport/bpm", [120.0]),  # the tempo that plays: the grid's at rate 1
            ("/track/bpm", [120.0]),
            ("/track/grid", [120.0, 0.5, 4]),
            ("/meter", changes[3][1]),
            ("/transport/position", [float(np.float32(position))]),
            ("/transport/beat", [float(np.float32((position - 0.5) / 0.5))]),
        ]
    finally:
        surface.close()
        server.sock.close()


def _until(sock: socket.socket, address: str) -> list[tuple[str, list]]:
    out: list[tuple[str, list]] = []
    while True:
        msg = decode(sock.recvfrom(65536)[0])
        assert isinstance(msg, Message)
        out.append((msg.address, list(msg.args)))
        if msg.address == address:
            return out


def test_over_udp_a_bundle_and_a_query_are_answered_exactly() -> None:
    host, server = make_server()
    host.give_grid(GRID)
    try:
        bundle = encode_bundle(
            [encode_message("/track/grid/double", []), encode_message("/track/bpm", [])]
        )
        assert server.datagram(bundle, SENDER) == [
            ("/track/bpm", [120.0]),  # a query answers now, an edit once it is applied
            ("/track/grid", [240.0, 0.5, 4]),
        ]
        assert server.datagram(encode_message("/track/bpm", []), SENDER) == [
            ("/track/bpm", [240.0])
        ]
    finally:
        server.sock.close()


def test_the_websocket_listens_to_the_grid_and_streams_the_beat() -> None:
    assert {"/track/bpm", "/track/grid", "/track/key"} <= set(websocket.VALUE_ADDRESSES)
    assert "/transport/beat" in websocket.STREAMS


def test_edits_are_stored_and_survive_a_new_track_beats(tmp_path: Path) -> None:
    store = BeatStore(tmp_path)
    host = FakeHost()
    beats = host.give_grid(GRID, store=store)
    control = OscControl(host)
    assert ask(control, "/track/grid/halve") == [("/track/grid", [60.0, 0.5, 4])]
    track = beats.require()
    assert store.load(track.key) == BeatRecord(BeatAnalysis(GRID, 4.0), GRID.halved())
    # a restart: the analysis is not run again, the edit is in force
    again = FakeHost()
    again.give_grid(BeatGrid(99.0, 0.1, 4), store=store)  # what a new analysis would say
    assert ask(OscControl(again), "/track/grid") == [("/track/grid", [60.0, 0.5, 4])]
    assert ask(OscControl(again), "/track/grid/reset") == [("/track/grid", [120.0, 0.5, 4])]
    assert store.load(track.key) == BeatRecord(BeatAnalysis(GRID, 4.0), None)


def test_an_unwritable_store_keeps_the_edit_until_the_next_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BeatStore(tmp_path)
    host = FakeHost()
    beats = host.give_grid(GRID, store=store)
    store.folder = tmp_path / "file"  # a file where the folder should be: writes fail
    store.folder.write_text("")
    with pytest.raises(BeatStoreError) as failed:
        store.save(beats.require().key, BeatRecord(None, GRID))
    with caplog.at_level(logging.WARNING):
        assert ask(OscControl(host), "/track/grid/double") == [("/track/grid", [240.0, 0.5, 4])]
    assert beats.grid() == GRID.doubled()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"{failed.value}; the grid edit of song lasts until the next load"
    ]


# -- TrackBeats: background analysis, superseding, failing --------------------------------
def _audio(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, (2, int(8000 * seconds))).astype(np.float32)


def test_a_newer_track_supersedes_an_older_analysis() -> None:
    release = threading.Event()
    started = threading.Event()
    calls: list[int] = []

    def analyze(y: np.ndarray, sr: int) -> BeatAnalysis:
        calls.append(y.shape[1])
        if len(calls) == 1:
            started.set()
            assert release.wait(10.0)
            return BeatAnalysis(BeatGrid(100.0), 3.0)
        return BeatAnalysis(BeatGrid(140.0), 4.0)

    playing = [1]
    beats = TrackBeats(None, current=lambda gen: gen == playing[0], analyze=analyze)
    first = beats.start(_audio(3.0), 8000, 1, "first")
    assert started.wait(10.0)
    playing[0] = 2
    second = beats.start(_audio(4.0, seed=1), 8000, 2, "second")
    second.join(10.0)
    assert beats.grid() == BeatGrid(140.0)
    release.set()  # the first finishes now: it publishes nothing
    first.join(10.0)
    assert beats.grid() == BeatGrid(140.0)
    assert beats.require().name == "second"


def test_a_grid_is_not_read_once_another_track_plays() -> None:
    playing = [1]
    beats = TrackBeats(
        None,
        current=lambda gen: gen == playing[0],
        analyze=lambda y, sr: BeatAnalysis(BeatGrid(120.0), 3.0),
    )
    beats.start(_audio(), 8000, 1, "first").join(10.0)
    assert beats.grid() == BeatGrid(120.0)
    playing[0] = 2  # the loader posted another track; its analysis has not started
    assert beats.grid() is None
    assert beats.beat(1.0) is None
    with pytest.raises(Exception, match=r"^no beat grid yet for first$"):
        beats.require()
    with pytest.raises(Exception, match=r"^another track plays now: the grid of first not edited$"):
        playing[0] = 1
        beats.edit(BeatGrid.halved, gen=2)


def test_a_failed_analysis_is_one_log_line_and_no_grid(caplog: pytest.LogCaptureFixture) -> None:
    def analyze(y: np.ndarray, sr: int) -> BeatAnalysis:
        raise ValueError("the envelope is flat")

    beats = TrackBeats(None, analyze=analyze)
    with caplog.at_level(logging.INFO, logger="stemdeck.daemon.track_beats"):
        beats.start(_audio(), 8000, 1, "song").join(10.0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "song: no beat grid: the envelope is flat")
    ]
    host = FakeHost()
    host.beats = beats
    assert ask(OscControl(host), "/track/bpm") == [
        ("/error", ["/track/bpm: no beat grid for song: the envelope is flat"])
    ]


def test_a_damaged_sidecar_is_analysed_again(tmp_path: Path, caplog) -> None:
    y = _audio()
    store = BeatStore(tmp_path)
    key = audio_hash(y, 8000)
    store.folder.mkdir()
    store.path(key).write_bytes(b"\xff\xfe not json")
    beats = TrackBeats(store, analyze=lambda y, sr: BeatAnalysis(BeatGrid(120.0), 3.0))
    with caplog.at_level(logging.WARNING):
        beats.start(y, 8000, 1, "song").join(10.0)
    assert beats.grid() == BeatGrid(120.0)
    assert store.load(key) == BeatRecord(BeatAnalysis(BeatGrid(120.0), 3.0))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"beat sidecar {str(store.path(key))!r}: not UTF-8 text (invalid start byte at byte 0); "
        "analysing the track again"
    ]


def test_the_status_line_shows_the_tempo() -> None:
    s = Status("song", True, 61.0, 180.0, None, (), 0, 0, 0.5, bpm=127.96)
    assert format_status(s).split(" | ")[0] == "song playing 1:01.0/3:00.0 128.0 BPM ready"
    s = Status("song", True, 61.0, 180.0, None, (), 0, 0, 0.5)
    assert format_status(s).split(" | ")[0] == "song playing 1:01.0/3:00.0 ready"


def test_the_generic_midi_maps_note_53_taps_the_tempo() -> None:
    import mido

    from stemdeck.core.control.midimap import load_midi_map
    from stemdeck.daemon.midi import MidiControl

    host = FakeHost()
    midi = MidiControl(host, load_midi_map("generic"), virtual="stemdeck-test")  # not started
    tap = mido.Message("note_on", channel=0, note=53, velocity=100)
    midi._on_message(tap)  # no grid yet: counted as a MIDI error, nothing else
    assert (midi.received, midi.errors) == (1, 1)
    now = [10.0]
    beats = host.give_grid(GRID, clock=lambda: now[0])
    for _ in range(3):
        midi._on_message(tap)
        midi._on_message(mido.Message("note_off", channel=0, note=53))  # a release: no tap
        now[0] += 0.5
    assert (midi.received, midi.errors) == (7, 1)
    taps = TapTempo()
    for t in (10.0, 10.5, 11.0):  # 0.5 s apart: 120 BPM, as the least-squares fit gives it
        taps.tap(t)
    assert taps.bpm is not None and taps.bpm == pytest.approx(120.0)
    assert beats.grid() == GRID.with_bpm(taps.bpm, anchor=HEAD)
    assert beats.require().record.edit is not None  # kept as the user's edit


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread niceness here")
def test_the_analysis_thread_keeps_the_daemons_niceness() -> None:
    """The thread that hashes the track and waits for the analysis runs at the
    daemon's niceness: a nicer one was stopped by the scheduler holding the GIL the
    audio callback waited for (the analysis itself runs in a niced process:
    daemon/beats_worker.py, tests/daemon/test_beats_worker.py)."""
    seen: list[int] = []
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def analyze(y: np.ndarray, sr: int) -> BeatAnalysis:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return BeatAnalysis(BeatGrid(120.0), 3.0)

    beats = TrackBeats(None, analyze=analyze)
    beats.start(_audio(), 8000, 1, "song").join(10.0)
    assert seen == [base]


def test_an_analysis_waits_until_it_is_ready_and_a_stored_grid_does_not(
    tmp_path: Path,
) -> None:
    """The daemon's analysis waits for its BLAS limit (taken once the audio runs, not
    before the first sound: ``ready``); a grid from the store waits for nothing."""
    ready = threading.Event()
    asked: list[bool] = []

    def analyze(y: np.ndarray, sr: int) -> BeatAnalysis:
        asked.append(ready.is_set())
        return BeatAnalysis(BeatGrid(120.0), 3.0)

    store = BeatStore(tmp_path)
    beats = TrackBeats(store, analyze=analyze, ready=ready.wait)
    thread = beats.start(_audio(), 8000, 1, "song")
    thread.join(0.3)
    assert thread.is_alive() and asked == [] and beats.grid() is None
    ready.set()
    thread.join(10.0)
    assert asked == [True] and beats.grid() == BeatGrid(120.0)
    ready.clear()  # stored now: found without waiting
    beats.start(_audio(), 8000, 2, "song").join(10.0)
    assert asked == [True] and beats.grid() == BeatGrid(120.0)
