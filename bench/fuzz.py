"""Fuzz a live daemon over OSC for a long run; verdicts measured from outside.

    .venv/bin/python bench/fuzz.py [--seconds 600] [--rate 2000] [--block 256] [--seed 0]
                                   [--load N] [--no-realtime]

Starts ``stemdeck serve --no-audio --record`` on a generated track, then sends
datagrams from the grammar of ``tests/osc_grammar.py`` (the address space with
the mutations of issue 9), each followed by a ``/ping``, ``--rate`` datagrams a
second in all. For every fuzzed datagram, the replies that arrive before its
``/pong`` must be exactly one ``/error`` (a bad datagram), or none of them an
``/error`` (a valid one; a plain query answered on the address as sent). The
``/ping`` round trip is measured: a round trip over 50 ms counts as a hang, none
arriving within 2 s as unanswered.

``--load N`` runs N CPU-bound processes beside the daemon for the whole run (a
busy machine: the round trips then say whether control waits behind them);
``--no-realtime`` is passed on to ``serve`` (no SCHED_FIFO, no nice for the control
threads), for the comparison.

At the end the transport plays with no loop, ``/state`` is read back, and the last
second of the recording is compared with the mix that state describes (the
separated stems, weighted by gain, mute, solo, pan and master, aligned by
cross-correlation): what the registry says is what was heard.

Prints: datagrams sent and the rate reached, verdict failures, hangs, xruns and the
slowest block (the daemon's status line), RssAnon at the start and the end, the
``/ping`` round trip p50/p99/max, and the recording check.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from daemon_helpers import burners, free_udp_port  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from osc_grammar import Case, datagram  # noqa: E402

from conftest import tone_mix  # noqa: E402
from stemdeck.daemon.osc.wire import Message, decode, encode_message, iter_messages  # noqa: E402

SR = 48000
PING = encode_message("/ping")


def cases(n: int, rng_seed: int) -> list[Case]:
    """``n`` datagrams from the grammar (no /subscribe or future bundles: their feedback
    and late replies would mix with the replies to later datagrams)."""
    pool: list[Case] = []

    @seed(rng_seed)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(datagram(subscribe=False, future=False))
    def collect(case: Case) -> None:
        pool.append(case)

    collect()
    return pool


def rss_anon(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return " ".join(line.split()[1:])
    return "?"


class Link:
    """One UDP socket to the daemon; replies read as decoded messages."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def until(self, address: str, timeout: float) -> list[tuple[str, list]] | None:
        """Messages up to and including the first to ``address``; None on timeout."""
        out: list[tuple[str, list]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                return None
            msg = decode(data)
            assert isinstance(msg, Message)
            out.append((msg.address, list(msg.args)))
            if msg.address == address:
                return out

    def until_nth(self, address: str, n: int, timeout: float) -> list[tuple[str, list]] | None:
        """Messages up to the ``n``-th to ``address``."""
        out: list[tuple[str, list]] = []
        for _ in range(n):
            got = self.until(address, timeout)
            if got is None:
                return None
            out += got
        return out

    def ask(self, address: str, until: str, *args: object) -> list[tuple[str, list]]:
        self.send(encode_message(address, args))
        got = self.until(until, 5.0)
        if got is None:
            raise SystemExit(f"no {until} in reply to {address}")
        return got


def pongs(case: Case) -> int:
    """/pong replies to expect: the marker's, and one per /ping of a valid datagram."""
    if case.verdict != "ok":
        return 1
    return 1 + sum(
        1 for m in iter_messages(decode(case.data)) if m.address == "/ping" and not m.args
    )


def verdict_problem(case: Case, replies: list[tuple[str, list]]) -> str | None:
    errors = [r for r in replies if r[0] == "/error"]
    if errors:
        if len(replies) != 1:
            return f"{len(errors)} /error among {len(replies)} replies"
        if case.verdict == "ok":
            return f"valid datagram refused: {errors[0][1]}"
        return None
    if case.verdict == "error":
        return f"bad datagram not refused (replies {replies[:3]})"
    replies = [r for r in replies if r[0] != "/pong"]
    if case.query is not None and [a for a, _ in replies] != [case.query]:
        return f"query {case.query} answered {replies[:3]}"
    return None


def expected_mix(state: dict[str, list], stems: list[np.ndarray], names: list[str]) -> np.ndarray:
    """What the mixer should output for ``state``: (samples, 2)."""
    solo = any(state[f"/ch/{i}/solo"][0] for i in range(1, len(names) + 1))
    out = np.zeros_like(stems[0], dtype=np.float64)
    for i, stem in enumerate(stems, 1):
        audible = (not state[f"/ch/{i}/mute"][0]) and (state[f"/ch/{i}/solo"][0] or not solo)
        g = state[f"/ch/{i}/gain"][0] * audible
        pan = state[f"/ch/{i}/pan"][0]
        out[:, 0] += stem[:, 0] * g * min(1.0, 1.0 - pan)
        out[:, 1] += stem[:, 1] * g * min(1.0, 1.0 + pan)
    master = state["/master/gain"][0] * (not state["/master/mute"][0])
    return out * master


def piece_residual(piece: np.ndarray, expected: np.ndarray) -> float:
    """Residual (dB) of ``piece`` against ``expected`` (looped) at the best alignment.

    The alignment is the least-squares one over every lag, not the correlation peak:
    the test track is nearly periodic, and its correlation peaks at wrong lags. The
    squared error at each lag is ``sum want^2 + sum piece^2 - 2 corr`` (sliding sums
    and an FFT correlation); the few best lags are then checked exactly.
    """
    m = len(piece)
    doubled = np.concatenate([expected, expected[:m]])
    n = 1 << int(np.ceil(np.log2(len(doubled) + m)))
    corr = np.zeros(len(expected))
    for c in range(piece.shape[1]):
        spec = np.fft.rfft(doubled[:, c], n) * np.conj(np.fft.rfft(piece[:, c], n))
        corr += np.fft.irfft(spec, n)[: len(expected)]
    power = np.concatenate([[0.0], np.cumsum((doubled**2).sum(axis=1))])
    window = power[m : m + len(expected)] - power[: len(expected)]
    error = window + float(np.sum(piece**2)) - 2 * corr
    best = np.inf
    for lag in np.argsort(error)[:5]:
        want = doubled[lag : lag + m]
        err = np.sum((piece - want) ** 2) / max(float(np.sum(want**2)), 1e-12)
        best = min(best, float(err))
    return 10 * np.log10(max(best, 1e-30))


def heard_matches(rec: np.ndarray, expected: np.ndarray) -> tuple[bool, str]:
    """Is ``rec`` (the recording's window) ``expected`` (looped)? Each 0.25 s piece is
    aligned on its own (a block the recorder drops on a busy machine spoils one piece,
    a wrong state spoils them all); most must be exact."""
    if not np.any(expected):
        peak = float(np.max(np.abs(rec)))
        return peak < 1e-6, f"silence expected; peak {peak:.2e}"
    chunk = SR // 4
    residuals = [
        piece_residual(rec[s : s + chunk], expected) for s in range(0, len(rec) - chunk + 1, chunk)
    ]
    exact = sum(r < -60 for r in residuals)
    worst = sorted(residuals)[len(residuals) // 2]
    ok = exact >= len(residuals) // 2 + 1
    return (
        ok,
        f"{exact} of {len(residuals)} pieces of 0.25 s exact (median residual {worst:.0f} dB)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="datagrams a second, pings included"
    )
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=4000, help="distinct fuzzed datagrams")
    parser.add_argument("--load", type=int, default=0, help="CPU-bound processes beside")
    parser.add_argument("--no-realtime", action="store_true", help="passed on to serve")
    args = parser.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
        f"{args.load} busy processes beside; "
        f"serve {'--no-realtime' if args.no_realtime else 'real-time'}"
    )

    tmp = Path(tempfile.mkdtemp(prefix="stemdeck-fuzz-"))
    atexit.register(shutil.rmtree, tmp, True)  # its tracks and cache entries: GBs
    track = tmp / "song.wav"
    sf.write(track, tone_mix(6.0, sr=SR).T, SR, subtype="FLOAT")
    env = {**os.environ, "STEMDECK_CACHE": str(tmp / "cache"), "STEMDECK_CONFIG": str(tmp / "cfg")}
    py = sys.executable
    subprocess.run(
        [py, "-m", "stemdeck.daemon.cli", "separate", str(track), "-o", str(tmp / "stems")],
        env=env,
        check=True,
        capture_output=True,
    )
    pool = cases(args.pool, args.seed)
    print(f"pool: {len(pool)} datagrams ({sum(c.verdict == 'error' for c in pool)} certainly bad)")

    port = free_udp_port()
    rec_path = tmp / "rec.wav"
    daemon = subprocess.Popen(
        [
            *(py, "-m", "stemdeck.daemon.cli", "serve", str(track), "--no-audio"),
            *("--at-end", "loop", "--record", str(rec_path), "--block", str(args.block)),
            *("--osc-port", str(port), "--http", "off"),
            *(["--no-realtime"] if args.no_realtime else []),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    link = Link(port)
    busy = burners(args.load)
    try:
        deadline = time.monotonic() + 120
        while True:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"daemon did not start: {daemon.stderr.read() if daemon.stderr else ''}"
                )
            link.send(encode_message("/status"))
            got = link.until("/status", 1.0)
            if got and " ready |" in got[-1][1][0]:
                break
            time.sleep(0.2)
        rss_start = rss_anon(daemon.pid)
        status_start = link.ask("/status", "/status")[-1][1][0]
        rtts: list[float] = []
        problems: list[str] = []
        failures = hangs = unanswered = sent = 0
        started = time.monotonic()
        period = 2.0 / args.rate  # one fuzzed datagram and one /ping
        next_report = started + 30
        i = 0
        while time.monotonic() - started < args.seconds:
            case = pool[i % len(pool)]
            i += 1
            link.send(case.data)
            t0 = time.perf_counter()
            link.send(PING)
            sent += 2
            got = link.until_nth("/pong", pongs(case), 2.0)
            if got is None:
                unanswered += 1
                problems.append(f"no /pong after {case.what!r} ({case.data[:40].hex()})")
                time.sleep(0.5)
                link.sock.setblocking(False)
                try:
                    while True:
                        link.sock.recvfrom(65536)
                except (BlockingIOError, OSError):
                    pass
                continue
            rtt = time.perf_counter() - t0
            rtts.append(rtt)
            hangs += rtt > 0.050
            problem = verdict_problem(case, got[:-1])
            if problem:
                failures += 1
                if len(problems) < 10:
                    problems.append(f"{case.what!r} ({case.data[:48].hex()}): {problem}")
            if daemon.poll() is not None:
                problems.append("daemon exited")
                break
            ahead = started + (i * period) - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            if time.monotonic() > next_report:
                next_report += 30
                el = time.monotonic() - started
                print(
                    f"  {el:4.0f} s: {sent} datagrams, {failures} verdict failures, {hangs} hangs"
                )
        elapsed = time.monotonic() - started
        # The transport plays with no loop; the state is read back, then heard.
        time.sleep(2.5)  # let the /state rate limit refill after the fuzz
        for address in ("/transport/loop/off", "/transport/play"):
            link.send(encode_message(address))
        link.ask("/ping", "/pong")
        time.sleep(0.3)
        state = {a: v for a, v in link.ask("/state", "/state/end")}
        status = link.ask("/status", "/status")[-1][1][0]
        rss_end = rss_anon(daemon.pid)
        time.sleep(2.4)  # two seconds of audio in this state
        names = list(state["/channels"])
        stems = [sf.read(tmp / "stems" / "song" / f"{n}.wav", dtype="float64")[0] for n in names]
        silent = not np.any(expected_mix(state, stems, names))
        if silent:
            # Heard as silence (checked below); then unmute, to check the comparison
            # on sound too, with the gains and pans the fuzz left.
            link.send(encode_message("/master/mute", [0]))
            link.send(encode_message("/master/gain", [1.0]))
            link.send(encode_message("/ch/*/mute", [0]))
            link.send(encode_message("/ch/*/solo", [0]))
            link.send(encode_message("/ch/*/gain", [1.0]))
            link.ask("/ping", "/pong")
            time.sleep(2.4)
            unmuted = {a: v for a, v in link.ask("/state", "/state/end")}
    finally:
        for p in busy:
            p.kill()
        daemon.terminate()
        try:
            _, err = daemon.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            _, err = daemon.communicate()
    rec, _ = sf.read(rec_path, dtype="float64")
    window = rec[-int(2.0 * SR) : -int(0.2 * SR)]
    if not silent:
        ok, how = heard_matches(window, expected_mix(state, stems, names))
    else:
        # The fuzz's state is silence: a run of at least 0.9 s of exact zeros just
        # before the unmuted stretch, which must match the state read back then.
        loud = np.flatnonzero(np.any(rec != 0.0, axis=1))
        start = loud[loud > len(rec) - int(5.0 * SR)][0] if len(loud) else len(rec)
        before = rec[max(0, start - int(0.9 * SR)) : start]
        ok, how = heard_matches(window, expected_mix(unmuted, stems, names))
        quiet = len(before) == int(0.9 * SR) and not np.any(before)
        ok = ok and quiet
        how = (
            f"the fuzz's state silent, heard {'silent' if quiet else 'NOT silent'}; unmuted: {how}"
        )
    rtt_ms = np.percentile(np.array(rtts) * 1000, [50, 99]) if rtts else [float("nan")] * 2
    counters = status.split(" | ")
    print(f"ran {elapsed:.0f} s: {sent} datagrams ({sent / elapsed:.0f}/s), half of them fuzzed")
    print(f"verdict failures: {failures}; unanswered: {unanswered}; /ping over 50 ms: {hangs}")
    print(f"daemon exit status: {daemon.returncode}")
    first = [c for c in status_start.split(" | ") if c.startswith("xruns")]
    print("status before the fuzz: " + " | ".join(first))
    print(
        "status after: " + " | ".join(c for c in counters if c.startswith(("xruns", "osc", "rec")))
    )
    print(f"RssAnon: start {rss_start}, end {rss_end}")
    p50, p99 = rtt_ms
    print(f"/ping round trip: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(rtts) * 1000:.1f} ms")
    print(f"state read back vs recording: {'agree' if ok else 'DISAGREE'} ({how})")
    for line in problems[:10]:
        print("  problem:", line)
    if "Traceback" in err:
        print(err[-2000:])
    bad = failures or unanswered or not ok or daemon.returncode != 0 or "Traceback" in err
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
