"""Start `stemdeck serve` as a subprocess and talk OSC to it over UDP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pythonosc import osc_packet
from pythonosc.osc_bundle_builder import OscBundleBuilder

from stemdeck.daemon.osc.wire import encode_message

T = TypeVar("T")


def burners(n: int = 2) -> list[subprocess.Popen]:
    """``n`` CPU-bound processes (a busy machine); the caller kills them."""
    return [
        subprocess.Popen([sys.executable, "-c", "while 1: pass"], stdout=subprocess.DEVNULL)
        for _ in range(n)
    ]


def poll(
    read: Callable[[], T],
    check: Callable[[T], bool],
    what: str,
    timeout: float = 60.0,
    every: float = 0.01,
) -> T:
    """``read()`` again and again until ``check`` holds for its value, which is returned.

    For a condition a test needs, instead of a fixed sleep: it ends as soon as the
    condition holds, and on a busy machine it waits longer. After ``timeout`` seconds,
    an AssertionError names ``what`` and the last value read.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {timeout:g} s; last {value!r}")
        time.sleep(every)


def separated(status: str, name: str) -> bool:
    """Whether the status line says track ``name`` plays its channels, every one from
    the cache: its state "ready", not "stems 40% ready" (the stems playing as their
    chunks come, the entry not sealed yet: a test that took that for the end counted
    the entry's seal as its own doing)."""
    head = status.split(" | ")[0]
    return head.startswith(name + " ") and head.endswith(" ready") and not head.endswith("% ready")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """A UDP OSC client on 127.0.0.1 that collects replies."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(encode_message(address, args), self.target)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def send_bundle(self, messages: list[tuple[str, list[Any]]], at: float = 0.0) -> None:
        from pythonosc import osc_bundle_builder

        # python-osc takes a time tag as Unix seconds (a float), though its hint says int
        b = OscBundleBuilder(at if at else osc_bundle_builder.IMMEDIATELY)  # type: ignore[arg-type]
        from pythonosc.osc_message import OscMessage

        for address, args in messages:
            b.add_content(OscMessage(encode_message(address, args)))
        self.sock.sendto(b.build().dgram, self.target)

    def drain(self) -> None:
        """Forget whatever has arrived so far (stale replies, feedback)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recvfrom(65536)
        except (BlockingIOError, OSError):
            pass
        finally:
            self.sock.setblocking(True)

    def receive(
        self, timeout: float = 1.0, until: str | None = None, settle: float | None = None
    ) -> list[tuple[str, list]]:
        """Messages arriving within ``timeout``; stop at a message to ``until``, or
        ``settle`` seconds after the first message."""
        out: list[tuple[str, list]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                return out
            for timed in osc_packet.OscPacket(data).messages:
                out.append((timed.message.address, list(timed.message.params)))
                if until is not None and timed.message.address == until:
                    return out
            if settle is not None:
                deadline = min(deadline, time.monotonic() + settle)

    def ask(self, address: str, *args: Any, timeout: float = 2.0) -> list[tuple[str, list]]:
        """Send and collect the replies."""
        self.drain()
        self.send(address, *args)
        if address == "/state":
            return self.receive(timeout, until="/state/end")
        return self.receive(timeout, settle=0.15)

    def query(self, address: str) -> Any:
        """The value of one control: the only argument of the reply to exactly ``address``
        (a query is answered on the address as sent, name or index)."""
        self.drain()
        self.send(address)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for addr, args in self.receive(deadline - time.monotonic(), settle=0.0):
                if addr == "/error":
                    raise AssertionError(args)
                if addr == address:
                    assert len(args) == 1, (address, args)
                    return args[0]
        raise AssertionError(f"no reply to {address}")

    def close(self) -> None:
        self.sock.close()


def wait_played(client: Client, seconds: float, timeout: float = 60.0) -> None:
    """Until the daemon's play head has moved ``seconds`` forward (a looping track
    wraps: the steps are counted modulo its length)."""
    length = float(client.query("/transport/length"))
    played = 0.0
    last = float(client.query("/transport/position"))
    deadline = time.monotonic() + timeout
    while played < seconds:
        if time.monotonic() > deadline:
            raise AssertionError(f"played {played:.3f} s of {seconds:g} in {timeout:g} s")
        time.sleep(0.01)
        now = float(client.query("/transport/position"))
        played += (now - last) % length if length else max(now - last, 0.0)
        last = now


class Daemon:
    """`stemdeck serve` (or ``command``, ``"demo"``) in a subprocess (``preexec`` runs
    in it before it starts); stopped with SIGTERM. ``verbose`` runs it with ``-v``
    (debug lines too)."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        cwd: Path,
        *,
        preexec: Callable[[], Any] | None = None,
        verbose: bool = False,
        command: str = "serve",
    ) -> None:
        self.port = free_udp_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stemdeck.daemon.cli",
                *(["-v"] if verbose else []),
                command,
                *args,
                "--osc-port",
                str(self.port),
                # A free port of its own (the default 8080 may be taken), unless told.
                *([] if "--http" in args else ["--http", "0"]),
            ],
            env={**os.environ, **env},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec,  # e.g. a lower RLIMIT_NOFILE
        )
        self.client = Client(self.port)
        # stderr is read as it comes: to see our daemon take its port, and so a
        # chatty daemon never blocks on a full pipe.
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def http_url(self, timeout: float = 60.0) -> str:
        """The mixer's URL as the daemon printed it (``mixer on URL``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if "mixer on " in line:
                    return line.split("mixer on ", 1)[1].split()[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no mixer URL printed: {self.stderr[-2000:]}")

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 60.0, *, separated: bool = True) -> None:
        """Until this daemon listens on its port (the port was free when picked, but
        on a shared machine another process can take it first: then this daemon
        exits, and an answer on the port would come from someone else), then until
        its status says the channels play (or it plays at all, ``separated=False``)."""
        deadline = time.monotonic() + timeout
        listening = f"OSC on 127.0.0.1:{self.port}"
        while not any(listening in line for line in self.lines):
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                raise AssertionError(f"daemon exited: {self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon not listening in time: {self.stderr}")
            time.sleep(0.05)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                raise AssertionError(f"daemon exited: {self.stderr}")
            self.client.drain()
            self.client.send("/status")
            for addr, args in self.client.receive(0.3, settle=0.0):
                # the state is the last word before the first " | " (daemon/status.py)
                # ``ready``, not ``stems N% ready`` (stems as their chunks come).
                state = args[0].split(" | ")[0]
                if addr == "/status" and (
                    not separated or (state.endswith(" ready") and not state.endswith("% ready"))
                ):
                    return
            time.sleep(0.1)  # /status is rate-limited (docs/osc.md): poll, do not flood
        _, err = self.stop()  # never leave it running
        raise AssertionError(f"daemon not ready in time: {err[-2000:]}")

    def stop(self) -> tuple[int, str]:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=15)  # to the end of stderr (a worker may hold it open)
        return self.proc.returncode, self.stderr
