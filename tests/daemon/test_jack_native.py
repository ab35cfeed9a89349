"""End to end through stemdeck's own JACK client (``serve --audio jack``) on jackd's
dummy driver: the ports are named after the channels, what they carry is the mixer's
output sample for sample, the play head follows the JACK transport to the frame, and
a JACK server that dies is said once and survived."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Daemon, poll
from jack_helpers import env_for, start_jack

from stemdeck.daemon.realtime import SWITCH_INTERVAL_S

SR = 48000
pytestmark = [pytest.mark.jack, pytest.mark.e2e, pytest.mark.slow]

#: The track's marker (one loud sample in near silence), in samples.
MARKER = 2 * SR
#: The follower's target: the marker lands on its transport frame within 1 ms.
MAX_ERROR = SR // 1000


@pytest.fixture(scope="module", autouse=True)
def _prompt_gil_handover() -> Iterator[None]:
    """Our JACK client's callback must get the GIL quickly, as the daemon's does."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    yield
    sys.setswitchinterval(old)


def _server() -> tuple[str, object]:
    name = f"stemdeck-native-{os.getpid()}-{time.monotonic_ns() % 100000}"
    proc = start_jack(name, rate=SR, period=256)
    if proc is None:
        pytest.skip("jackd is not installed (scripts/setup installs jackd2)")
    return name, proc


@pytest.fixture(scope="module")
def jack_server() -> Iterator[str]:
    name, proc = _server()
    yield name
    proc.terminate()  # type: ignore[attr-defined]
    proc.wait(timeout=10)  # type: ignore[attr-defined]


class Session:
    """The test's own JACK client: records ``stemdeck`` ports, stamps every block with
    the transport's state and frame, and moves the transport."""

    def __init__(self, server: str, channels: int = 2) -> None:
        import jack

        self.jack = jack
        self.client = jack.Client("stemdeck-session", servername=server, no_start_server=True)
        self.inports = [self.client.inports.register(f"in_{i + 1}") for i in range(channels)]
        self.blocks: list[tuple[int, bool, np.ndarray]] = []
        self.recording = False
        self.xruns = 0  # every client's xruns on the server, as JACK reports them

        @self.client.set_xrun_callback
        def xrun(delay: float) -> None:
            self.xruns += 1

        @self.client.set_process_callback
        def process(frames: int) -> None:
            if self.recording:
                state, pos = self.client.transport_query_struct()
                data = np.stack([p.get_array().copy() for p in self.inports], axis=1)
                self.blocks.append((int(pos.frame), state == jack.ROLLING, data))

        self.client.transport_stop()
        self.client.transport_frame = 0
        self.client.activate()

    def connect(self, ports: list[str]) -> None:
        for src, dst in zip(ports, self.inports, strict=True):
            self.client.connect(src, dst)

    def ports(self) -> list[str]:
        return [p.name for p in self.client.get_ports("stemdeck:", is_audio=True, is_output=True)]

    def record_until(self, check: object, what: str, timeout: float = 60.0) -> None:
        """Record until ``check(blocks)`` holds (polled, bounded)."""
        self.blocks = []
        self.recording = True
        try:
            poll(lambda: list(self.blocks), check, what, timeout=timeout)  # type: ignore[arg-type]
        finally:
            self.recording = False

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def _frames(blocks: list[tuple[int, bool, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(transport frame of every recorded sample, the audio); -1 where stopped."""
    frames = [
        (f + np.arange(len(d))) if rolling else np.full(len(d), -1) for f, rolling, d in blocks
    ]
    return np.concatenate(frames), np.concatenate([d for _, _, d in blocks])


def _marker_frame(blocks: list[tuple[int, bool, np.ndarray]]) -> int:
    """The transport frame at which the marker sounded in the recording."""
    frames, audio = _frames(blocks)
    loudest = int(np.argmax(np.abs(audio[:, 0])))
    assert abs(audio[loudest, 0]) > 0.5, "the marker was not heard"
    print(f"marker heard at transport frame {int(frames[loudest])}")
    return int(frames[loudest])


def _passed(frame: int) -> Callable[[list[tuple[int, bool, np.ndarray]]], bool]:
    return lambda blocks: bool(blocks) and blocks[-1][1] and blocks[-1][0] > frame


@pytest.fixture(scope="module")
def following(jack_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    root = tmp_path_factory.mktemp("native")
    track = root / "marker.wav"
    y = 1e-4 * np.random.default_rng(3).standard_normal((5 * SR, 2))
    y[MARKER] = 0.9
    sf.write(track, y.astype(np.float32), SR, subtype="FLOAT")
    env = {
        **env_for(jack_server),
        "STEMDECK_CACHE": str(root / "cache"),
        "STEMDECK_CONFIG": str(root / "config"),
    }
    daemon = Daemon([str(track), "--audio", "jack", "--sync", "jack"], env, root)
    daemon.wait_ready()
    session = Session(jack_server)
    session.connect(["stemdeck:master_L", "stemdeck:master_R"])
    yield daemon, session
    session.close()
    code, err = daemon.stop()
    assert code == 0, err


def test_ports_are_named_after_the_channels(jack_server: str, tmp_path: Path) -> None:
    track = tmp_path / "t.wav"
    sf.write(track, 0.1 * np.ones((SR, 2), np.float32), SR, subtype="FLOAT")
    env = {**env_for(jack_server), "STEMDECK_CACHE": str(tmp_path / "cache")}
    daemon = Daemon([str(track), "--audio", "jack", "--outputs", "channels"], env, tmp_path)
    try:
        daemon.wait_ready(separated=False)
        import jack

        probe = jack.Client("stemdeck-probe-ports", servername=jack_server, no_start_server=True)
        try:
            names = [p.name for p in probe.get_ports("stemdeck:", is_output=True)]
            # --outputs channels connects nothing by default (a DAW takes the stems)
            linked = probe.get_all_connections("stemdeck:drums_L")
        finally:
            probe.close()
    finally:
        code, err = daemon.stop()
    assert names == [
        f"stemdeck:{c}_{side}" for c in ("drums", "bass", "other", "vocals") for side in "LR"
    ]
    assert linked == []
    assert code == 0, err


def test_jack_ports_carry_the_mixers_output_exactly(jack_server: str, tmp_path: Path) -> None:
    track = tmp_path / "noise.wav"
    y = 0.2 * np.random.default_rng(5).standard_normal((3 * SR, 2))
    sf.write(track, y.astype(np.float32), SR, subtype="FLOAT")
    env = {**env_for(jack_server), "STEMDECK_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out.wav"
    daemon = Daemon([str(track), "--audio", "jack", "--record", str(out)], env, tmp_path)
    session = None
    try:
        daemon.wait_ready(separated=False)
        session = Session(jack_server)
        session.connect(["stemdeck:master_L", "stemdeck:master_R"])
        session.record_until(lambda b: len(b) * 256 >= SR // 2, "half a second recorded")
        _, heard = _frames(session.blocks)
    finally:
        if session is not None:
            session.close()
        code, err = daemon.stop()
    assert code == 0, err
    written, _ = sf.read(out, dtype="float32")
    # Every block heard on the ports is a block the mixer wrote, sample for sample, in
    # order. On a loaded machine a late client (ours records in Python) may miss or
    # repeat a period; each break in the sequence must then be one JACK reported.
    offsets = [_block_offset(written, heard[i : i + 256]) for i in range(0, len(heard), 256)]
    assert all(o >= 0 for o in offsets), offsets
    breaks = sum(b - a != 256 for a, b in itertools.pairwise(offsets))
    assert breaks <= session.xruns, (breaks, session.xruns, offsets)
    assert np.abs(heard).max() > 0.1


def _block_offset(written: np.ndarray, block: np.ndarray) -> int:
    """Where ``block`` stands in ``written``, matched exactly (-1: nowhere)."""
    for i in np.flatnonzero(np.all(written == block[0], axis=1)):
        if np.array_equal(written[i : i + len(block)], block):
            return int(i)
    return -1


def test_transport_start_stop_and_locate_move_the_play_head(following) -> None:
    _, session = following
    client = session.client
    # Stopped: silence (the daemon paused as it started following).
    session.record_until(lambda b: len(b) >= 40, "a stopped stretch")
    _, audio = _frames(session.blocks)
    assert np.abs(audio).max() < 1e-3
    # Start from a located frame before the marker: it sounds at its own frame.
    client.transport_frame = MARKER - SR // 2 + 37
    client.transport_start()
    session.record_until(_passed(MARKER + SR // 10), "the transport past the marker")
    assert abs(_marker_frame(session.blocks) - MARKER) <= MAX_ERROR
    # A locate while rolling: the marker again, at its frame.
    client.transport_frame = MARKER - SR // 3 - 11
    # A locate takes effect at a later JACK cycle: until then the transport is still past
    # the marker, so wait for a block from before it, then for the transport passing it.
    session.record_until(
        lambda b: (
            any(r and f < MARKER - SR // 10 for f, r, _ in b) and _passed(MARKER + SR // 10)(b)
        ),
        "the transport located before the marker and past it again",
    )
    assert abs(_marker_frame(session.blocks) - MARKER) <= MAX_ERROR
    # Stopped: the music stops (after its 5 ms fade).
    client.transport_stop()
    session.record_until(
        lambda b: sum(not r for _, r, _ in b) * 256 >= SR // 5, "a fifth of a second stopped"
    )
    stopped = np.concatenate([d for _, r, d in session.blocks if not r][2:])
    assert np.abs(stopped).max() == 0.0


def test_anchor_moves_the_track_against_the_session(following) -> None:
    daemon, session = following
    client = session.client
    try:
        assert daemon.client.ask("/sync/anchor", 0.5) == [("/sync/anchor", [0.5])]
        # the track's second 0.5 sits at frame 0: the marker at 1.5 s of the session
        expected = MARKER - SR // 2
        client.transport_frame = expected - SR // 4 + 5
        client.transport_start()
        session.record_until(_passed(expected + SR // 10), "the transport past the marker")
        assert abs(_marker_frame(session.blocks) - expected) <= MAX_ERROR
    finally:
        client.transport_stop()
        daemon.client.ask("/sync/anchor", 0.0)


def test_sync_source_over_osc(following) -> None:
    daemon, _ = following
    assert daemon.client.ask("/sync/source") == [("/sync/source", ["jack"])]
    # (not link: a Link session multicasts on the machine's network; test_link_e2e.py)
    assert daemon.client.ask("/sync/source", "beat") == [
        ("/error", ["/sync/source: unknown sync source 'beat'; one of off, jack, midi, link"])
    ]
    assert daemon.client.ask("/sync/source", "off") == [("/sync/source", ["off"])]
    assert daemon.client.ask("/sync/source", "jack") == [("/sync/source", ["jack"])]


def test_jackd_stopped_mid_play_is_said_once(tmp_path: Path) -> None:
    name, proc = _server()
    track = tmp_path / "t.wav"
    sf.write(track, 0.1 * np.ones((2 * SR, 2), np.float32), SR, subtype="FLOAT")
    env = {**env_for(name), "STEMDECK_CACHE": str(tmp_path / "cache")}
    daemon = Daemon([str(track), "--audio", "jack", "--sync", "jack"], env, tmp_path)
    try:
        daemon.wait_ready(separated=False)
        # SIGTERM, not SIGKILL: a jackd killed outright keeps its slot in jackd2's
        # server registry (/dev/shm/jack-shm-registry, 8 slots) and its name, so after
        # eight such runs no JACK server starts on the machine at all. The client's side
        # is the same either way: libjack calls the shutdown callback.
        proc.terminate()  # type: ignore[attr-defined]
        proc.wait(timeout=10)  # type: ignore[attr-defined]
        poll(lambda: daemon.stderr, lambda e: "JACK stopped" in e, "the daemon saying so")
        # still answering, on a null clock that keeps time, with sync off
        assert daemon.client.ask("/ping") == [("/pong", [])]
        assert daemon.client.ask("/sync/source") == [("/sync/source", ["off"])]
        before = daemon.client.query("/transport/position")
        poll(
            lambda: daemon.client.query("/transport/position"),
            lambda p: p != before,
            "the play head moving on the null clock",
        )
    finally:
        if proc.poll() is None:  # type: ignore[attr-defined]
            proc.kill()  # type: ignore[attr-defined]
        code, err = daemon.stop()
    assert code == 0, err
    lines = [line for line in err.splitlines() if "JACK stopped" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err


def test_ports_are_renamed_after_a_new_tracks_channels(
    jack_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process: a JackSink on the real mixer, renamed as the supervisor does
    when a track with other channel names is loaded."""
    import jack

    from stemdeck.core.mixer.engine import Mixer
    from stemdeck.daemon.audio.jack import JackSink, open_client

    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server)
    mixer = Mixer(max_channels=2)
    client = open_client("stemdeck-rename")
    mixer.prepare(int(client.samplerate), int(client.blocksize), outputs="channels")
    sink = JackSink(
        mixer,
        mixer.sr,
        mixer.max_block,
        mixer.out_channels,
        None,
        client=client,
        names=["drums", "bass"],
        outputs="channels",
        connect=False,
    )
    probe = jack.Client("stemdeck-probe-rename", servername=jack_server, no_start_server=True)
    try:
        sink.start()

        def ports() -> list[str]:
            return [p.name for p in probe.get_ports("stemdeck-rename:", is_output=True)]

        first = ("drums_L", "drums_R", "bass_L", "bass_R")
        assert ports() == [f"stemdeck-rename:{n}" for n in first]
        sink.rename(["Vox", "Inst"])
        poll(
            ports,
            lambda p: p == [f"stemdeck-rename:{n}" for n in ("Vox_L", "Vox_R", "Inst_L", "Inst_R")],
            "the ports renamed",
        )
        poll(lambda: mixer.blocks, lambda b: b > 10, "the mixer called by JACK")
        assert sink.errors == 0
    finally:
        probe.close()
        sink.stop()


def _serve_error(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", "serve", *args, "--http", "off"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **env},
    )
    return proc.returncode, [ln for ln in proc.stderr.splitlines() if ": error: " in ln]


def test_no_jack_server_is_one_line(tmp_path: Path) -> None:
    track = tmp_path / "t.wav"
    sf.write(track, np.zeros((SR, 2), np.float32), SR, subtype="FLOAT")
    env = {**env_for("stemdeck-no-such-server"), "STEMDECK_CACHE": str(tmp_path / "cache")}
    code, errors = _serve_error([str(track), "--audio", "jack", "--osc-port", "0"], env, tmp_path)
    assert code == 1
    assert errors == [
        "stemdeck: error: cannot open a JACK client: no JACK server 'stemdeck-no-such-server' "
        "is running; start jackd, or drop --audio jack"
    ]
    code, errors = _serve_error([str(track), "--sync", "jack", "--no-audio"], env, tmp_path)
    assert code == 1
    assert errors == ["stemdeck: error: jack sync needs stemdeck's JACK client: serve --audio jack"]
    code, errors = _serve_error([str(track), "--sync", "midi", "--no-audio"], env, tmp_path)
    assert code == 1
    assert errors == ["stemdeck: error: midi sync needs a MIDI clock input: serve --sync-midi PORT"]
