"""Names from the outside world never break a reply (issue 21, items 2 and 8).

A library file whose name is not UTF-8 is listed in the lossless form of
``daemon/pathnames.py`` and loads back from it; every OSC encoder takes any string
(``wire.text_bytes``) and its size (``reply_size``) is exact; a reply too large
for a UDP datagram is one ``/error`` saying so, never a silent drop.
"""

from __future__ import annotations

import os
import socket
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from osc_host import FakeHost, LibraryHost, latin1_library, make_server

from stemdeck.core.control.registry import Registry
from stemdeck.core.mixer.engine import Mixer
from stemdeck.daemon.osc import Feedback, OscServer
from stemdeck.daemon.osc.limits import MAX_DATAGRAM, reply_size
from stemdeck.daemon.osc.wire import (
    Message,
    OscEncodeError,
    decode,
    encode_message,
    message_size,
    text_bytes,
)
from stemdeck.daemon.pathnames import library_files, listed, resolve_listed, unlisted


# -- the listed form ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"/m/song.wav", "/m/song.wav"),
        (b"/m/\xc3\xa9t\xc3\xa9.wav", "/m/\u00e9t\u00e9.wav"),  # UTF-8: as it is
        (b"/m/a\\b.wav", "/m/a\\b.wav"),  # a backslash that starts no escape: as it is
        (b"/m/caf\xe9 live.wav", "/m/caf\\xe9 live.wav"),
        (b"/m/\xff\xfe.wav", "/m/\\xff\\xfe.wav"),
        # A UTF-8 name that looks escaped is escaped itself: no two files share a name.
        (b"/m/caf\\xe9 live.wav", "/m/caf\\\\xe9 live.wav"),
        (b"/m/a\\\\b.wav", "/m/a\\\\\\\\b.wav"),
        (b"/m/caf\xe9\\b.wav", "/m/caf\\xe9\\\\b.wav"),  # escaped: every backslash doubled
        # Hostile review, issue 21: control and format characters reached logs raw.
        (b"/m/ctl\x1b[31mred\x07.wav", "/m/ctl\\x1b[31mred\\x07.wav"),
        (b"/m/two\nlines.wav", "/m/two\\x0alines.wav"),
        (b"/m/rlo\xe2\x80\xaevaw.exe", "/m/rlo\\xe2\\x80\\xaevaw.exe"),
        (b"/m/a\\b\n.wav", "/m/a\\\\b\\x0a.wav"),
        (b"/m/nbsp\xc2\xa0.wav", "/m/nbsp\u00a0.wav"),
    ],
)
def test_names_are_listed_exactly(raw: bytes, shown: str) -> None:
    name = os.fsdecode(raw)
    assert listed(name) == shown
    back = unlisted(shown)
    assert (shown if back is None else back) == name


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=8, unique=True))
def test_listing_is_lossless_and_one_to_one(names: list[bytes]) -> None:
    paths = [os.fsdecode(b"/m/" + n.replace(b"\x00", b"0")) for n in names]
    shown = [listed(p) for p in paths]
    assert len(set(shown)) == len(set(paths))  # no two files share a listed name
    for path, text in zip(paths, shown, strict=True):
        text.encode("utf-8")  # every encoder takes it
        assert all(c.isprintable() or unicodedata.category(c) == "Zs" for c in text)
        back = unlisted(text)
        assert (text if back is None else back) == path


def test_a_listed_name_loads_the_file_it_names(tmp_path: Path) -> None:
    library, latin1 = latin1_library(tmp_path)
    assert resolve_listed(listed(latin1)) == latin1
    # A file literally named as the other's listed form is listed escaped itself, and
    # each listed name resolves to its own file.
    literal = library / "caf\\xe9 live.wav"
    literal.write_bytes(b"")
    assert listed(str(literal)) == f"{library}/caf\\\\xe9 live.wav"
    assert resolve_listed(listed(str(literal))) == str(literal)
    assert resolve_listed(listed(latin1)) == latin1
    # A name sent as it is (not from the list) is taken as it is.
    assert resolve_listed(str(library / "song.wav")) == str(library / "song.wav")
    assert resolve_listed("/nowhere/caf\\xe9.wav") == "/nowhere/caf\\xe9.wav"


def test_library_files_lists_every_name(tmp_path: Path) -> None:
    library, _ = latin1_library(tmp_path)
    assert library_files([library], 200) == [
        f"{library}/caf\\xe9 live.wav",
        f"{library}/song.wav",
    ]


# -- the encoder ------------------------------------------------------------------------------
def test_the_encoder_takes_any_string() -> None:
    assert text_bytes("caf\udce9 live") == b"caf\\xe9 live"
    assert text_bytes("a\ud800b") == "a\ufffdb".encode()
    assert text_bytes("\U0001f3b5") == "\U0001f3b5".encode()
    assert encode_message("/track/name", ["caf\udce9"]) == encode_message(
        "/track/name", ["caf\\xe9"]
    )
    assert decode(encode_message("/track/name", ["caf\udce9"])) == Message(
        "/track/name", ("caf\\xe9",)
    )
    with pytest.raises(OscEncodeError, match=r"^the integer 18446744073709551616 does not fit"):
        encode_message("/x", [2**64])


_ARGS = st.lists(
    st.one_of(
        st.booleans(),
        st.none(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.binary(max_size=9),
        st.text(max_size=9),  # lone surrogates included
    ),
    max_size=6,
)


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(st.text(min_size=1, max_size=9), _ARGS)
def test_reply_size_is_the_encoded_size(address: str, args: list) -> None:
    assert reply_size(address, args) == message_size(address, args)
    assert message_size(address, args) == len(encode_message(address, args))


# -- over UDP ---------------------------------------------------------------------------------
def receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Room for a whole feedback round of 60 kB names before the test reads it (the
    # kernel caps it at net.core.rmem_max): else the round's last messages are dropped.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10.0)
    return s


def until(sock: socket.socket, address: str) -> list[tuple[str, list]]:
    """Every message up to the first to ``address``."""
    out: list[tuple[str, list]] = []
    while True:
        msg = decode(sock.recvfrom(65536)[0])
        assert isinstance(msg, Message)
        out.append((msg.address, list(msg.args)))
        if msg.address == address:
            return out


def as_sent(address: str, args: Sequence[object]) -> tuple[str, list]:
    """A message as a client reads it (floats in 32 bits)."""
    msg = decode(encode_message(address, args))
    assert isinstance(msg, Message)
    return msg.address, list(msg.args)


def ask(server: OscServer, sock: socket.socket, address: str, *args: object) -> list:
    """Send ``address`` then ``/ping``: the replies before the ``/pong``."""
    sock.sendto(encode_message(address, args), server.address)
    sock.sendto(encode_message("/ping"), server.address)
    return until(sock, "/pong")[:-1]


def test_a_library_name_that_is_not_utf8_is_listed_and_loads_over_udp(tmp_path: Path) -> None:
    library, latin1 = latin1_library(tmp_path)
    host, server = make_server(host=LibraryHost(root=library))
    client = receiver()
    server.start()
    try:
        shown = f"{library}/caf\\xe9 live.wav"
        assert ask(server, client, "/track/list") == [
            ("/track/list", [shown, f"{library}/song.wav"])
        ]
        assert ask(server, client, "/track/load", shown) == [("/track/load", [shown])]
        assert host.calls == [("load", latin1)]
        # The track's name holds the byte too: sent as the list writes it.
        assert ask(server, client, "/track/name") == [("/track/name", ["caf\\xe9 live"])]
        assert server.control.counts().errors == 0
    finally:
        server.stop()
        client.close()


LONG = [c * 60_000 for c in "abcd"]  # four stem names of 60,000 characters


def long_named() -> FakeHost:
    return FakeHost(registry=Registry(LONG), engine=Mixer(max_channels=len(LONG)))


def test_a_reply_larger_than_a_datagram_is_one_error_not_a_silent_drop() -> None:
    _host, server = make_server(host=long_named())
    size = message_size("/channels", LONG)
    assert size == 240_036 and size > MAX_DATAGRAM
    error = (
        "/error",
        [f"/channels: reply not sent: {size} bytes, more than a UDP datagram holds (65507)"],
    )
    # The labels are the names (the track names no others): as large, the same error.
    labels_size = message_size("/channels/labels", LONG)
    labels_error = (
        "/error",
        [
            f"/channels/labels: reply not sent: {labels_size} bytes, "
            "more than a UDP datagram holds (65507)"
        ],
    )
    client = receiver()
    server.start()
    try:
        client.sendto(encode_message("/state"), server.address)
        state = until(client, "/state/end")
        expected = [as_sent(a, v) for a, v in server.control.state("index")]
        at = [a for a, _ in expected].index("/channels")
        at_labels = [a for a, _ in expected].index("/channels/labels")
        assert at_labels == at + 1
        assert state == [
            *expected[:at],
            error,
            labels_error,
            *expected[at_labels + 1 :],
            ("/state/end", []),
        ]
        assert server.control.counts().errors == 2
        # A subscriber's first full state: the same /errors in the same place.
        port = client.getsockname()[1]
        assert ask(server, client, "/subscribe", port) == [("/subscribe", [port, "names"])]
        Feedback(server).tick()
        fed = until(client, "/transport/position")
        assert error in fed and not any(a == "/channels" for a, _ in fed)
        assert labels_error in fed and not any(a == "/channels/labels" for a, _ in fed)
        assert server.control.counts().errors == 4
        # A query for it alone is refused by the reply budget, as before.
        assert ask(server, client, "/channels") == [
            (
                "/error",
                [
                    f"{size} bytes of replies, over the 160 allowed "
                    "(4/byte sent + 96); ask for fewer controls"
                ],
            )
        ]
    finally:
        server.stop()
        client.close()


def test_a_reply_the_encoder_cannot_take_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    host, server = make_server()
    monkeypatch.setattr(host, "track_info", lambda: ("song", "ready", 2**70))
    client = receiver()
    server.start()
    try:
        assert ask(server, client, "/track/progress") == [
            (
                "/error",
                [
                    "/track/progress: reply not sent: the integer "
                    "1180591620717411303424 does not fit in 64 bits"
                ],
            )
        ]
    finally:
        server.stop()
        client.close()


def test_names_are_sent_as_the_encoder_writes_them() -> None:
    names = ("caf\udce9", "bass", "voc\ud800", "other")
    _host, server = make_server(host=FakeHost(registry=Registry(names)))
    assert server.datagram(encode_message("/channels"), ("127.0.0.1", 9)) == [
        ("/channels", list(names))
    ]
    client = receiver()
    server.start()
    try:
        assert ask(server, client, "/channels") == [
            ("/channels", ["caf\\xe9", "bass", "voc\ufffd", "other"])
        ]
    finally:
        server.stop()
        client.close()
