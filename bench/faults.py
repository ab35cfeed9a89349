"""Faults a live daemon must survive, measured from outside; each case is one function.

    .venv/bin/python bench/faults.py [--case flood ...] [--seconds 40] [--sockets 1100]
                                     [--addresses 4] [--nofile 1024] [--hard-nofile N]

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
    longest a connection stayed, and how long the last ones took to close once the
    flood stopped sending.
late
    Loads that fail after their header check (a float WAV with a NaN sample, a stem
    file with damaged audio) and one refused by its length (130 silent minutes): each
    gets exactly one ``/error`` with its reason, and the playing track plays on,
    separated.
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
from mp4_helpers import damaged_stem_file  # noqa: E402

from conftest import tone_mix  # noqa: E402
from stemdeck.daemon.osc.wire import Message, decode, encode_message  # noqa: E402

SR = 48000
SLOW_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"


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
            if found and self.status().split(" | ")[0].endswith(" ready"):
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

    def load(self, path: str, timeout: float = 60.0) -> list[tuple[str, list]]:
        """``/track/load``: its one reply, which comes once the track plays or failed
        (docs/osc.md), or a refusal at once."""
        with self.lock:
            self.sock.sendto(encode_message("/track/load", [path]), ("127.0.0.1", self.osc_port))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    msg = decode(self.sock.recvfrom(65536)[0])
                except TimeoutError:
                    break
                assert isinstance(msg, Message)
                if msg.address in ("/track/load", "/error"):
                    return [(msg.address, list(msg.args))]
            raise Failed(f"no answer to /track/load {path} in {timeout:g} s")

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
    checks = [began + args.seconds / 3, began + 2 * args.seconds / 3]
    loads = ["first", "second"]
    last = "song"
    end = began + args.seconds
    while time.monotonic() < end:
        pump(min(end, checks[0] if checks else end), keep_up=True, dribble=True)
        if checks and time.monotonic() >= checks[0]:
            checks.pop(0)
            path = str(live.library / f"{loads[0]}.wav")
            got = live.load(path)
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
    stopped = time.monotonic()
    pump(stopped + 60, keep_up=False, dribble=True)  # until the daemon closed them all
    while conns and time.monotonic() < stopped + 120:
        pump(time.monotonic() + 1, keep_up=False, dribble=True)
    took = time.monotonic() - stopped
    for c in list(conns.values()):
        sel.unregister(c.sock)
        c.sock.close()
    deadline = time.monotonic() + 180
    while not live.status().startswith(f"{last} ") or " ready |" not in live.status():
        if time.monotonic() > deadline:
            raise Failed(f"flood: {last} never separated: {live.status()}")
        time.sleep(0.5)
    lines += [
        f"{args.sockets} sockets ({args.sockets // 2} idle, {args.sockets - args.sockets // 2} "
        f"slowloris) from {args.addresses} address(es) for {args.seconds:g} s",
        f"connections opened {opened}, refused at once (503) {refused}, closed by the idle "
        f"timeout {timed_out}, longest open {longest:.1f} s",
        f"when the flood stopped: {still} open, all closed by the daemon within {took:.1f} s"
        + (f" ({len(conns)} NOT closed)" if conns else ""),
        f"the last load ({last}) separated and playing",
    ]
    if conns:
        raise Failed("\n".join(lines))
    return lines


def late(live: Live, args: argparse.Namespace) -> list[str]:
    """Loads that fail after their check, and one too long to be read at all: each
    requester gets its ``/error``, the playing track plays and stays separated."""
    playing = live.status().split(" ")[0]
    nan = tone_mix(3.0, sr=SR, seed=9)
    nan[0, 100] = np.nan  # the header is fine
    sf.write(live.library / "nan.wav", nan.T, SR, subtype="FLOAT")
    damaged_stem_file(live.library / "damaged.stem.mp4", SR)
    long = live.library / "long.flac"  # 130 minutes of silence: 1.4 MB, 2.9 GB decoded
    with sf.SoundFile(long, "w", SR, 2, subtype="PCM_16", format="FLAC") as f:
        silence = np.zeros((60 * SR, 2), np.float32)
        for _ in range(130):
            f.write(silence)
    expected = {
        "nan.wav": f"{str(live.library / 'nan.wav')!r}: 1 samples are NaN or infinite; "
        "re-export the file",
        "damaged.stem.mp4": "is damaged: its audio cannot be decoded",
        "long.flac": f"refused {str(long)!r}: 130 minutes long; at most 120 (serve --max-minutes)",
    }
    lines = []
    for name, reason in expected.items():
        t0 = time.monotonic()
        got = live.load(str(live.library / name))
        took = time.monotonic() - t0
        if len(got) != 1 or got[0][0] != "/error" or reason not in got[0][1][0]:
            raise Failed(f"late: /track/load {name} answered {got}")
        lines.append(f"/track/load {name}: /error in {took * 1000:.0f} ms: {got[0][1][0]}")
    status = live.status()
    if not status.startswith(f"{playing} playing ") or " ready |" not in status:
        raise Failed(f"late: the playing track was disturbed: {status}")
    lines.append(f"{playing} plays on, separated")
    return lines


CASES: dict[str, Callable[[Live, argparse.Namespace], list[str]]] = {"flood": flood, "late": late}


def _figures(status: str) -> str:
    """xruns and the slowest block, from the status line."""
    found = re.search(r"xruns (\d+) drops (\d+) slowest block ([\d.]+) ms", status)
    return f"xruns {found[1]}, drops {found[2]}, slowest block {found[3]} ms" if found else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="(all)")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--sockets", type=int, default=1100)
    parser.add_argument("--addresses", type=int, default=4, help="loopback sources")
    parser.add_argument("--nofile", type=int, default=1024, help="the daemon's soft limit")
    parser.add_argument("--hard-nofile", type=int, default=0, help="and hard (0: as is)")
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--track-seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    tmp = Path(tempfile.mkdtemp(prefix="stemdeck-faults-"))
    live = Live(tmp, args)
    failed = False
    try:
        print(f"daemon: {next(ln for ln in live.log().splitlines() if 'open files' in ln)}")
        for name in args.case or list(CASES):
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
