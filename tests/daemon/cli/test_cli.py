"""The command line as a user meets it: files written, errors as one line."""

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, TINY, tone_mix
from stemdeck.core.errors import ParameterError
from stemdeck.daemon import outputs
from stemdeck.daemon.cli import main

FAST = TINY


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture
def track(tmp_path: Path) -> Path:
    path = tmp_path / "my song.flac"
    sf.write(path, tone_mix(2.0).T, SR, subtype="PCM_24")
    return path


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        ([], ["bass", "drums", "other", "vocals"]),
        (["--stems"], ["bass", "drums", "other", "vocals"]),
        (["--components", "4"], [f"component_0{i}" for i in range(1, 5)]),
    ],
)
def test_separate_writes_channels(
    tmp_path: Path,
    track: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    names: list[str],
) -> None:
    out = tmp_path / "out"
    assert main(["separate", str(track), "-o", str(out), "--preset", str(FAST), *flags]) == 0
    files = sorted((out / "my song").iterdir())
    assert [f.name for f in files] == [f"{n}.wav" for n in names]
    total = None
    for f in files:
        info = sf.info(f)
        assert info.samplerate == SR and info.channels == 2 and info.subtype == "FLOAT"
        data, _ = sf.read(f, dtype="float32")
        total = data if total is None else total + data
    original, _ = sf.read(track, dtype="float32")
    res = np.sum((original - total) ** 2) / np.sum(original**2)
    assert 10 * np.log10(res) < -60
    assert "wrote 4 files" in capsys.readouterr().out


def test_components_flag_and_flac_and_cache(
    tmp_path: Path, track: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "separate",
        str(track),
        "-o",
        str(tmp_path / "o"),
        "--preset",
        str(FAST),
        "--components",
        "3",
        "--format",
        "flac",
    ]
    assert main(args) == 0
    files = sorted((tmp_path / "o" / "my song").glob("*.flac"))
    assert len(files) == 3 and sf.info(files[0]).subtype == "PCM_24"
    capsys.readouterr()
    assert main(args) == 0
    assert "from the cache" in capsys.readouterr().err


def test_mono_track_gives_mono_files(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    sf.write(path, tone_mix(1.0, stereo=False)[0], 16000)
    assert main(["separate", str(path), "-o", str(tmp_path), "--preset", str(FAST)]) == 0
    info = sf.info(tmp_path / "mono" / "bass.wav")
    assert info.channels == 1 and info.samplerate == 16000


@pytest.mark.slow  # about 2 s
def test_plot_writes_png(tmp_path: Path, track: Path) -> None:
    fig = tmp_path / "fig.png"
    assert main(["plot", str(track), "-o", str(fig), "--preset", str(FAST)]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["separate", "/no/such/file.wav", "-o", "x"], "no such file"),
        (["separate", "{notaudio}", "-o", "x"], "not a readable audio file"),
        (["separate", "{track}", "-o", "x", "--preset", "nope"], "no separation preset 'nope'"),
        (["separate", "-o", "x"], "no TRACK given"),
        (["separate", "{track}", "-o", "x", "--components", "zero"], "expected a positive integer"),
        (["separate", "{track}", "-o", "x", "--format", "mp4"], "invalid choice"),
        (["separate", "{track}", "-o", "x", "--stems", "--components", "3"], "not allowed with"),
        (
            ["separate", "{track}", "-o", "/proc/forbidden/out", "--preset", str(FAST)],
            "cannot create",
        ),
        (["plot", "{track}"], "required: -o/--output"),
    ],
)
def test_errors_are_one_line_no_traceback(
    tmp_path: Path, track: Path, args: list[str], message: str
) -> None:
    notaudio = tmp_path / "notes.wav"
    notaudio.write_text("just text")
    args = [a.format(track=track, notaudio=notaudio) for a in args]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr
    error_lines = [ln for ln in lines if "error" in ln]
    assert len(error_lines) == 1, proc.stderr


class _Responder:
    """A UDP OSC peer on 127.0.0.1 that records every datagram it gets, answers the
    first with ``replies`` messages (or the bytes ``raw``), and a ``/ping`` with
    ``/pong`` when ``pong`` (as the daemon does); silent otherwise."""

    def __init__(self, replies: int = 0, raw: bytes | None = None, *, pong: bool = True) -> None:
        import socket
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.replies = replies
        self.raw = raw  # one reply of these very bytes
        self.pong = pong
        self.got: list[tuple[str, list]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from pythonosc import osc_packet

        from stemdeck.daemon.osc.wire import encode_message

        first = True
        while not self.stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for timed in osc_packet.OscPacket(data).messages:
                self.got.append((timed.message.address, list(timed.message.params)))
            if self.got[-1] == ("/ping", []) and not first:
                if self.pong:
                    self.sock.sendto(encode_message("/pong", []), sender)
                continue
            first = False
            if self.raw is not None:
                self.sock.sendto(self.raw, sender)
            for i in range(self.replies):  # paced: a burst would overflow the socket buffer
                self.sock.sendto(encode_message(f"/ch/{i}/name", ["x" * 500]), sender)
                time.sleep(0.001)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("-inf", float("-inf")), ("-1e-3", -1e-3), ("-6", -6), ("-.5", -0.5)],
)
def test_send_takes_negative_values(value: str, expected: float) -> None:
    peer = _Responder()
    try:
        assert main(["send", str(peer.port), "/ch/1/db", value, "--timeout", "5"]) == 0
    finally:
        peer.close()
    assert peer.got == [("/ch/1/db", [pytest.approx(expected)]), ("/ping", [])]
    assert type(peer.got[0][1][0]) is (int if value == "-6" else float)


@pytest.mark.e2e
def test_send_into_a_closed_pipe_is_quiet() -> None:
    peer = _Responder(replies=200)  # 100 KB of output: flushed after head is gone
    try:
        proc = subprocess.run(
            f"{sys.executable} -m stemdeck.daemon.cli send {peer.port} /state --timeout 3"
            " | head -1",
            shell=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        peer.close()
    assert proc.stdout == f"/ch/0/name '{'x' * 500}'\n"
    assert proc.stderr == "", proc.stderr


def test_send_prints_each_message_of_a_bundle_with_every_type_the_daemon_sends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The replies are decoded by stemdeck's own decoder; the bundle here is built by
    python-osc, an encoder independent of it."""
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    first = OscMessageBuilder("/ch/1/fader")
    typed: list[tuple[float | str | bytes | None, str]] = [
        (0.5, "f"), (3, "i"), (2**40, "h"), (1e300, "d"), ("vocals", "s"),
        (True, "T"), (False, "F"), (None, "N"), (b"\x01\x02", "b"),
    ]  # fmt: skip
    for value, tag in typed:
        first.add_arg(value, tag)
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(first.build())
    bundle.add_content(OscMessageBuilder("/state/end").build())
    peer = _Responder(raw=bundle.build().dgram)
    try:
        assert main(["send", str(peer.port), "/state", "--timeout", "3"]) == 0
    finally:
        peer.close()
    assert capsys.readouterr().out.splitlines() == [
        "/ch/1/fader 0.5 3 1099511627776 1e+300 'vocals' True False None b'\\x01\\x02'",
        "/state/end",
    ]


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"/ch/1/fader\x00,f\x00\x00", "argument 1 ('f') of /ch/1/fader is missing"),
        (b"junk", "neither a message ('/...') nor a bundle"),
        (b"/ch\x00,c\x00\x00\x00\x00\x00A", "argument 1 of /ch is an OSC Char"),
    ],
)
def test_send_a_malformed_reply_is_one_error_line(
    capsys: pytest.CaptureFixture[str], reply: bytes, why: str
) -> None:
    peer = _Responder(raw=reply)
    try:
        assert main(["send", str(peer.port), "/ping", "--timeout", "3"]) == 1
    finally:
        peer.close()
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith(f"stemdeck: error: malformed reply from 127.0.0.1:{peer.port}: ")
    assert why in line, line


@pytest.fixture
def osc_daemon(monkeypatch: pytest.MonkeyPatch):
    """The daemon's OSC server, in-process on a free port (``tests/osc_host.py``); its
    log (which would share ``send``'s stderr here) is off."""
    import logging

    from osc_host import make_server

    monkeypatch.setattr(logging.getLogger("stemdeck.daemon.osc.dispatch"), "disabled", True)
    host, server = make_server()
    server.start()
    yield host, server.address[1]
    server.stop()


def test_send_a_set_prints_nothing_and_exits_0_once_the_daemon_answered(
    osc_daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = osc_daemon
    started = time.monotonic()
    assert main(["send", str(port), "/ch/vocals/fader", "0.5", "--timeout", "60"]) == 0
    assert time.monotonic() - started < 30  # ended by the daemon's /pong, not the timeout
    assert capsys.readouterr() == ("", "")
    assert host.registry.get("/ch/3/fader") == 0.5


def test_send_prints_the_replies_of_a_query_and_exits_0(
    osc_daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    _host, port = osc_daemon
    assert main(["send", str(port), "/ch/*/mute", "--timeout", "60"]) == 0
    assert capsys.readouterr() == (
        "/ch/1/mute 0\n/ch/2/mute 0\n/ch/3/mute 0\n/ch/4/mute 0\n",
        "",
    )
    assert main(["send", str(port), "/ping", "--timeout", "60"]) == 0
    assert capsys.readouterr() == ("/pong\n", "")


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            ["/ch/9/fader", "0.5"],
            "unknown channel '9' in /ch/9/fader; channels are 1..4 or drums, bass, vocals, other",
        ),
        (["/nope", "1"], "/nope: unknown address"),
    ],
)
def test_send_an_error_reply_is_one_line_on_stderr_and_exit_1(
    osc_daemon, capsys: pytest.CaptureFixture[str], message: list[str], error: str
) -> None:
    host, port = osc_daemon
    before = host.registry.snapshot()
    assert main(["send", str(port), *message, "--timeout", "60"]) == 1
    assert capsys.readouterr() == (
        "",
        f"stemdeck: error: /error from 127.0.0.1:{port}: {error}\n",
    )
    assert host.registry.snapshot() == before


def test_send_to_a_port_where_nothing_listens_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert main(["send", str(port), "/ch/1/fader", "0.5", "--timeout", "60"]) == 1
    assert capsys.readouterr() == (
        "",
        f"stemdeck: error: no reply from 127.0.0.1:{port}: nothing listens on that port "
        f"(is stemdeck serve running with --osc-port {port}?)\n",
    )


def test_send_to_a_silent_peer_exits_1_after_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    peer = _Responder(pong=False)
    try:
        assert main(["send", str(peer.port), "/ch/1/mute", "1", "--timeout", "0.3"]) == 1
    finally:
        peer.close()
    assert peer.got == [("/ch/1/mute", [1]), ("/ping", [])]
    assert capsys.readouterr() == (
        "",
        f"stemdeck: error: no reply from 127.0.0.1:{peer.port} within 0.3 s "
        "(is stemdeck serve running there? a longer --timeout waits more)\n",
    )


def test_send_a_peer_that_answers_without_pong_is_an_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another OSC program answers a query but not /ping: its replies count."""
    peer = _Responder(replies=1, pong=False)
    try:
        assert main(["send", str(peer.port), "/ch/0/name", "--timeout", "60"]) == 0
    finally:
        peer.close()
    assert capsys.readouterr() == (f"/ch/0/name '{'x' * 500}'\n", "")


@pytest.mark.parametrize("timeout", ["0", "-1", "nan"])
def test_send_timeout_must_be_positive(capsys: pytest.CaptureFixture[str], timeout: str) -> None:
    assert main(["send", "9", "/ping", "--timeout", timeout]) == 1
    assert capsys.readouterr() == (
        "",
        f"stemdeck: error: --timeout must be a positive number of seconds, got {float(timeout)}\n",
    )


# -- outputs: modes, all or nothing, a full disk, odd names -------------------------------
def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if "error" in ln]


def _disk_full(folder: Path) -> str:
    mount = folder.parent.resolve()
    while not os.path.ismount(mount):
        mount = mount.parent
    return (
        f"stemdeck: error: cannot write {str(folder)!r}: No space left on device (the disk "
        f"at {str(mount)!r} is full; free some space on it or choose another output folder)"
    )


def test_separate_writes_files_with_the_mode_the_umask_gives(tmp_path: Path, track: Path) -> None:
    old = os.umask(0o022)
    try:
        assert main(["separate", str(track), "-o", str(tmp_path / "o"), "--preset", str(FAST)]) == 0
    finally:
        os.umask(old)
    folder = tmp_path / "o" / "my song"
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
    assert modes == {f"{n}.wav": "0o644" for n in ["bass", "drums", "other", "vocals"]}
    assert oct(folder.stat().st_mode & 0o777) == "0o755"


@pytest.mark.parametrize("older", [False, True])
def test_separate_on_a_full_disk_writes_no_stem_and_keeps_the_older_set(
    tmp_path: Path,
    track: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    older: bool,
) -> None:
    """It used to say "System error" and leave 2 of the 4 stems."""
    out = tmp_path / "o"
    folder = out / "my song"
    args = ["separate", str(track), "-o", str(out), "--preset", str(FAST), "--no-cache"]
    if older:
        assert main(args) == 0
        (folder / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()} if older else None
    real = outputs.write
    calls: list[str] = []

    def third_fills_the_disk(path, y, sr, *, fmt="wav"):
        calls.append(Path(path).name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, y, sr, fmt=fmt)

    monkeypatch.setattr(outputs, "write", third_fills_the_disk)
    capsys.readouterr()
    assert main(args) == 1
    assert _error_lines(capsys.readouterr().err) == [_disk_full(folder)]
    assert len(calls) == 3
    if older:
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in out.iterdir()] == (["my song"] if older else [])


def test_separate_names_its_outputs_safely(tmp_path: Path) -> None:
    """A hidden name with a control character, and a name whose stem file name would
    pass 255 bytes (it was "File name too long", after the separation)."""
    odd = tmp_path / ".odd\x01name.wav"
    emoji = tmp_path / ("\U0001f3b5" * 62 + ".wav")  # 252 bytes; + .stem.mp4: 257
    for path in (odd, emoji):
        sf.write(path, tone_mix(1.0).T, 44100)
    out = tmp_path / "o"
    assert main(["separate", str(odd), "-o", str(out), "--preset", str(FAST)]) == 0
    stem = ["separate", str(emoji), "-o", str(out), "--preset", str(FAST), "--format", "stem.mp4"]
    assert main(stem) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "_odd_name",
        "\U0001f3b5" * 61 + ".stem.mp4",
    ]
    assert sorted(p.name for p in (out / "_odd_name").iterdir()) == [
        "bass.wav",
        "drums.wav",
        "other.wav",
        "vocals.wav",
    ]


@pytest.mark.e2e  # a strict UTF-8 stdout, as a pipe into a UTF-8-only tool gives
def test_separate_into_a_folder_whose_name_is_not_utf8_says_so_in_text(
    tmp_path: Path, track: Path
) -> None:
    """Hostile review, issue 21: the files were written, then printing the folder's name
    raised UnicodeEncodeError (a traceback, exit status 1)."""
    out = os.fsdecode(os.fsencode(tmp_path) + b"/o\xe9")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    command = ["separate", str(track), "-o", out, "--preset", str(FAST)]
    proc = subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"stemdeck: info: my song: 4 channels in \d+\.\d s\n", proc.stderr)
    assert proc.stdout == f"wrote 4 files to {tmp_path}/o\\xe9/my song\n"
    assert sorted(p.name for p in (Path(out) / "my song").iterdir()) == [
        "bass.wav",
        "drums.wav",
        "other.wav",
        "vocals.wav",
    ]


# -- a quiet, plain start (issue 26) -----------------------------------------------------
def test_c_library_stderr_goes_to_the_debug_log(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from stemdeck.daemon.c_stderr import captured

    log = logging.getLogger("stemdeck.test")
    with caplog.at_level(logging.DEBUG, logger="stemdeck.test"):
        with captured(log, "ALSA"):
            os.write(2, b"ALSA lib seq_hw.c:466:(snd_seq_hw_open) open /dev/snd/seq failed\n\n")
            os.write(2, b"Cannot connect to server socket\n")
        os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "ALSA: ALSA lib seq_hw.c:466:(snd_seq_hw_open) open /dev/snd/seq failed"),
        (logging.DEBUG, "ALSA: Cannot connect to server socket"),
    ]


@pytest.mark.e2e  # PortAudio and rtmidi probe ALSA and JACK for real
@pytest.mark.skipif(
    os.path.exists("/dev/snd"), reason="the exact lines are those of a machine with no sound card"
)
def test_devices_prints_plain_lines_and_no_library_noise(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MIDO_BACKEND", "JACK_DEFAULT_SERVER")}
    env["JACK_DEFAULT_SERVER"] = f"stemdeck-none-{os.getpid()}"  # no JACK server by that name
    proc = subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", "devices"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.splitlines() == [
        "audio outputs:",
        "  none (serve runs on a null clock)",
        "MIDI: unavailable (ALSA: error creating ALSA sequencer client object.; "
        "JACK: JACK server not running?)",
    ]
    verbose = subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", "-v", "devices"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert verbose.stdout == proc.stdout
    assert "stemdeck: debug: rtmidi: ALSA lib seq_hw.c" in verbose.stderr  # kept, for -v


@pytest.mark.e2e  # a `stemdeck demo` subprocess
def test_demo_start_prints_only_what_a_user_needs(tmp_path: Path) -> None:
    from daemon_helpers import Daemon

    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "c")}
    daemon = Daemon(["--no-audio"], env, tmp_path, command="demo")
    try:
        daemon.wait_ready()
        url = daemon.http_url()
    finally:
        code, err = daemon.stop()
    assert code == 0, err
    lines = err.splitlines()
    assert lines[-1] == "stemdeck: info: stopped", err
    # The loader's lines and the servers' come from different threads: any order.
    assert sorted(lines[:-1]) == sorted(
        [
            "stemdeck: info: no audio output (--no-audio): a real-time null clock drives "
            "the engine",
            "stemdeck: info: audio: null clock, 48000 Hz, 256 frames",
            "stemdeck: info: stemdeck-demo: playing the original while separating (stems mode)",
            f"stemdeck: info: OSC on 127.0.0.1:{daemon.port}",
            f"stemdeck: info: mixer on {url}",
            "stemdeck: info: stemdeck-demo: channels ready",
        ]
    ), err


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "1e400", "two"])
def test_max_minutes_must_be_a_finite_number_above_zero(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from stemdeck.daemon.cli.parser import EXIT_USAGE, build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "t.wav"]).max_minutes == 120.0
    assert parser.parse_args(["serve", "t.wav", "--max-minutes", "1.5"]).max_minutes == 1.5
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["serve", "t.wav", "--max-minutes", value])
    assert exit.value.code == EXIT_USAGE
    assert capsys.readouterr().err.endswith(
        f"error: argument --max-minutes: expected minutes above 0, got {value!r}\n"
    )


@pytest.mark.slow  # about 2 s
def test_send_waits_for_the_track_load_reply_that_comes_when_the_load_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """/track/load is answered once the track plays: later than send's usual second."""
    import socket
    import threading

    from stemdeck.daemon.osc.wire import encode_message

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(10)

        def answer_late() -> None:
            _, sender = peer.recvfrom(65536)
            time.sleep(1.5)  # the file being read
            peer.sendto(encode_message("/track/load", ["/music/a.wav"]), sender)

        thread = threading.Thread(target=answer_late)
        thread.start()
        began = time.monotonic()
        assert main(["send", str(peer.getsockname()[1]), "/track/load", "/music/a.wav"]) == 0
        took = time.monotonic() - began
        thread.join()
    assert took < 30  # done once the reply came, not at the end of the 60 s
    assert capsys.readouterr().out == "/track/load '/music/a.wav'\n"


def test_the_command_line_module_is_light_and_serve_starts_the_fork_server() -> None:
    """The fork server imports the ``stemdeck`` command as its main module: importing
    it imports no command, no parser, no numpy (0.2 s the server spent before its
    own imports). serve and demo start the fork server before the daemon; other
    commands do not."""
    script = """
import sys
import stemdeck.daemon.cli
heavy = ("numpy", "stemdeck.daemon.cli.parser", "stemdeck.daemon.cli.commands")
light = [m for m in heavy if m in sys.modules]
import stemdeck.daemon.cli.commands as commands
import stemdeck.daemon.forkserver as fs
calls = []
fs.warm_up = lambda context: calls.append("fork server")
commands.cmd_serve = lambda args: calls.append(args.command) or 0
commands.cmd_devices = lambda args: calls.append("devices") or 0
from stemdeck.daemon.cli import main
codes = [main(["demo"]), main(["devices"]), main(["serve", "x.wav"])]
print(light, calls, codes)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == (
        "[] ['fork server', 'demo', 'devices', 'fork server', 'serve'] [0, 0, 0]"
    )


def test_the_daemon_imports_its_osc_server_once_the_audio_runs(tmp_path: Path) -> None:
    """When ``serve`` starts its audio, the OSC server, its dispatch table and the
    wire format are not imported yet (25 ms before the first sound:
    daemon/osc/__init__.py), only the package, for the feedback forms the parser
    checks. Its names still come from the package when asked for, and a name it
    does not have is an AttributeError, not a wrong import."""
    track = tmp_path / "t.wav"
    sf.write(track, tone_mix(1.0).T, SR)
    script = f"""
import sys
import stemdeck.daemon.serve as serve
def start(self):
    print(sorted(m for m in sys.modules if m.startswith("stemdeck.daemon.osc")), flush=True)
    raise KeyboardInterrupt  # the audio would start here: stop
serve.AudioSupervisor.start = start
from stemdeck.daemon.cli import main
print(main(["serve", {str(track)!r}, "--no-audio", "--http", "off", "--no-cache"]))
from stemdeck.daemon.osc import FORMS, Counters, OscServer, limits
from stemdeck.daemon.osc.server import OscServer as defined
print(FORMS, OscServer is defined, Counters.__module__, limits.__name__)
import stemdeck.daemon.osc as osc
try:
    osc.nothing
except AttributeError as exc:
    print(exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.splitlines() == [
        "['stemdeck.daemon.osc']",
        "130",
        "('names', 'index', 'reaper', 'ardour') True stemdeck.daemon.osc.dispatch "
        "stemdeck.daemon.osc.limits",
        "module 'stemdeck.daemon.osc' has no attribute 'nothing'",
    ]


def test_the_daemon_analyses_beats_in_a_process_of_its_own(tmp_path: Path) -> None:
    """``serve``'s beat grid comes from :func:`~stemdeck.daemon.beats_worker.analyze_apart`
    (a niced process: tests/daemon/test_beats_worker.py), never from the analysis
    run in the daemon's thread, whose GIL the audio callback waits for."""
    track = tmp_path / "t.wav"
    sf.write(track, tone_mix(1.0).T, SR)
    script = f"""
import stemdeck.daemon.serve as serve
import stemdeck.daemon.track_beats as track_beats
made = track_beats.TrackBeats.__init__
def init(self, *args, **kwargs):
    analyze = kwargs["analyze"]
    print(analyze.__module__, analyze.__name__, flush=True)
    made(self, *args, **kwargs)
track_beats.TrackBeats.__init__ = init
def start(self):
    raise KeyboardInterrupt  # the audio would start here: stop
serve.AudioSupervisor.start = start
from stemdeck.daemon.cli import main
print(main(["serve", {str(track)!r}, "--no-audio", "--http", "off", "--no-cache"]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.splitlines() == ["stemdeck.daemon.beats_worker analyze_apart", "130"]


def test_an_interrupt_while_the_fork_server_starts_is_one_line() -> None:
    script = """
import stemdeck.daemon.forkserver as fs

def interrupted(context):
    raise KeyboardInterrupt

fs.warm_up = interrupted
from stemdeck.daemon.cli import main
print(main(["demo"]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (out.stdout, out.stderr) == ("130\n", "stemdeck: interrupted\n")


def test_keylock_quality_reaches_the_mixer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``serve --keylock-quality fine`` gives the daemon's mixer frames of 42.7 ms
    (2048 samples at 48 kHz, 2304 of latency); the default is live (1024); anything
    else is refused by the parser in one line, and by the daemon's options."""
    import stemdeck.daemon.forkserver as fs
    import stemdeck.daemon.serve as serve
    from stemdeck.core.mixer.engine import Mixer
    from stemdeck.core.mixer.keylock import KEYLOCK_QUALITY, latency_at

    seen = []

    class Stop(Exception):
        pass

    class Captured(serve.Daemon):
        def start(self) -> None:  # the daemon as built, before anything starts
            self.engine.prepare(48000, 256)
            seen.append((self.opts.keylock_quality, self.engine.keylock_frame))
            raise Stop

        def shutdown(self) -> None:
            pass

    monkeypatch.setattr(fs, "warm_up", lambda context: None)
    monkeypatch.setattr(serve, "Daemon", Captured)
    track = str(tmp_path / "t.wav")
    sf.write(track, np.zeros((SR, 2), np.float32), SR)
    for extra in (["--keylock-quality", "fine"], []):
        with pytest.raises(Stop):
            main(["serve", track, "--no-audio", "--no-cache", "--http", "off", *extra])
    assert seen == [("fine", 2048), ("live", 1024)]
    with pytest.raises(SystemExit) as info:
        main(["serve", track, "--keylock-quality", "best"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "stemdeck serve: error: argument --keylock-quality: invalid choice: 'best' "
        "(choose from 'live', 'fine')"
    )
    assert latency_at(48000, KEYLOCK_QUALITY["fine"]) == 2304
    with pytest.raises(ParameterError) as refused:
        serve.Daemon(serve.ServeOptions(track=track, use_cache=False, keylock_quality="best"))
    assert str(refused.value) == "--keylock-quality takes live or fine, got 'best'"
    assert Mixer(keylock_frame_s=KEYLOCK_QUALITY["fine"]).keylock_frame == 2048  # unprepared
