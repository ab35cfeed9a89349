"""A load that fails late, against a running `stemdeck serve --no-cache` whose track is
separating (#21 items 1, 4): the requester gets ``/error`` with the reason, the playing
track separates on to the end, one line is logged."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Client, Daemon

from conftest import tone_mix

SR = 48000
pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a `stemdeck serve` subprocess


def _status(client: Client) -> str:
    return str(client.query("/status"))


def test_a_failed_load_leaves_the_separating_track_alone(tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    sf.write(library / "long.wav", tone_mix(30.0, sr=SR).T, SR, subtype="FLOAT")
    # Many iterations: the separation outlasts the failed load by seconds, even on a
    # fast machine (about 10 s on one core).
    slow = tmp_path / "slow.toml"
    slow.write_text("stems_iter = 2000\n")
    nan = tone_mix(3.0, sr=SR, seed=5)
    nan[1, 4000] = np.nan  # its header is fine
    sf.write(library / "nan.wav", nan.T, SR, subtype="FLOAT")
    huge = library / "huge.flac"  # 2 minutes of silence: a few KiB
    sf.write(huge, np.zeros((120 * SR, 2), np.float32), SR, subtype="PCM_16")
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "config")}
    args = [str(library / "long.wav"), "--no-audio", "--no-cache", "--max-minutes", "1.5"]
    args += ["--preset", str(slow)]
    daemon = Daemon(args, env, tmp_path)
    try:
        daemon.wait_ready(separated=False)
        client = daemon.client
        (progress,) = client.ask("/track/progress")
        assert progress[1][0] in ("starting", "stft", "nmf", "activations", "reconstruct")
        # Refused at once, before anything is decoded.
        assert client.ask("/track/load", str(huge)) == [
            (
                "/error",
                [
                    f"/track/load: refused {str(huge)!r}: 2 minutes long; at most 1.5 "
                    "(serve --max-minutes)"
                ],
            )
        ]
        # Checked (the header is fine), then the read fails: the reply says so.
        reason = f"{str(library / 'nan.wav')!r}: 1 samples are NaN or infinite; re-export the file"
        assert client.ask("/track/load", str(library / "nan.wav"), timeout=30.0) == [
            ("/error", [f"/track/load: {reason}"])
        ]
        assert client.ask("/track/progress") == [("/track/progress", ["load failed", 0.0])]
        status = _status(client)
        assert status.startswith("long playing ") and status.endswith(f" | problem: {reason}")
        # The playing track separates on to the end.
        deadline = time.monotonic() + 300
        while " ready | " not in status and time.monotonic() < deadline:
            time.sleep(0.5)
            status = _status(client)
        assert status.startswith("long playing ") and " ready | " in status, status
    finally:
        code, err = daemon.stop()
    assert code == 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "not loaded" in line or "nan.wav" in line]
    assert len(lines) == 1 and lines[0].endswith(f"track not loaded: {reason}"), lines
    # The separation was running when the load failed, and finished after it.
    assert err.index("track not loaded") < err.index("long: channels ready (not cached)")
