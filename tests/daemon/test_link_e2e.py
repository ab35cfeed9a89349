"""Ableton Link end to end: ``stemdeck serve --audio jack --sync link`` and a second
Link peer in a network namespace of their own (``unshare -n``: Link multicasts on
every interface that is up, so never on the machine's network), on jackd's dummy
driver. tests/link_session.py runs the session and measures it (every click
stemdeck plays against the peer's ``phaseAtTime`` at the host time it left
stemdeck's port); this test asserts what it measured: the clicks land on the
peer's beats within 2 ms and each bar's first click on the peer's bar line,
through a tempo change, and the peer's stop and start stop and start stemdeck."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from link_session import STOP_LATE_MS, STOP_LEAD_MS

pytestmark = [pytest.mark.jack, pytest.mark.e2e, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[1] / "link_session.py"
#: The target: stemdeck's beats within 2 ms of the peer's (issue #24).
MAX_MS = 2.0
TEMPO_TO = 126.0
#: The fewest clicks measured in a part (of about ten): the clicks from a quarter second
#: before to a second after an xrun are not measured, and a busy machine has a few.
MEASURED = 4


def _namespace_refused() -> str | None:
    """Why a network namespace cannot be made here, or None."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -n is not permitted here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def session() -> dict[str, Any]:
    pytest.importorskip("link", reason="no Link bindings: pip install 'stemdeck[link]'")
    refused = _namespace_refused()
    if refused is not None:
        pytest.skip(refused)
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(SCRIPT), "--seconds", "6", "--tempo", str(TEMPO_TO)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    print(json.dumps(result, indent=1))
    assert result["exit"] == 0, result.get("stderr")
    return result


def _placed(part: dict[str, list], least: int) -> None:
    """At least ``least`` clicks, each within :data:`MAX_MS` of the peer's beat,
    the loud ones (each bar's first) on its bar line, the others not."""
    errors = part["errors_ms"]
    assert len(errors) >= least, part
    assert max(abs(e) for e in errors) <= MAX_MS, errors
    assert part["loud_beats"] and set(part["loud_beats"]) == {0}, part
    assert part["soft_beats"] and set(part["soft_beats"]) <= {1, 2, 3}, part


def test_the_peers_find_each_other(session: dict[str, Any]) -> None:
    assert session["peers"] == [["/sync/peers", [1]]]
    assert session["peer_peers"] == 1


def test_beats_and_bars_follow_the_peer(session: dict[str, Any]) -> None:
    assert session["clicks_before_start"] == 0  # the session had not started: silence
    _placed(session["at_120"], MEASURED)
    ((tempo, (bpm,)), (phase, (ms,))) = session["sync_120"]
    assert (tempo, bpm) == ("/sync/tempo", 120.0)
    assert phase == "/sync/phase" and abs(ms) <= MAX_MS, ms


def test_a_tempo_change_of_the_peer_sets_the_rate(session: dict[str, Any]) -> None:
    # Link carries a tempo as whole µs a beat: 126 BPM arrives as 60e6 / 476190,
    # and OSC sends it as a float32.
    said = float(np.float32(60e6 / round(60e6 / TEMPO_TO)))
    ((tempo, (bpm,)), (phase, (ms,)), peers) = session["sync_after"]
    assert (tempo, bpm) == ("/sync/tempo", said)
    assert phase == "/sync/phase" and abs(ms) <= MAX_MS, ms
    assert peers == ["/sync/peers", [1]]
    # The rate is the tempo over the grid's, within the nudge a phase error under
    # 0.1 ms gives (5e-4) and the least change posted (5e-4 of the rate).
    (((address, (rate,)),)) = session["rate_after"]
    assert address == "/transport/rate"
    assert abs(rate - said / 120.0) <= 1e-3 * said / 120.0, rate
    _placed(session["at_new"], MEASURED)
    # The beat within half a beat before the change (one click at most, none when an
    # xrun was near it): on the old tempo's beat. It landed up to 9 ms early while the
    # daemon took JACK's clock for CLOCK_MONOTONIC (daemon/link.py): the new tempo
    # was applied from the time that far before the change.
    before = session["at_change"]["errors_ms"]
    assert len(before) <= 1 and all(abs(e) <= MAX_MS for e in before), session["at_change"]
    ((address, (line,)),) = session["status_after"]
    shown = re.search(r" \| sync link 126\.00 BPM ([+-]\d+\.\d) ms 1 peer \| ", line)
    assert address == "/status" and shown is not None, line
    assert abs(float(shown[1])) <= MAX_MS, line


def test_stemdecks_tempo_is_the_sessions(session: dict[str, Any]) -> None:
    """``/transport/bpm`` and ``/transport/rate`` while Link leads set the session's
    tempo (the grid's 120 BPM times the rate), which the peer takes; nothing else
    answers them."""
    for address, bpm in (("/transport/bpm", 132.0), ("/transport/rate", 120.0)):
        reply, tempo, sync_tempo = session[f"set {address}"]
        said = 60e6 / round(60e6 / bpm)  # whole µs a beat
        assert reply == [] and tempo == said, (reply, tempo)
        # stemdeck's own reading: the tempo it committed, or the session's as the
        # peers carry it (whole µs a beat) once its timeline comes back from them.
        ((address, (value,)),) = sync_tempo
        assert address == "/sync/tempo", sync_tempo
        assert value in (float(np.float32(bpm)), float(np.float32(said))), value


def test_the_peers_stop_and_start_stop_and_start_stemdeck(session: dict[str, Any]) -> None:
    # The peer stopped the session a fixed time before a beat (later on a busy machine,
    # up to STOP_LATE_MS): that beat's click is not heard, nor anything else, until
    # the session restarts. (A stop at an arbitrary phase, as this test made before,
    # fell now and then a few ms before a beat, whose click no follower can stop.)
    lead = session["stop_lead_ms"]
    # (The sleep is on CLOCK_MONOTONIC, Link's clock is another: up to 1 ms either way.)
    assert STOP_LEAD_MS - STOP_LATE_MS <= lead <= STOP_LEAD_MS + 1.0, lead
    assert session["clicks_after_stop_ms"] == []
    assert session["sounding_after_stop_ms"] == 0.0
    # Restarted: the track's bar 1 on the session's next bar line (within a bar at
    # 126 BPM), then on the beats.
    # An xrun before it may have swallowed bar 1's click: then the next beat's is first.
    first = session["first_click_after_restart_ms"]
    beats = 4 + (1 if session["xruns_before_first_click"] else 0)
    assert first is not None and 0.0 < first <= beats * 60000.0 / TEMPO_TO + MAX_MS, (
        first,
        session["xruns_before_first_click"],
    )
    _placed(session["after_restart"], MEASURED)
