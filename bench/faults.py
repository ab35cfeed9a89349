"""Faults a live daemon must survive, measured from outside; each case is one function.

    .venv/bin/python bench/faults.py [--case flood|loads|morph|soak ...] [--seconds 40]
                                     [--sockets 1100] [--addresses 4] [--soak 600]
                                     [--nofile 1024] [--hard-nofile N]

Without ``--case``: flood, loads and morph. ``--case soak`` is the issue's 10-minute run.

Starts ``stemdeck serve --no-audio --record`` on a generated track, with a library
of two more, under an open-files limit of ``--nofile`` (soft; the hard limit stays,
or ``--hard-nofile``: the daemon raises the soft limit to the hard one at start).
Then runs each case in turn while a prober sends ``/ping`` over UDP every 10 ms, and
prints per case what it counted, the ``/ping`` round trip (p50, p99, max; none within
2 s is unanswered), the log the daemon wrote meanwhile (bytes, lines, tracebacks),
and the xruns and slowest block from ``/status`` before and after.

A case is a function ``case(live, args) -> list[str]`` (the lines it prints) in
:data:`CASES`; :class:`Live` is the running daemon (its ports, its log, ``ask``).
A case raises ``Failed`` for what must not happen; the run then ends with status 1.

Cases
-----
flood
    ``--sockets`` plain TCP connections to the web port from ``--addresses`` loopback
    addresses (127.0.0.1, .2, ...), half idle, half slowloris (a request line, then a
    header line every second, never finished), for ``--seconds``: each one the daemon
    closes is opened again at once, as a script keeping up a flood does. A third and
    two thirds of the way, a valid ``/track/load`` and a ``/scene/save`` must be
    acknowledged exactly, and the last load must end separated and playing. Prints
    connections opened, refused at once (a 503), closed by the idle timeout, the
    longest a connection stayed, and, once the flood stops opening (it goes on
    dribbling), how many connections the daemon holds (``/proc``) until it holds none
    (it must, within 60 s); client sockets the kernel completed but the daemon never
    accepted (a full listen backlog) are counted apart, as they are not the daemon's.
loads
    Requests a playing, separating daemon must answer without losing its track: a good
    load, then at once a float WAV with one NaN sample (its header is fine, the read
    fails late), a stem file whose boxes are fine and whose audio is noise, a stem
    file whose manifest nests 100,000 levels, a FLAC whose
    STREAMINFO claims ten hours (a few KiB on disk), a real three-hour silent FLAC, a
    file with an audio suffix that is not audio, and a library name that is not UTF-8
    (loaded back from its listed form). Each request must get exactly one answer, the
    success reply (``/track/load path``) only for the good ones; after the bad ones the
    last good track still plays and its separation completes.
morph
    A scene naming only ``[master] gain = 0.5`` recalled with a 5 s morph; 1 s in, hands
    mute channel 2, pull channel 3 to 0.2 and solo channel 4. After the morph the hand
    moves stand and the master is at 0.5.
soak
    Everything at once for ``--soak`` seconds: the flood keeps ``--sockets`` connections
    up while the loads and morph cases run over and over beside it. Prints the figures
    the issue asks for: xruns, slowest block, ``/ping`` p99, RssAnon at start and end,
    the log's size, tracebacks, unanswered requests, and that the last track separated.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from daemon_helpers import free_udp_port  # noqa: E402
from mp4_helpers import damaged_stem_file, with_stem_box  # noqa: E402

from conftest import tone_mix  # noqa: E402
from stemdeck.core.audiofile.stemfile_write import write_stem_file  # noqa: E402
from stemdeck.daemon.osc.wire import Message, decode, encode_message  # noqa: E402

SR = 48000
SLOW_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def held_connections(pid: int, port: int) -> int:
    """TCP connections to ``port`` the process ``pid`` holds open now (from /proc): what
    the daemon has accepted and not closed. A client socket the kernel completed but the
    daemon never accepted (a full listen backlog) is not the daemon's to close."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] != "0A" and fields[9] in inodes:  # 0A: LISTEN
                held += 1
    return held


class Failed(Exception):
    """Something a case must never see (a refused load, an unanswered request)."""


def rss_anon(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return " ".join(line.split()[1:])
    return "?"


class Live:
    """``stemdeck serve`` running for the cases: ports, log file, a UDP client."""

    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.tmp = tmp
        self.library = tmp / "library"
        self.library.mkdir()
        for name, seed in (("song", 0), ("first", 1), ("second", 2)):
            sf.write(
                self.library / f"{name}.wav",
                tone_mix(args.track_seconds, sr=SR, seed=seed).T,
                SR,
                subtype="FLOAT",
            )
        self.osc_port = free_udp_port()
        self.log_path = tmp / "daemon.log"
        env = {
            **os.environ,
            "STEMDECK_CACHE": str(tmp / "cache"),
            "STEMDECK_CONFIG": str(tmp / "config"),
        }
        soft = args.nofile
        hard = args.hard_nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[1]

        def limits() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))

        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "stemdeck.daemon.cli", "serve"),
                *(str(self.library / "song.wav"), "--no-audio", "--at-end", "loop"),
                *("--record", str(tmp / "rec.wav"), "--block", str(args.block)),
                *("--osc-port", str(self.osc_port), "--http", "0"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=limits,
        )
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.lock = threading.Lock()
        self.http_port = self._wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self) -> int:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited:\n{self.log()[-3000:]}")
            found = re.search(r"mixer on http://[^:]+:(\d+)/", self.log())
            state = self.status().split(" | ")[0]  # ready: not "stems N% ready"
            if found and state.endswith(" ready") and not state.endswith("% ready"):
                return int(found.group(1))
            time.sleep(0.3)
        raise SystemExit(f"daemon not ready:\n{self.log()[-3000:]}")

    def ask(self, address: str, *args: object, timeout: float = 5.0) -> list[tuple[str, list]]:
        """Send; the replies before the answer to a ``/track/name`` sent after it."""
        with self.lock:
            target = ("127.0.0.1", self.osc_port)
            self.sock.sendto(encode_message(address, args), target)
            self.sock.sendto(encode_message("/track/name"), target)
            out: list[tuple[str, list]] = []
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    msg = decode(self.sock.recvfrom(65536)[0])
                except TimeoutError:
                    break
                assert isinstance(msg, Message)
                if msg.address == "/track/name":
                    return out
                out.append((msg.address, list(msg.args)))
            raise Failed(f"no answer to {address} in {timeout:g} s (got {out})")

    def request(
        self, address: str, *args: object, timeout: float = 120.0
    ) -> list[tuple[str, list]]:
        """Send a request whose answer may come late (``/track/load`` replies once the
        track is loaded); every message until the first ``address`` reply or ``/error``,
        then 0.3 s more to catch a second answer, which must not come."""
        with self.lock:
            self.sock.sendto(encode_message(address, args), ("127.0.0.1", self.osc_port))
            out: list[tuple[str, list]] = []
            deadline = time.monotonic() + timeout
            answered = False
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    msg = decode(self.sock.recvfrom(65536)[0])
                except TimeoutError:
                    break
                assert isinstance(msg, Message)
                out.append((msg.address, list(msg.args)))
                if msg.address in (address, "/error") and not answered:
                    answered = True
                    deadline = time.monotonic() + 0.3
            if not answered:
                raise Failed(f"no answer to {address} {args} in {timeout:g} s (got {out})")
            return out

    def value(self, address: str) -> list:
        """A control's value, by query (the reply on the address as sent)."""
        got = self.ask(address)
        if len(got) != 1 or got[0][0] != address:
            raise Failed(f"query {address} answered {got}")
        return got[0][1]

    def wait_separated(self, name: str, timeout: float = 180.0) -> None:
        """Until ``name`` plays with its separation complete (the status line)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.startswith(f"{name} ") and " ready |" in status:
                return
            if time.monotonic() > deadline:
                raise Failed(f"{name} never separated: {status}")
            time.sleep(0.5)

    def status(self) -> str:
        for _ in range(50):
            try:
                replies = self.ask("/status")
            except Failed:
                continue
            if replies and replies[0][0] == "/status":
                return str(replies[0][1][0])
            time.sleep(0.2)  # rate-limited: wait a little
        raise Failed("no /status")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        self.sock.close()
        return code


class Prober(threading.Thread):
    """``/ping`` over UDP every ``period`` s, from its own socket; round trips in s."""

    def __init__(self, port: int, period: float = 0.01) -> None:
        super().__init__(name="prober", daemon=True)
        self.port, self.period = port, period
        self.rtts: list[float] = []
        self.unanswered = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            ping = encode_message("/ping")
            while not self.stopped.is_set():
                sent = time.perf_counter()
                s.sendto(ping, ("127.0.0.1", self.port))
                s.settimeout(2.0)
                try:
                    while decode(s.recvfrom(65536)[0]) != Message("/pong", ()):
                        pass
                    self.rtts.append(time.perf_counter() - sent)
                except TimeoutError:
                    self.unanswered += 1
                self.stopped.wait(self.period)

    def summary(self) -> str:
        if not self.rtts:
            return f"/ping: none answered, {self.unanswered} unanswered"
        ms = np.array(self.rtts) * 1000
        p50, p99 = np.percentile(ms, [50, 99])
        return (
            f"/ping: {len(ms)} answered, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"max {ms.max():.1f} ms, {self.unanswered} unanswered"
        )


# -- the flood --------------------------------------------------------------------------
@dataclass
class _Conn:
    sock: socket.socket
    slow: bool
    opened: float
    got: bytearray = field(default_factory=bytearray)
    sent_request: bool = False


def _open(port: int, source: str, slow: bool) -> _Conn:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.bind((source, 0))
    err = s.connect_ex(("127.0.0.1", port))
    if err not in (0, errno.EINPROGRESS):
        s.close()
        raise OSError(err, os.strerror(err))
    return _Conn(s, slow, time.monotonic())


def flood(live: Live, args: argparse.Namespace) -> list[str]:
    """``--sockets`` idle and slowloris connections kept up for ``--seconds``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.sockets + 64
    if soft < need:
        if hard < need:
            raise SystemExit(f"flood: {args.sockets} sockets need {need} open files; limit {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sources = [f"127.0.0.{1 + k}" for k in range(args.addresses)]
    sel = selectors.DefaultSelector()
    conns: dict[int, _Conn] = {}
    opened = refused = timed_out = serial = 0
    longest = 0.0

    def start() -> None:
        nonlocal opened, serial
        serial += 1
        try:
            c = _open(live.http_port, sources[serial % len(sources)], slow=serial % 2 == 1)
        except OSError:
            return  # the client's own limits: tried again on the next round
        opened += 1
        conns[c.sock.fileno()] = c
        sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def closed(c: _Conn) -> None:
        nonlocal refused, timed_out, longest
        lived = time.monotonic() - c.opened
        if c.got.startswith(b"HTTP/1.1 503 "):
            refused += 1
        else:
            timed_out += 1
            longest = max(longest, lived)
        sel.unregister(c.sock)
        del conns[c.sock.fileno()]
        c.sock.close()

    def pump(until: float, keep_up: bool, dribble: bool) -> None:
        last_dribble = time.monotonic()
        while time.monotonic() < until:
            if keep_up:
                for _ in range(args.sockets - len(conns)):
                    start()
            for key, events in sel.select(timeout=0.05):
                c = key.data
                if events & selectors.EVENT_WRITE:  # connected: say what it says
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    if c.slow:
                        try:
                            c.sock.send(SLOW_REQUEST)
                        except OSError:
                            pass
                    continue
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    c.got += data
                else:
                    closed(c)
            if dribble and time.monotonic() - last_dribble >= 1.0:
                last_dribble = time.monotonic()
                for c in list(conns.values()):
                    if c.slow:
                        try:
                            c.sock.send(b"X-Slow: 1\r\n")
                        except OSError:
                            pass

    lines = []
    began = time.monotonic()
    checks = [] if args.soaking else [began + args.seconds / 3, began + 2 * args.seconds / 3]
    loads = ["first", "second"]
    last = "song"
    end = began + args.seconds
    while time.monotonic() < end:
        pump(min(end, checks[0] if checks else end), keep_up=True, dribble=True)
        if checks and time.monotonic() >= checks[0]:
            checks.pop(0)
            path = str(live.library / f"{loads[0]}.wav")
            got = live.request("/track/load", path)
            if got != [("/track/load", [path])]:
                raise Failed(f"flood: /track/load {path} answered {got}")
            saved = live.ask("/scene/save", "flood")
            if saved != [("/scene/save", ["flood"])]:
                raise Failed(f"flood: /scene/save answered {saved}")
            lines.append(
                f"{time.monotonic() - began:5.1f} s: /track/load {loads[0]} and "
                "/scene/save acknowledged"
            )
            last = loads.pop(0)
    still = len(conns)
    held_then = held_connections(live.proc.pid, live.http_port)
    stopped = time.monotonic()
    # The flood goes on dribbling; the daemon must let go of every connection it holds
    # (idle timeout), and take and let go of those still in its listen backlog.
    held = held_then
    while time.monotonic() < stopped + 60:
        pump(time.monotonic() + 1, keep_up=False, dribble=True)
        held = held_connections(live.proc.pid, live.http_port)
        if held == 0 and not conns:
            break
    took = time.monotonic() - stopped
    never = len(conns)  # connected at the client, never accepted by the daemon
    for c in list(conns.values()):
        sel.unregister(c.sock)
        c.sock.close()
    conns.clear()
    if not args.soaking:
        live.wait_separated(last)
    lines += [
        f"{args.sockets} sockets ({args.sockets // 2} idle, {args.sockets - args.sockets // 2} "
        f"slowloris) from {args.addresses} address(es) for {args.seconds:g} s",
        f"connections opened {opened}, refused at once (503) {refused}, closed by the idle "
        f"timeout {timed_out}, longest open {longest:.1f} s",
        f"when the flood stopped: {still} client sockets open, {held_then} of them held by "
        f"the daemon; {took:.1f} s later the daemon held {held}"
        + (" (NOT let go)" if held else "")
        + (
            f"; {never} client sockets were never accepted (the kernel's listen backlog was "
            "full: they wait in TCP retransmission) and were closed by the client"
            if never
            else ""
        ),
    ]
    if not args.soaking:
        lines.append(f"the last load ({last}) separated and playing")
    if held:
        raise Failed("\n".join(lines))
    return lines


# -- loads that fail, late or early ------------------------------------------------------
def _lying_flac(path: Path, seconds: float) -> None:
    """A real one-second FLAC whose STREAMINFO claims ``seconds``: what a header check
    sees, in a few KiB."""
    sf.write(path, np.zeros((SR, 2), dtype=np.float32), SR, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    at = 8 + 10  # sample rate (20 bits), channels (3), bits (5), total samples (36)
    packed = int.from_bytes(data[at : at + 8], "big")
    packed = (packed & ~((1 << 36) - 1)) | int(seconds * SR)
    data[at : at + 8] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))


def _silent_flac(path: Path, seconds: float, sr: int = 8000) -> None:
    """A real silent mono FLAC of ``seconds``, written a minute at a time."""
    block = np.zeros(sr * 60, dtype=np.int16)
    with sf.SoundFile(path, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(seconds // 60)):
            f.write(block)


@dataclass
class Files:
    """The files of the loads case, made once."""

    good: list[Path]
    bad: dict[str, Path]
    latin1: bytes


def make_files(live: Live) -> Files:
    folder = live.library
    nan = tone_mix(5.0, sr=SR, seed=3)
    nan[0, SR] = np.nan
    sf.write(folder / "one-nan.wav", nan.T, SR, subtype="FLOAT")
    stems = np.stack([tone_mix(2.0, sr=SR, seed=k) for k in range(4)]) / 4
    write_stem_file(folder / "_good.stem.mp4", stems.sum(axis=0), stems, SR, codec="alac")
    deep = b'{"version": 1, "stems": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with_stem_box(folder / "_good.stem.mp4", folder / "deep.stem.mp4", deep)
    (folder / "_good.stem.mp4").unlink()
    damaged_stem_file(folder / "damaged.stem.mp4", SR)
    _lying_flac(folder / "ten-hours.flac", 10 * 3600)
    _silent_flac(folder / "three-hours.flac", 3 * 3600)
    (folder / "noise.wav").write_bytes(os.urandom(4096))
    latin1 = os.fsencode(folder) + b"/caf\xe9 live.wav"
    sf.write(latin1, tone_mix(5.0, sr=SR, seed=4).T, SR, subtype="FLOAT")
    bad = {
        "one NaN sample": folder / "one-nan.wav",
        "manifest 100,000 deep": folder / "deep.stem.mp4",
        "stem file, damaged audio": folder / "damaged.stem.mp4",
        "header claims 10 h": folder / "ten-hours.flac",
        "3 h of silence": folder / "three-hours.flac",
        "not audio": folder / "noise.wav",
    }
    return Files([folder / "first.wav", folder / "second.wav"], bad, latin1)


def _load_ok(live: Live, path: str) -> float:
    """Load ``path``; it must be answered with exactly its success reply. Seconds taken."""
    began = time.monotonic()
    got = live.request("/track/load", path)
    if got != [("/track/load", [path])]:
        raise Failed(f"/track/load {path} answered {got}")
    return time.monotonic() - began


def loads(live: Live, args: argparse.Namespace) -> list[str]:
    """A good load, then bad ones while it separates; the good one must survive."""
    files = args.files
    lines = []
    good = files.good[args.round % 2]
    args.round += 1
    took = _load_ok(live, str(good))
    lines.append(f"{good.name}: loaded in {took:.2f} s (the reply when it plays)")
    for what, path in files.bad.items():
        began = time.monotonic()
        got = live.request("/track/load", str(path))
        took = time.monotonic() - began
        if len(got) != 1 or got[0][0] != "/error":
            raise Failed(f"{what}: /track/load {path.name} answered {got}")
        lines.append(f"{what}: one /error in {took:.2f} s: {got[0][1][0]}")
    listed = live.ask("/track/list")
    names = listed[0][1] if listed and listed[0][0] == "/track/list" else []
    shown = [n for n in names if n.startswith(f"{live.library}/caf")]
    if len(shown) != 1:
        raise Failed(f"the Latin-1 name is not listed once: {listed}")
    lines.append(f"Latin-1 name listed as {shown[0]!r}")
    live.wait_separated(good.stem)
    lines.append(f"{good.stem}: still playing, separation complete after the bad loads")
    took = _load_ok(live, shown[0])
    lines.append(f"{shown[0]!r}: loaded back in {took:.2f} s")
    took = _load_ok(live, str(good))
    live.wait_separated(good.stem)
    lines.append(f"{good.name}: loaded again in {took:.2f} s and separated")
    return lines


# -- a morph against hands ----------------------------------------------------------------
def morph(live: Live, args: argparse.Namespace) -> list[str]:
    """Hands move three channels during a morph of a scene that names only the master."""
    scenes = live.tmp / "config" / "scenes"
    scenes.mkdir(parents=True, exist_ok=True)
    (scenes / "master-half.toml").write_text("[master]\ngain = 0.5\n")
    channels = live.ask("/channels")
    if len(channels) != 1 or len(channels[0][1]) < 4:
        raise Failed(f"morph needs 4 channels: {channels}")
    for address, value in (("/ch/2/mute", 0), ("/ch/3/fader", 0.75), ("/ch/4/solo", 0)):
        live.ask(address, value)
    live.ask("/master/gain", 1.0)
    began = time.monotonic()
    got = live.request("/scene/recall", "master-half", 5.0, timeout=5.0)
    if got != [("/scene/recall", ["master-half", 5.0])]:
        raise Failed(f"/scene/recall answered {got}")
    time.sleep(max(0.0, began + 1.0 - time.monotonic()))
    hands = {"/ch/2/mute": 1, "/ch/3/fader": 0.2, "/ch/4/solo": 1}
    for address, value in hands.items():
        live.ask(address, value)
    moved = {address: live.value(address) for address in hands}
    time.sleep(max(0.0, began + 1.5 - time.monotonic()))
    halfway = {address: live.value(address) for address in hands}
    time.sleep(max(0.0, began + 6.0 - time.monotonic()))
    after = {address: live.value(address) for address in hands}
    master = live.value("/master/gain")
    if halfway != moved or after != moved:
        raise Failed(f"hand moves undone: set {moved}, 0.5 s later {halfway}, after {after}")
    if master != [0.5]:
        raise Failed(f"the morph did not reach master gain 0.5: {master}")
    for address, value in (("/ch/2/mute", 0), ("/ch/3/fader", 0.75), ("/ch/4/solo", 0)):
        live.ask(address, value)
    live.ask("/master/gain", 1.0)
    return [f"hand moves {moved} stood through the morph; master gain {master[0]:g} at its end"]


# -- all of it at once --------------------------------------------------------------------
def soak(live: Live, args: argparse.Namespace) -> list[str]:
    """The flood for ``--soak`` seconds, with the loads and morph cases looping beside it."""
    flood_args = argparse.Namespace(**{**vars(args), "seconds": args.soak, "soaking": True})
    outcome: dict[str, list[str] | Failed] = {}

    def flooding() -> None:
        try:
            outcome["flood"] = flood(live, flood_args)
        except Failed as exc:
            outcome["flood"] = exc

    flooder = threading.Thread(target=flooding, name="flood", daemon=True)
    flooder.start()
    rounds = {"loads": 0, "morph": 0}
    began = time.monotonic()
    while flooder.is_alive() and time.monotonic() - began < args.soak:
        for name in ("loads", "morph"):
            CASES[name](live, args)
            rounds[name] += 1
    flooder.join()
    if isinstance(outcome["flood"], Failed):
        raise outcome["flood"]
    last = args.files.good[(args.round - 1) % 2].stem
    live.wait_separated(last)
    log = live.log_path.stat().st_size
    lines = [f"{args.soak:g} s: {rounds['loads']} rounds of loads, {rounds['morph']} of morph"]
    lines += outcome["flood"]
    lines.append(f"the last track ({last}) separated and playing; whole log {log} bytes")
    if log >= 1 << 20:
        raise Failed("\n".join([*lines, "the log passed 1 MB"]))
    return lines


CASES: dict[str, Callable[[Live, argparse.Namespace], list[str]]] = {
    "flood": flood,
    "loads": loads,
    "morph": morph,
    "soak": soak,
}


def _figures(status: str) -> str:
    """xruns and the slowest block, from the status line."""
    found = re.search(r"xruns (\d+) drops (\d+) slowest block ([\d.]+) ms", status)
    return f"xruns {found[1]}, drops {found[2]}, slowest block {found[3]} ms" if found else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case", action="append", choices=sorted(CASES), help="(flood, loads, morph)"
    )
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--sockets", type=int, default=1100)
    parser.add_argument("--addresses", type=int, default=4, help="loopback sources")
    parser.add_argument("--nofile", type=int, default=1024, help="the daemon's soft limit")
    parser.add_argument("--hard-nofile", type=int, default=0, help="and hard (0: as is)")
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--track-seconds", type=float, default=20.0)
    parser.add_argument("--soak", type=float, default=600.0, help="seconds of the soak case")
    args = parser.parse_args()
    args.soaking, args.round = False, 0
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    tmp = Path(tempfile.mkdtemp(prefix="stemdeck-faults-"))
    live = Live(tmp, args)
    args.files = make_files(live)
    failed = False
    try:
        limits = Path(f"/proc/{live.proc.pid}/limits").read_text().splitlines()
        print(f"daemon: {next(ln for ln in limits if ln.startswith('Max open files'))}")
        for name in args.case or ["flood", "loads", "morph"]:
            before_status = live.status()
            before_log = live.log_path.stat().st_size
            rss = rss_anon(live.proc.pid)
            prober = Prober(live.osc_port)
            prober.start()
            try:
                lines = CASES[name](live, args)
            except Failed as exc:
                failed = True
                lines = [f"FAILED: {exc}"]
            prober.stopped.set()
            prober.join()
            log = live.log()[before_log:]
            after_status = live.status()
            print(f"{name}:")
            for line in lines:
                print(f"  {line}")
            print(f"  {prober.summary()}")
            print(
                f"  log: {len(log.encode())} bytes, {len(log.splitlines())} lines, "
                f"{log.count('Traceback')} tracebacks during the case"
            )
            print(f"  before: {_figures(before_status)}; after: {_figures(after_status)}")
            print(f"  RssAnon: before {rss}, after {rss_anon(live.proc.pid)}")
            failed = failed or prober.unanswered > 0 or "Traceback" in log
    finally:
        code = live.stop()
    print(f"daemon exit status {code}; log {live.log_path} ({live.log_path.stat().st_size} bytes)")
    return 1 if failed or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
