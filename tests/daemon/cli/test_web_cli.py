"""`--http`, `--http-host` and `--advertise` on a real `stemdeck serve --no-audio`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from daemon_helpers import Daemon

from conftest import tone_mix

SR = 48000
pytestmark = pytest.mark.e2e  # `stemdeck serve` subprocesses


@pytest.fixture
def track(tmp_path: Path) -> Path:
    path = tmp_path / "song.wav"
    sf.write(path, tone_mix(2.0, sr=SR).T, SR, subtype="FLOAT")
    return path


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STEMDECK_CACHE": str(tmp_path / "c")},
    )


def test_served_daemon_answers_oscquery_and_counts_web_clients(tmp_path: Path, track) -> None:
    daemon = Daemon([str(track), "--no-audio"], {"STEMDECK_CACHE": str(tmp_path / "c")}, tmp_path)
    try:
        daemon.wait_ready(separated=False)  # the web side needs no channels
        url = daemon.http_url()
        assert url.startswith("http://127.0.0.1:") and "token" not in url
        with urllib.request.urlopen(url + "?HOST_INFO", timeout=30) as r:
            info = json.load(r)
        assert info["OSC_PORT"] == daemon.port and info["OSC_TRANSPORT"] == "UDP"
        assert info["WS_PORT"] == int(url.rsplit(":", 1)[1].strip("/"))
        status = daemon.client.ask("/status")
        assert "| web clients 0 refused 0" in status[0][1][0]
    finally:
        code, err = daemon.stop()
    assert code == 0, err


def test_http_off_serves_nothing(tmp_path: Path, track) -> None:
    daemon = Daemon(
        [str(track), "--no-audio", "--http", "off"],
        {"STEMDECK_CACHE": str(tmp_path / "c")},
        tmp_path,
    )
    try:
        daemon.wait_ready(separated=False)  # the web side needs no channels
        status = daemon.client.ask("/status")
        assert "web clients" not in status[0][1][0]
    finally:
        code, err = daemon.stop()
    assert code == 0, err
    assert "mixer on" not in err


def test_http_port_in_use_is_one_error_line(tmp_path: Path, track) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve(tmp_path, str(track), "--no-audio", "--osc-port", "0", "--http", str(port))
    assert proc.returncode == 1, proc.stderr
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in proc.stderr
    assert "pick another --http PORT, or --http off" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "error" in ln]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--advertise", "--http", "off"], "--advertise announces the web server"),
        (["--http", "web"], "expected a port number, got 'web'"),
    ],
)
def test_bad_web_flags(tmp_path: Path, track, args: list[str], message: str) -> None:
    proc = serve(tmp_path, str(track), "--no-audio", "--osc-port", "0", *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
