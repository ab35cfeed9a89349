"""A third-party OSCQuery client, python-oscquery, walks the whole namespace (issue 26).

It refuses a node that is both a value and a container, and takes a method's
types from its ``VALUE``: the tree lists ``/transport/loop``, ``/meter`` and
``/channels`` by a child that carries the value, and a write-only method has a
placeholder ``VALUE`` (docs/web.md). The first tests read the tree as built
in-process; the last walks a running daemon over HTTP from ``/`` and sets a
channel through what it found.
"""

from __future__ import annotations

import socket
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from osc_host import FakeHost, make_server
from pythonoscquery.shared.osc_access import OSCAccess
from pythonoscquery.shared.osc_path_node import OSCPathNode

from conftest import tone_mix
from stemdeck.daemon.web import namespace
from stemdeck.daemon.web.server import WebApp


def tree(host: FakeHost | None = None) -> dict[str, Any]:
    """The namespace from ``/`` as the server builds it (before any feedback round)."""
    _host, osc = make_server(host=host)
    try:
        return namespace.build(WebApp(osc).snapshot())
    finally:
        osc.sock.close()


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("CONTENTS", {}).values():
        out += nodes(child)
    return out


@pytest.mark.parametrize("colours", [[], ["#FF0000", "#00FF00", "#0000FF", "#FFFFFF"]])
def test_no_node_is_both_a_value_and_a_container(colours: list[str]) -> None:
    root = tree(FakeHost(colours=colours))
    both = [
        n["FULL_PATH"] for n in nodes(root) if "CONTENTS" in n and ("TYPE" in n or "VALUE" in n)
    ]
    assert both == []
    paths = {n["FULL_PATH"] for n in nodes(root)}
    assert {"/transport/loop/region", "/meter/peak", "/meter/rms", "/channels/names"} <= paths
    assert ("/channels/colors" in paths) == bool(colours)


def test_python_oscquery_reads_the_whole_tree() -> None:
    root = tree(FakeHost(colours=["#FF0000", "#00FF00", "#0000FF", "#FFFFFF"]))
    parsed = OSCPathNode.from_json(root)
    ours = {n["FULL_PATH"]: n for n in nodes(root)}
    theirs = {node.full_path: node for node in parsed}
    assert list(theirs) == list(ours)
    for path, node in theirs.items():
        assert node.access == OSCAccess(ours[path]["ACCESS"]), path
        if "CONTENTS" in ours[path] or ours[path]["TYPE"] == "":  # a container, an action
            assert node.value is None and node.is_container, path
        else:  # the types it reads from VALUE are the TYPE we give (null: an off level)
            python = {"i": int, "f": float, "s": str}
            expected = [python[c] for c in ours[path]["TYPE"]]
            got = [type(v) for v in node.value]
            assert [t for t, v in zip(got, node.value, strict=True) if v is not None] == [
                t for t, v in zip(expected, node.value, strict=True) if v is not None
            ], path
    fader = theirs["/ch/vocals/fader"]
    assert fader.value == [0.75] and fader.validate_values([0.5]) == [0.5]
    assert theirs["/transport/loop/region"].value == [0.0, 0.0]
    assert theirs["/channels/names"].value == ["drums", "bass", "vocals", "other"]
    assert theirs["/meter/peak"].value == [-120.0] * 5  # no feedback round yet
    assert theirs["/scene/recall"].value == ["", 0.0]  # write-only: a placeholder
    assert theirs["/subscribe"].value == [0, "", 0.0]


@pytest.mark.e2e  # a `stemdeck serve` subprocess with its web server
def test_python_oscquery_walks_a_daemon_from_the_root_and_sets_a_channel(tmp_path: Path) -> None:
    from daemon_helpers import Daemon, poll
    from pythonosc.udp_client import SimpleUDPClient
    from pythonoscquery.osc_query_client import OSCQueryClient
    from zeroconf import ServiceInfo

    sf.write(tmp_path / "song.wav", tone_mix(2.0, sr=48000).T, 48000, subtype="FLOAT")
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "c")}
    daemon = Daemon([str(tmp_path / "song.wav"), "--no-audio"], env, tmp_path)
    try:
        daemon.wait_ready()
        http_port = urllib.parse.urlsplit(daemon.http_url()).port
        # What zeroconf would have found (--advertise is never used in tests).
        info = ServiceInfo(
            "_oscjson._tcp.local.",
            "stemdeck._oscjson._tcp.local.",
            port=http_port,
            addresses=[socket.inet_aton("127.0.0.1")],
        )
        client = OSCQueryClient(info)
        root = client.query_node("/")
        assert root is not None
        paths = [node.full_path for node in root]
        assert len(paths) == len(set(paths)) > 80
        assert {"/ch/vocals/fader", "/transport/loop/region", "/meter/peak"} <= set(paths)
        host_info = client.get_host_info()
        assert host_info is not None
        assert (host_info.osc_ip, host_info.osc_port) == ("127.0.0.1", daemon.port)
        assert host_info.osc_ip is not None
        fader = root.find_subnode("/ch/vocals/fader")
        assert fader is not None and fader.access == OSCAccess.READWRITE_VALUE
        osc = SimpleUDPClient(host_info.osc_ip, host_info.osc_port)
        osc.send_message(fader.full_path, fader.validate_values([0.5]))
        poll(
            lambda: client.query_node("/ch/vocals/fader"),
            lambda node: node is not None and node.value == [0.5],
            "the fader set through python-oscquery's node",
        )
        assert daemon.client.query("/ch/4/db") == pytest.approx(-10.0, abs=1e-4)  # vocals
    finally:
        code, err = daemon.stop()
    assert code == 0, err


def test_the_leaders_tempo_and_phase_are_read_only_values() -> None:
    host = FakeHost()
    host.sync.leader_bpm, host.sync.phase_error = 126.0, 0.0004
    sync = tree(host)["CONTENTS"]["sync"]["CONTENTS"]
    assert {k: (n["TYPE"], n["ACCESS"], n["VALUE"]) for k, n in sync.items() if k != "source"} == {
        "anchor": ("f", 3, [0.0]),
        "tempo": ("f", 1, [126.0]),
        "phase": ("f", 1, [0.4]),
        "peers": ("i", 1, [0]),
    }
