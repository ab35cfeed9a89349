"""OSC over UDP on 127.0.0.1 against a running `stemdeck serve --no-audio`."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Client, Daemon, poll, separated

from conftest import tone_mix
from stemdeck.core.separation.cache import SOURCE_PREFIX
from stemdeck.core.separation.partial import PARTIAL_PREFIX
from stemdeck.daemon.pathnames import library_files

SR = 48000
pytestmark = pytest.mark.e2e  # a `stemdeck serve` subprocess


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("served")
    library = root / "library"
    library.mkdir()
    sf.write(library / "song.wav", tone_mix(6.0, sr=SR).T, SR, subtype="FLOAT")
    sf.write(library / "other.wav", tone_mix(3.0, sr=SR, seed=3).T, SR, subtype="FLOAT")
    (root / "secret.wav").write_bytes((library / "other.wav").read_bytes())
    env = {
        "STEMDECK_CACHE": str(root / "cache"),
        "STEMDECK_CONFIG": str(root / "config"),
    }
    daemon = Daemon(  # -v: the heap and audio thread lines are debug lines
        [str(library / "song.wav"), "--no-audio", "--record", str(root / "rec.wav")],
        env,
        root,
        verbose=True,
    )
    daemon.wait_ready()
    yield daemon, root
    code, err = daemon.stop()
    assert code == 0, err
    info = sf.info(root / "rec.wav")  # Ctrl-C/SIGTERM leaves a complete file
    assert info.samplerate == SR and info.frames > SR


@pytest.fixture
def client(served) -> Iterator[Client]:
    daemon, _ = served
    c = Client(daemon.port)
    yield c
    c.close()


def test_ping(client: Client) -> None:
    assert ("/pong", []) in client.ask("/ping")


@pytest.mark.parametrize(
    ("address", "value", "query", "expected"),
    [
        ("/ch/1/fader", 0.5, "/ch/1/db", -10.0),
        ("/ch/bass/db", -6.0, "/ch/2/gain", 10 ** (-6 / 20)),
        ("/ch/3/gain", 1.0, "/ch/other/fader", 0.75),  # drums, bass, other, vocals
        ("/ch/4/pan", -0.5, "/ch/vocals/pan", -0.5),
        ("/master/fader", 0.75, "/master/db", 0.0),
        ("/master/db", -3.0, "/master/gain", 10 ** (-3 / 20)),
    ],
)
def test_set_and_query(
    client: Client, address: str, value: float, query: str, expected: float
) -> None:
    client.send(address, value)
    assert client.query(query) == pytest.approx(expected, abs=1e-4)


def test_switches_and_patterns(client: Client) -> None:
    client.send("/ch/*/mute", 1)
    replies = dict(client.ask("/ch/*/mute"))
    assert {k: v[0] for k, v in replies.items()} == {f"/ch/{i}/mute": 1 for i in range(1, 5)}
    client.send("/ch/{drums,bass}/mute", False)
    client.send("/ch/2/solo", True)
    assert client.query("/ch/1/mute") == 0 and client.query("/ch/3/mute") == 1
    assert client.query("/ch/bass/solo") == 1
    client.send("/ch/*/solo", 0)
    client.send("/ch/*/mute", 0)
    assert client.query("/ch/4/mute") == 0


def test_db_off(client: Client) -> None:
    client.send("/ch/2/db", float("-inf"))
    assert client.query("/ch/2/gain") == 0.0
    assert math.isinf(client.query("/ch/2/db"))
    client.send("/ch/2/db", -120.0)  # below -90 is off too
    assert client.query("/ch/2/fader") == 0.0
    client.send("/ch/2/fader", 0.75)


def _rendered(root: Path) -> int:
    """Frames the daemon has rendered so far, playing or not: what its recording holds
    (stereo float32; the header and the writer's lag are a constant offset)."""
    return (root / "rec.wav").stat().st_size // 8


def test_transport(served, client: Client) -> None:
    _, root = served

    def position() -> float:
        return float(client.query("/transport/position"))

    sent = time.monotonic()
    client.send("/transport/seek", 2.0)
    # At 2.0 s plus what played since (the null clock runs at most a block ahead of
    # real time); the play head is anywhere until the seek is applied.
    poll(
        lambda: (client.query("/transport/seek"), time.monotonic() - sent),
        lambda got: 2.0 <= got[0] <= 2.0 + got[1] + 0.05,
        "the play head at 2.0 s plus the time since the seek",
    )
    client.send("/transport/pause")
    poll(lambda: client.query("/transport/playing"), lambda v: v == 0, "the pause")

    def twice() -> tuple[float, float]:
        first = position()
        time.sleep(0.1)
        return first, position()

    # Still once the pause's fade is over; and still while the clock renders 0.3 s more.
    held = poll(twice, lambda p: p[0] == p[1], "the play head at rest")[1]
    rendered = _rendered(root)
    poll(lambda: _rendered(root), lambda n: n >= rendered + 0.3 * SR, "0.3 s rendered")
    assert position() == pytest.approx(held)
    client.send("/transport/toggle")  # plays again
    poll(position, lambda p: p > held, "the play head moving again")
    client.send("/transport/loop", 1.0, 1.5)
    # Into the loop at once (the play head was past it), then inside it until it wraps.
    seen = [poll(position, lambda p: 1.0 <= p <= 1.55, "the play head in the loop")]
    deadline = time.monotonic() + 60
    while len(seen) < 2 or seen[-1] >= seen[-2]:
        assert time.monotonic() < deadline, f"the loop never wrapped: {seen}"
        time.sleep(0.01)
        seen.append(position())
        assert 1.0 <= seen[-1] <= 1.55, seen
    client.send("/transport/loop/off")
    client.send("/transport/stop")
    poll(position, lambda p: p == 0.0, "the play head back at 0 after stop")
    assert client.query("/transport/playing") == 0
    client.send("/transport/play")


def test_state_lists_every_value(client: Client) -> None:
    replies = client.ask("/state")
    addresses = [a for a, _ in replies]
    assert addresses[-1] == "/state/end"
    for i in range(1, 5):
        for p in ("fader", "gain", "db", "mute", "solo", "pan"):
            assert f"/ch/{i}/{p}" in addresses
    assert "/master/fader" in addresses and "/transport/position" in addresses
    # The separation's channels in the order of every source; labelled by their names.
    assert [args for a, args in replies if a == "/channels"] == [
        ["drums", "bass", "other", "vocals"]
    ]
    assert [args for a, args in replies if a == "/channels/labels"] == [
        ["drums", "bass", "other", "vocals"]
    ]


@pytest.mark.parametrize(
    ("address", "args", "reason"),
    [
        ("/nope", [], "unknown address"),
        ("/ch/9/fader", [0.5], "unknown channel"),
        ("/ch/1/fader", ["loud"], "takes a number"),
        ("/ch/1/fader", [0.1, 0.2], "one number"),
        ("/ch/1/fader", [float("nan")], "NaN"),
        ("/ch/1/db", [40.0], "at most"),
        ("/transport/seek", ["x"], "number"),
        ("/transport/loop", [2.0, 1.0], "start < end"),
        ("/scene/recall", [], "scene name"),
        ("/scene/recall", ["no-such-scene"], "no scene"),
    ],
)
def test_bad_input_answers_error_and_changes_nothing(
    client: Client, address: str, args: list, reason: str
) -> None:
    before = [r for r in client.ask("/state") if r[0].startswith(("/ch/", "/master/"))]
    replies = client.ask(address, *args)
    errors = [a[0] for addr, a in replies if addr == "/error"]
    assert errors and reason in errors[0], replies
    after = [r for r in client.ask("/state") if r[0].startswith(("/ch/", "/master/"))]
    assert after == before


def test_garbage_burst_does_not_stop_the_server(client: Client) -> None:
    rng = np.random.default_rng(0)
    for i in range(300):
        client.send_raw(rng.bytes(int(rng.integers(1, 200))))
        if i % 50 == 0:
            client.send_raw(b"/ch/1/fader\x00,f\x00\x00\x00")  # truncated message
    client.drain()
    client.send("/ping")  # answered after the burst, whatever the burst's replies
    assert ("/pong", []) in client.receive(60.0, until="/pong")


def test_bundles_apply_together_and_future_bundles_wait(client: Client) -> None:
    client.send_bundle([("/ch/1/pan", [0.25]), ("/ch/2/pan", [-0.25])])
    poll(lambda: client.query("/ch/1/pan"), lambda v: v == 0.25, "the bundle applied")
    assert client.query("/ch/2/pan") == -0.25  # together
    at = time.time() + 0.8
    client.send_bundle([("/ch/3/pan", [0.75])], at=at)
    # Every answer given before its time says "not yet", and there is one; then it
    # comes, and only after its time (less a millisecond: the time tag's rounding).
    early = []
    while (pan := client.query("/ch/3/pan")) != 0.75:
        if time.time() < at:
            early.append(pan)
        assert time.time() < at + 60, "the future bundle never applied"
        time.sleep(0.01)
    assert time.time() >= at - 1e-3
    assert early and set(early) == {0.0}, early
    client.send("/ch/*/pan", 0.0)


def test_subscriptions_feedback(served) -> None:
    # Expiry and renewal: tests/daemon/osc/test_osc_hostile.py (in-process, a short
    # subscription time).
    daemon, _ = served
    a, b = Client(daemon.port), Client(daemon.port)
    try:
        a.send("/subscribe")
        b.send("/subscribe")
        got_a = a.receive(0.6)
        got_b = b.receive(0.6)
        for got in (got_a, got_b):
            addresses = {m for m, _ in got}
            assert {"/meter", "/transport/position", "/status"} <= addresses
            meters = [args for m, args in got if m == "/meter"]
            assert len(meters) >= 5  # ~25 a second
            assert len(meters[-1]) == 5  # four channels and the master, dBFS
        a.send("/ch/4/fader", 0.5)  # a change reaches every subscriber, by name (stems)
        changed = b.receive(0.5)
        assert ("/ch/vocals/fader", [pytest.approx(0.5)]) in changed  # drums, bass, other, vocals
        a.send("/ch/4/fader", 0.75)
        a.send("/unsubscribe")
        assert ("/unsubscribe", [a.port]) in a.receive(2.0, until="/unsubscribe")
        a.receive(0.2)  # a round that took its subscribers before the /unsubscribe
        assert a.receive(0.5) == []
    finally:
        a.close()
        b.close()


def test_feedback_flag_feeds_a_surface_that_never_subscribes(tmp_path: Path) -> None:
    """``serve --feedback HOST:PORT``: a fixed surface gets every value, then every
    change, with no /subscribe (issue 26); seconds 0 keeps a subscription too
    (expiry itself: tests/daemon/osc/test_osc_feedback.py)."""
    sf.write(tmp_path / "song.wav", tone_mix(2.0, sr=SR).T, SR, subtype="FLOAT")
    surface = Client(1)  # only its socket: it listens, and never sends
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "c")}
    target = f"127.0.0.1:{surface.port}"
    daemon = Daemon(
        [str(tmp_path / "song.wav"), "--no-audio", "--http", "off", "--feedback", target],
        env,
        tmp_path,
    )
    try:
        daemon.wait_ready(separated=False)
        assert (
            f"stemdeck: info: OSC feedback to {target} until the daemon stops (--feedback)\n"
            in (daemon.lines)
        )
        state = surface.receive(30.0, until="/transport/position")
        assert ("/ch/vocals/mute", [0]) in state
        daemon.client.send("/ch/vocals/mute", 1)
        poll(
            lambda: surface.receive(0.5),
            lambda got: ("/ch/vocals/mute", [1]) in got,
            "the change fed back to the --feedback surface",
        )
        daemon.client.send("/subscribe", daemon.client.port, "index", 0)
        assert ("/subscribe", [daemon.client.port, "index", 0]) in daemon.client.receive(
            5.0, until="/subscribe"
        )
        # /ch/vocals is channel 4: drums, bass, other, vocals. The periodic meters and
        # position may come before the state (one CI run: /transport/position first).
        poll(
            lambda: daemon.client.receive(0.5),
            lambda got: ("/ch/4/mute", [1]) in got,
            "the state in the index form",
        )
    finally:
        surface.close()
        code, err = daemon.stop()
    assert code == 0, err


def test_scenes_save_recall_and_morph(served, client: Client) -> None:
    _, root = served
    client.send("/ch/1/fader", 0.5)
    client.send("/ch/2/mute", 1)
    assert ("/scene/save", ["verse"]) in client.ask("/scene/save", "verse")
    assert (root / "config" / "scenes" / "verse.toml").is_file()
    client.send("/ch/1/fader", 0.75)
    client.send("/ch/2/mute", 0)
    client.send("/scene/recall", "verse")
    poll(lambda: client.query("/ch/1/fader"), lambda v: v == pytest.approx(0.5), "the recall")
    assert client.query("/ch/2/mute") == 1
    sent = time.monotonic()
    client.send("/scene/recall", "unity", 0.6)  # shipped scene, morphing
    seen: list[float] = []

    def fader() -> float:
        seen.append(client.query("/ch/1/fader"))
        return seen[-1]

    poll(fader, lambda v: v == pytest.approx(0.75), "the end of the morph")
    assert time.monotonic() - sent >= 0.6  # the morph takes its time
    assert any(0.5 < v < 0.75 for v in seen), seen  # on its way
    assert client.query("/ch/2/mute") == 0


# The values the morph test starts from and leaves behind.
AT_REST: list[tuple[str, list[Any]]] = [("/master/fader", [0.75]), ("/ch/2/mute", [0])]
AT_REST += [("/ch/3/fader", [0.75]), ("/ch/4/solo", [0])]


def test_a_morph_leaves_hand_moves_alone(served, client: Client) -> None:
    """#21 item 5 over OSC: a long morph naming only the master's gain; hand moves on
    three channels mid-morph stand through the morph's later steps and its stop."""
    _, root = served
    (root / "config" / "scenes").mkdir(parents=True, exist_ok=True)
    (root / "config" / "scenes" / "master-half.toml").write_text("[master]\ngain = 0.5\n")
    client.send_bundle(AT_REST)
    poll(lambda: client.query("/master/gain"), lambda g: g == 1.0, "the master at unity")
    client.send("/scene/recall", "master-half", 60.0)
    master = poll(lambda: client.query("/master/gain"), lambda g: g < 1.0, "the morph under way")
    client.send("/ch/2/mute", 1)
    client.send("/ch/3/fader", 0.2)
    client.send("/ch/4/solo", 1)
    hands = {"/ch/2/mute": 1, "/ch/3/fader": pytest.approx(0.2), "/ch/4/solo": 1}
    assert {key: client.query(key) for key in hands} == hands
    # A step after the hands (the master moved on), then the scene at once stops the morph.
    master = client.query("/master/gain")
    poll(lambda: client.query("/master/gain"), lambda g: 0.5 < g < master, "a later step")
    assert {key: client.query(key) for key in hands} == hands
    client.send("/scene/recall", "master-half")
    poll(lambda: client.query("/master/gain"), lambda g: g == 0.5, "the recall")
    assert {key: client.query(key) for key in hands} == hands
    client.send_bundle(AT_REST)


def _load_error(client: Client, path: str) -> str:
    """The one reply to a refused /track/load: its /error text."""
    replies = client.ask("/track/load", path)
    assert [a for a, _ in replies] == ["/error"], replies
    return replies[0][1][0]


def test_track_load_only_from_the_library(served, client: Client) -> None:
    _, root = served
    library = root / "library"
    outside = f"/track/load: refused {{!r}}: outside the library folders {library}"
    for path in (root / "secret.wav", f"{library}/../secret.wav"):
        assert _load_error(client, str(path)) == outside.format(str(path))
    link = library / "link.wav"
    link.symlink_to(root / "secret.wav")
    assert _load_error(client, str(link)) == outside.format(str(link))
    (library / "sub").mkdir()
    (library / "sub" / "up.wav").symlink_to(Path("..") / ".." / "secret.wav")
    up = str(library / "sub" / "up.wav")
    assert _load_error(client, up) == outside.format(up)
    assert (
        _load_error(client, "../secret.wav") == "/track/load: refused '../secret.wav': no such file"
    )


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.wav", b"", "not a readable audio file"),
        ("notes.wav", b"these are my notes, not audio", "not a readable audio file"),
        ("nothing.wav", "no-frames", "the file holds no audio"),
        ("pipe.wav", "fifo", "not a regular file"),
    ],
)
def test_track_load_checks_the_file_before_acknowledging(
    served, client: Client, name: str, content, reason: str
) -> None:
    _, root = served
    path = root / "library" / name
    if content == "fifo":
        os.mkfifo(path)
    elif content == "no-frames":
        sf.write(path, np.zeros((0, 2), np.float32), SR, subtype="FLOAT")
    else:
        path.write_bytes(content)
    before = client.query("/status")
    assert _load_error(client, str(path)) == f"/track/load: refused {str(path)!r}: {reason}"
    time.sleep(0.3)
    assert client.query("/status").split()[0] == before.split()[0]  # still the same track


def _wait_status(client: Client, prefix: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = client.query("/status")
        if separated(status, prefix):
            return status
        time.sleep(0.2)
    raise AssertionError(f"{prefix} not ready: {status}")


def test_track_load_from_the_library(served, client: Client) -> None:
    _, root = served
    path = str(root / "library" / "other.wav")
    assert client.ask("/track/load", path) == [("/track/load", [path])]
    _wait_status(client, "other")
    assert client.query("/transport/position") < 5.0  # a new track starts from its beginning


def test_two_loads_in_a_row_the_last_wins(served, client: Client) -> None:
    _, root = served
    for name, seed in (("first", 11), ("second", 12)):
        sf.write(root / "library" / f"{name}.wav", tone_mix(3.0, sr=SR, seed=seed).T, SR)
    entries = set((root / "cache").iterdir())
    first, second = (str(root / "library" / f"{name}.wav") for name in ("first", "second"))
    client.drain()
    client.send("/track/load", first)
    client.send("/track/load", second)
    # Each request gets exactly one answer, when its load ends: the first is superseded
    # (or, had it finished before the second came, played: then it answers as loaded).
    # A first load that played is answered by its own thread, which the second's may
    # overtake: then the two answers come in either order.
    replies: list[tuple[str, list]] = []
    deadline = time.monotonic() + 60
    while len(replies) < 2 and time.monotonic() < deadline:
        replies += client.receive(deadline - time.monotonic(), settle=0.0)
    superseded = [("/error", ["/track/load: superseded by second"]), ("/track/load", [second])]
    played = sorted([("/track/load", [first]), ("/track/load", [second])])
    assert replies == superseded or sorted(replies) == played, replies
    assert client.receive(0.3) == []  # and nothing more
    _wait_status(client, "second")
    for _ in range(10):  # and it stays: the first never takes over
        assert client.query("/status").startswith("second ")
        time.sleep(0.1)
    # A played track's file is indexed to its audio's key once the key is taken
    # (core/separation/cache.py, file_identity), and its entry made with that key:
    # wait for both of the second's.
    new = poll(
        lambda: set((root / "cache").iterdir()) - entries,
        lambda found: {p.name.startswith(SOURCE_PREFIX) for p in found} == {True, False},
        "the second track's file index and entry",
        timeout=30,
    )
    indexes = {p for p in new if p.name.startswith(SOURCE_PREFIX)}
    separations = new - indexes
    keys = {p.name.removeprefix(PARTIAL_PREFIX) for p in separations}
    indexed = {p.read_text(encoding="ascii").strip() for p in indexes}
    if replies[0][0] == "/error":  # superseded before it played: never separated nor indexed
        assert len(separations) == 1, new
        assert indexed == keys, (indexed, keys)
    else:  # it played first: its separation may have finished before the second came,
        # and its file may be indexed to a key whose partial entry went with its worker;
        # the second's index names the second's entry
        assert len(separations) in (1, 2), new
        assert len(indexes) in (1, 2) and len(indexed & keys) >= 1, (indexed, keys)


def test_a_library_name_that_is_not_utf8_is_listed_and_loads(served, client: Client) -> None:
    # Issue 21, item 2: one Latin-1 name made /track/list unanswerable.
    _, root = served
    library = root / "library"
    raw = os.fsencode(library) + b"/caf\xe9 live.wav"
    sf.write(raw, tone_mix(3.0, sr=SR, seed=7).T, SR, format="WAV", subtype="FLOAT")
    try:
        shown = f"{library}/caf\\xe9 live.wav"
        expected = library_files([library], 200)
        assert shown in expected and os.fsdecode(raw) not in expected
        assert client.ask("/track/list") == [("/track/list", expected)]
        assert client.ask("/track/load", shown) == [("/track/load", [shown])]
        _wait_status(client, "caf\\xe9 live")
        assert client.ask("/track/name") == [("/track/name", ["caf\\xe9 live"])]
    finally:
        os.unlink(raw)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        (b"not audio", "not a readable audio file"),
        ("nan", "NaN or infinite"),
    ],
)
def test_bad_track_is_one_line_error(tmp_path: Path, content, reason: str) -> None:
    import subprocess
    import sys

    track = tmp_path / "t.wav"
    if content == "nan":
        y = np.zeros((1000, 2), np.float32)
        y[10, 1] = np.nan
        sf.write(track, y, SR, subtype="FLOAT")
    elif content is not None:
        track.write_bytes(content)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stemdeck.daemon.cli",
            "serve",
            str(track),
            "--no-audio",
            "--osc-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STEMDECK_CACHE": str(tmp_path / "c")},
    )
    assert proc.returncode == 1 and reason in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "error" in ln]) == 1


def test_hostile_datagrams_over_udp(client: Client) -> None:
    """Issue 9's hang and ReDoS datagrams against the real daemon: one exact /error each,
    and the server answers at once afterwards (tests/daemon/osc/test_osc_hostile.py has them
    all)."""
    client.drain()
    client.send_raw(bytes.fromhex("2362756e646c65000000000000000001fffffffc"))
    assert client.receive(2.0, settle=0.2) == [
        (
            "/error",
            ["malformed OSC: bundle element size -4 at byte 16 is not a positive multiple of 4"],
        )
    ]
    client.send("/ch/***********/***********x", 1)
    assert client.receive(2.0, settle=0.2) == [
        ("/error", ["no control matches /ch/***********/***********x"])
    ]
    assert client.ask("/ch/bass/mute") == [("/ch/bass/mute", [0])]
    assert client.ask("/ping") == [("/pong", [])]


def test_heap_is_settled_before_the_audio_starts(served, client: Client) -> None:
    # A full collector pass over the startup objects holds the GIL for tens of ms:
    # they are frozen before the first block, and the status line times every pass.
    daemon, _ = served
    lines = daemon.stderr.splitlines()
    heap = [i for i, line in enumerate(lines) if "objects at start frozen" in line]
    audio = [i for i, line in enumerate(lines) if "audio: " in line]
    assert len(heap) == 1 and len(audio) == 1 and heap[0] < audio[0], "\n".join(lines)
    found = re.search(r"heap: (\d+) objects at start frozen", lines[heap[0]])
    assert found is not None, lines[heap[0]]
    frozen = int(found.group(1))
    assert frozen > 20_000
    status = client.ask("/status")[-1][1][0]
    assert re.search(r" gc passes max \d+\.\d ms \(\d+ full\) \|", status), status


def test_the_mixer_runs_its_compiled_kernel(served, client: Client) -> None:
    # The numpy path hands the GIL over in every large call (core/mixer/_kernel.c):
    # the daemon says which one mixes, and the status line flags the slow one.
    daemon, _ = served
    lines = [line for line in daemon.stderr.splitlines() if "audio thread: " in line]
    assert len(lines) == 1 and lines[0].endswith("; mixer kernel compiled"), lines
    status = client.ask("/status")[-1][1][0]
    assert "mixer in numpy" not in status, status


def _thread_nice(pid: int, name: str) -> list[int]:
    """The nice value of each of ``pid``'s threads called ``name`` (/proc/PID/task)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == name:
            stat = (task / "stat").read_text()
            found.append(int(stat.rsplit(")", 1)[1].split()[16]))  # field 19: nice
    return found


def test_control_threads_outweigh_busy_neighbours(served, client: Client) -> None:
    # A CPU-bound job beside the daemon must not queue a fader move behind it: the
    # OSC threads run at nice -10 where allowed, and the status line says which.
    daemon, _ = served
    status = client.ask("/status")[-1][1][0]
    allowed = os.geteuid() == 0
    expected = "control nice -10" if allowed else "control normal priority (raising it needs"
    assert expected in status.split(" | ")[-1], status
    nice = _thread_nice(daemon.proc.pid, "stemdeck-osc")
    assert nice == ([-10] if allowed else [0])
    # Every thread that takes the GIL in steady state: one preempted while holding it
    # holds up the audio callback (daemon/realtime.py). comm keeps 15 characters.
    for name in ("stemdeck-osc-sc", "stemdeck-feedba", "stemdeck-web"):
        assert _thread_nice(daemon.proc.pid, name) == nice, name
    # The main thread and the unnamed rest (BLAS, the loader's): unchanged.
    assert set(_thread_nice(daemon.proc.pid, "python")) == {0}


def test_a_stem_file_answers_on_roles_and_a_scene_says_what_it_lacks(tmp_path: Path) -> None:
    """NI's "Vox" is /ch/vocals, labelled "Vox"; the shipped acapella scene on a file
    without an "other" stem sets the rest and answers one /error naming it."""
    from stemdeck.core.audiofile.stemfile_write import write_stem_file

    rng = np.random.default_rng(5)
    stems = rng.uniform(-0.1, 0.1, (3, 2, SR)).astype(np.float32)
    track = tmp_path / "three.stem.m4a"
    write_stem_file(
        track,
        stems.sum(axis=0),
        stems,
        SR,
        names=["Vox", "Drums", "Bass"],
        colours=["#FF0000", "#00FF00", "#0000FF"],
        codec="alac",
    )
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "c")}
    daemon = Daemon([str(track), "--no-audio"], env, tmp_path)
    daemon.wait_ready()
    client = Client(daemon.port)
    try:
        assert client.ask("/channels") == [("/channels", ["drums", "bass", "vocals"])]
        assert client.ask("/channels/labels") == [("/channels/labels", ["Drums", "Bass", "Vox"])]
        assert client.ask("/channels/colors") == [
            ("/channels/colors", ["#00FF00", "#0000FF", "#FF0000"])
        ]
        assert client.ask("/scene/recall", "acapella") == [
            (
                "/error",
                [
                    "/scene/recall: scene 'acapella' recalled without 'other': "
                    "this track has no such channel"
                ],
            )
        ]
        assert [client.query(f"/ch/{k}/gain") for k in ("drums", "bass", "vocals")] == [
            0.0,
            0.0,
            1.0,
        ]
    finally:
        client.close()
        code, err = daemon.stop()
    assert code == 0, err
    assert err.count("recalled without 'other'") == 1, err
