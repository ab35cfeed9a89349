"""``stemdeck send``: one OSC message to a daemon, and its replies printed.

The replies are decoded by the daemon's own strict OSC 1.0 decoder
(``daemon/osc/wire.py``): a message or a bundle of messages, with exactly the
argument types the daemon sends (``encode_message``: T/F, i, h, f, d, s, b, N).
Each message is one line on stdout, the address and then its arguments (strings
quoted). A reply that is not well-formed, or holds an argument of another type,
is one error line and exit status 1.
"""

from __future__ import annotations

import argparse
import socket
import time

from stemdeck.core.errors import ParameterError
from stemdeck.daemon.osc.wire import Message, OscDecodeError, decode, encode_message, iter_messages

__all__ = ["LOAD_TIMEOUT_S", "cmd_send", "osc_value", "reply_line"]

#: How long ``send`` waits for the reply to ``/track/load`` unless ``--timeout`` says.
LOAD_TIMEOUT_S = 60.0

#: Python types of the arguments the daemon sends (bool is an int).
_SENT = (str, int, float, bytes, type(None))


def osc_value(text: str) -> object:
    """A command-line argument as an OSC value: T/F, an int, a float, else a string."""
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def reply_line(message: Message) -> str:
    """The line printed for one reply: its address, then each argument.

    Raises
    ------
    ParameterError
        An argument of a type the daemon never sends (``c``, ``r``, ``m``, ``t``, ``I``).
    """
    for k, value in enumerate(message.args, 1):
        if not isinstance(value, _SENT):
            raise ParameterError(
                f"argument {k} of {message.address} is an OSC {type(value).__name__}, "
                "which stemdeck never sends"
            )
    return " ".join(
        [message.address, *(repr(a) if isinstance(a, str) else str(a) for a in message.args)]
    )


def _peer(sender: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sender[0], sender[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cmd_send(args: argparse.Namespace) -> int:
    host, _, port_text = args.target.rpartition(":")
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ParameterError(f"target must be [HOST:]PORT, got {args.target!r}") from None
    if not args.address.startswith("/"):
        raise ParameterError(f"an OSC address starts with '/', got {args.address!r}")
    values = [osc_value(a) for a in args.args]
    timeout = args.timeout
    if timeout is None:  # a load is answered when it ends: reading a long file takes a while
        timeout = LOAD_TIMEOUT_S if args.address == "/track/load" else 1.0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(encode_message(args.address, values), (host, port))
        except OSError as exc:
            raise ParameterError(f"cannot send to {host}:{port}: {exc.strerror}") from None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)  # the deadline shrinks once replies come
            try:
                data, sender = sock.recvfrom(65536)
            except (TimeoutError, ConnectionRefusedError):
                break
            try:  # the whole datagram first: nothing of a malformed one is printed
                lines = [(m.address, reply_line(m)) for m in iter_messages(decode(data))]
            except (OscDecodeError, ParameterError) as exc:
                raise ParameterError(f"malformed reply from {_peer(sender)}: {exc}") from None
            for address, line in lines:
                print(line)
                if address == "/state/end":
                    return 0
                if args.address != "/state":
                    deadline = min(deadline, time.monotonic() + 0.1)
    return 0
