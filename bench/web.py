"""Real-time safety of the web side: the audio callback with and without browser clients.

    .venv/bin/python bench/web.py [--seconds 8] [--rounds 3] [--clients 10] [--rate 200]

Runs the daemon in this process (the null clock, ``--no-audio``, on the demo
track's separated channels, real-time scheduling where allowed) and times every
``Mixer.process`` call, as the audio thread makes it. Each round has five
phases of ``--seconds``:

- no web client;
- ``--clients`` WebSocket clients in another process, each LISTENing to every strip
  value, both meters and the position (streamed about 25 times a second), while
  together they send ``--rate`` fader and pan changes a second (each change then
  reaches every client);
- two controls: no client, while another process keeps the machine as busy as the
  clients' process just did (a real set's clients are phones and tablets, not
  processes on the daemon's cores); and no client, while a thread of the daemon
  posts the same changes straight to the mixer (what the changes cost the mixer:
  every one is a 10 ms ramp);
- the same traffic over UDP OSC (``--clients`` subscribers, ``--rate`` changes a
  second).

Prints, side by side, the medians over rounds of the callback's median and p99
(µs), the p99 of the time it spent waiting (its duration less the audio thread's
CPU time: the GIL, or a core), the p99 from when the block was due to when it
was done (what a sound card waits for: the clock thread's wake-up and its wait
for the GIL before the call count too), the xruns, the CPU use of the daemon and of the
other process, and the ratios to the phase with no client; the noise (the spread
of the no-client p99 over the rounds); and whether OPENBLAS_CORETYPE is set.
Target: xruns +0, p99 ratio within noise (~1).

``--client-process``, ``--udp-process`` and ``--busy-process`` are the other processes
(started by the bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from statistics import median
from typing import Any

import numpy as np


# -- the client side (a separate process: browsers are not in the daemon's GIL) ---------------
async def _client(
    url: str, index: int, n: int, rate: float, seconds: float, counts: list[int]
) -> None:
    import aiohttp

    from stemdeck.daemon.osc.wire import encode_message

    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        listens = ["/meter", "/meter/rms", "/transport/position", "/transport/playing"]
        listens += [f"/ch/{c}/{p}" for c in range(1, 5) for p in ("fader", "mute", "solo", "pan")]
        for path in listens:
            await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": path}))
        await ws.send_bytes(encode_message("/state"))

        async def read() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    counts[index] += 1
                elif msg.type != aiohttp.WSMsgType.TEXT:
                    return

        reader = asyncio.create_task(read())
        rng = random.Random(index)
        period = n / rate  # this client's share of the changes
        start = time.monotonic()
        next_at = start + rng.random() * period
        sent = 0
        while time.monotonic() - start < seconds:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            channel = rng.randrange(1, 5)
            if rng.random() < 0.8:
                msg = encode_message(f"/ch/{channel}/fader", [rng.uniform(0.5, 0.8)])
            else:
                msg = encode_message(f"/ch/{channel}/pan", [rng.uniform(-0.3, 0.3)])
            await ws.send_bytes(msg)
            sent += 1
            next_at += period
        await ws.close()
        reader.cancel()
        counts[n + index] = sent


def udp_process(port: int, n: int, rate: float, seconds: float) -> None:
    """The same load over UDP OSC: ``n`` subscribers sending ``rate`` changes a second."""
    import selectors
    import socket

    from stemdeck.daemon.osc.wire import encode_message

    target = ("127.0.0.1", port)
    socks = []
    sel = selectors.DefaultSelector()
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(encode_message("/subscribe", ["names"]), target)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    rng = random.Random(0)
    start = time.monotonic()
    next_at = start
    sent = received = 0
    while time.monotonic() - start < seconds:
        for key, _ in sel.select(max(0.0, next_at - time.monotonic())):
            try:
                while True:
                    key.fileobj.recv(65536)  # type: ignore[union-attr]
                    received += 1
            except BlockingIOError:
                pass
        if time.monotonic() >= next_at:
            channel = rng.randrange(1, 5)
            address = f"/ch/{channel}/fader" if rng.random() < 0.8 else f"/ch/{channel}/pan"
            value = rng.uniform(0.5, 0.8) if address.endswith("fader") else rng.uniform(-0.3, 0.3)
            socks[sent % n].sendto(encode_message(address, [value]), target)
            sent += 1
            next_at += 1.0 / rate
    for s in socks:
        s.sendto(encode_message("/unsubscribe"), target)
        s.close()
    print(json.dumps({"received": received, "sent": sent}))


def post_directly(engine: Any, rate: float, seconds: float) -> None:
    """The changes the clients send, posted to the mixer from a thread of this process,
    with no network and no feedback: 80 % fader moves, 20 % pan moves."""
    from stemdeck.core.mixer.commands import StripTarget

    rng = random.Random(0)
    gain, pan = [1.0] * 4, [0.0] * 4
    start = time.monotonic()
    next_at = start
    while time.monotonic() - start < seconds:
        time.sleep(max(0.0, next_at - time.monotonic()))
        channel = rng.randrange(4)
        if rng.random() < 0.8:
            gain[channel] = rng.uniform(0.5, 0.8)
        else:
            pan[channel] = rng.uniform(-0.3, 0.3)
        engine.post(StripTarget(channel, gain[channel], False, False, pan[channel]))
        next_at += 1.0 / rate


def busy_process(share: float, seconds: float) -> None:
    """A process that talks to nobody and keeps ``share`` of a core busy, in bursts of
    a millisecond or two: the machine as loaded as it is by the clients."""
    period = 0.01
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        while time.monotonic() - start < share * period:
            pass
        time.sleep(max(0.0, period - (time.monotonic() - start)))


def client_process(url: str, n: int, rate: float, seconds: float) -> None:
    counts = [0] * (2 * n)

    async def main() -> None:
        await asyncio.gather(*(_client(url, i, n, rate, seconds, counts) for i in range(n)))

    asyncio.run(main())
    print(json.dumps({"received": sum(counts[:n]), "sent": sum(counts[n:])}))


def run_child(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """A client or neighbour process, started with every CPU: this process's threads
    are pinned to the audio thread's CPU (daemon/realtime.py), and a client may run
    anywhere."""
    from stemdeck.daemon.realtime import children_on_every_cpu

    with children_on_every_cpu():
        return subprocess.run(cmd, **kwargs)


# -- the daemon side -----------------------------------------------------------------------------
def _cpu_since(before: resource.struct_rusage) -> float:
    """CPU seconds of the client processes that ended since ``before``."""
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (now.ru_utime - before.ru_utime) + (now.ru_stime - before.ru_stime)


class Timed:
    """Wraps ``Mixer.process``: the duration of every call and the audio thread's CPU
    time in it, into preallocated arrays. Their difference is the time the callback
    waited (for the GIL, or for a core). Also how long after the block was due
    (``due()``, the null clock's schedule) the call returned: the thread's
    wake-up and its wait for the GIL before the call count there, as they
    would in a sound card's callback."""

    def __init__(self, process, capacity: int, due) -> None:
        self.process = process
        self.due = due
        self.times = np.zeros(capacity)
        self.cpu = np.zeros(capacity)
        self.late = np.zeros(capacity)
        self.n = 0

    def __call__(self, out: np.ndarray) -> None:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        self.process(out)
        t1 = time.perf_counter()
        done = time.monotonic()
        c1 = time.thread_time()
        i = self.n
        if i < len(self.times):
            self.times[i] = t1 - t0
            self.cpu[i] = c1 - c0
            self.late[i] = done - self.due()
            self.n = i + 1

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(durations, waits, due to done) since the last take, in seconds."""
        n = self.n
        times = self.times[:n].copy()
        waits = np.maximum(times - self.cpu[:n], 0.0)
        late = self.late[:n].copy()
        self.n = 0
        return times, waits, late


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=10, help="at most 16 (a cap per address)")
    ap.add_argument("--rate", type=float, default=200.0, help="changes a second, all clients")
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--client-process", nargs=4, metavar=("URL", "N", "RATE", "SECONDS"))
    ap.add_argument("--udp-process", nargs=4, metavar=("PORT", "N", "RATE", "SECONDS"))
    ap.add_argument("--busy-process", nargs=2, metavar=("SHARE", "SECONDS"))
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="leave the daemon's threads on every CPU (to compare with daemon/realtime.py's pin)",
    )
    args = ap.parse_args()
    if args.busy_process:
        busy_process(float(args.busy_process[0]), float(args.busy_process[1]))
        return
    if args.udp_process:
        port, n, rate, seconds = args.udp_process
        udp_process(int(port), int(n), float(rate), float(seconds))
        return
    if args.client_process:
        url, n, rate, seconds = args.client_process
        client_process(url, int(n), float(rate), float(seconds))
        return

    import logging

    from stemdeck.daemon.audio.sinks import NullSink
    from stemdeck.daemon.serve import Daemon, ServeOptions

    logging.basicConfig(level=logging.WARNING)
    if args.no_pin:
        import stemdeck.daemon.audio.sinks as audio

        audio.pin_threads = lambda: ""
    daemon = Daemon(ServeOptions(no_audio=True, osc_port=0, http_port=0, block=args.block))
    daemon.start()
    try:
        deadline = time.monotonic() + 600
        while not daemon.loader.separated:
            if time.monotonic() > deadline:
                raise SystemExit("the demo track did not separate in 10 minutes")
            time.sleep(0.2)
        sink = daemon.audio.sink if daemon.audio is not None else None
        assert isinstance(sink, NullSink) and daemon.web is not None
        timed = Timed(
            daemon.engine.process,
            int(48000 / args.block * args.seconds * 2) + 100,
            lambda: sink.due,
        )
        daemon.engine.process = timed  # type: ignore[method-assign]
        ws_url = f"ws://127.0.0.1:{daemon.web.address[1]}/"
        budget_us = args.block / 48000 * 1e6
        phases = ("none", "clients", "busy", "direct", "udp")
        Row = tuple[float, float, float, int, float, float, float]
        rows: dict[str, list[Row]] = {p: [] for p in phases}
        traffic = []
        for _ in range(args.rounds):
            for phase in phases:
                time.sleep(0.5)  # settle: connections from the last phase are gone
                timed.take()
                xruns = sink.xruns
                cpu, wall = time.process_time(), time.monotonic()
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                if phase == "clients":
                    proc = run_child(
                        [
                            sys.executable,
                            __file__,
                            "--client-process",
                            ws_url,
                            str(args.clients),
                            str(args.rate),
                            str(args.seconds),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    traffic.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                elif phase == "udp":
                    assert daemon.server is not None
                    run_child(
                        [
                            sys.executable,
                            __file__,
                            "--udp-process",
                            str(daemon.server.address[1]),
                            str(args.clients),
                            str(args.rate),
                            str(args.seconds),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                elif phase == "busy":
                    share = rows["clients"][-1][5] / 100  # what the clients took, this round
                    run_child(
                        [sys.executable, __file__, "--busy-process", str(share), str(args.seconds)],
                        check=True,
                    )
                elif phase == "direct":
                    post_directly(daemon.engine, args.rate, args.seconds)
                else:
                    time.sleep(args.seconds)
                times, waits, late = timed.take()
                times, waits, late = times * 1e6, waits * 1e6, late * 1e6
                rows[phase].append(
                    (
                        float(np.median(times)),
                        float(np.percentile(times, 99)),
                        float(np.percentile(waits, 99)),
                        sink.xruns - xruns,
                        100 * (time.process_time() - cpu) / (time.monotonic() - wall),
                        100 * _cpu_since(children) / (time.monotonic() - wall),
                        float(np.percentile(late, 99)),
                    )
                )
    finally:
        daemon.shutdown()

    print(
        f"web bench: {args.rounds} rounds x {args.seconds:g} s per phase, block {args.block} "
        f"({budget_us:.0f} µs), null clock, scheduling: {sink.scheduling}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    sent = median(t["sent"] / args.seconds for t in traffic)
    got = median(t["received"] / args.seconds / args.clients for t in traffic)
    print(
        f"clients: {args.clients}, changes sent {sent:.0f}/s in all, "
        f"WebSocket packets received {got:.0f}/s per client"
    )
    heads = {"none": "no client", "clients": f"{args.clients} clients"}
    heads |= {"busy": "as busy", "direct": "posted", "udp": "UDP instead"}
    print(
        f"{'':>23}"
        + "".join(f" {heads[p]:>13}" + ("" if p == "none" else f" {'ratio':>5}") for p in phases)
    )
    for label, k, fmt in (
        ("callback median (µs)", 0, "{:.1f}"),
        ("callback p99 (µs)", 1, "{:.1f}"),
        ("p99 of its waiting (µs)", 2, "{:.1f}"),
        ("p99 due to done (µs)", 6, "{:.1f}"),
        ("xruns per phase", 3, "{:.0f}"),
        ("daemon CPU (%)", 4, "{:.0f}"),
        ("other process CPU (%)", 5, "{:.0f}"),
    ):
        a = median(r[k] for r in rows["none"])
        line = f"{label:>23} {fmt.format(a):>13}"
        for p in phases[1:]:
            b = median(r[k] for r in rows[p])
            ratio = f"{b / a:.2f}" if a else ("-" if b == 0 else "inf")
            line += f" {fmt.format(b):>13} {ratio:>5}"
        print(line)
    per_round = ", ".join(
        f"{a[1]:.0f}/{b[1]:.0f}" for a, b in zip(rows["none"], rows["clients"], strict=True)
    )
    print(f"p99 per round (none/clients, µs): {per_round}")
    quiet = [r[1] for r in rows["none"]]
    print(
        f"noise: the no-client p99 spans {min(quiet):.0f}-{max(quiet):.0f} µs over the rounds "
        f"({max(quiet) / min(quiet):.2f}x); with clients, median of rounds "
        f"{median(r[1] for r in rows['clients']):.0f} µs"
    )
    total = sum(r[3] for r in rows["clients"]) - sum(r[3] for r in rows["none"])
    print(f"xruns with clients minus without, all rounds: {total:+d}")


if __name__ == "__main__":
    main()
