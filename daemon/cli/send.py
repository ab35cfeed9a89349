"""``stemdeck send``: one OSC message to a daemon, and its replies printed.

The message is followed by a ``/ping``: the daemon answers datagrams in order,
so its ``/pong`` says the message is done (a control that is set answers
nothing). The exit status is 0 once the daemon answered without ``/error``; 1
with one line on stderr when an ``/error`` came back, or nothing answered
within ``--timeout`` (nothing listens on the port, or no daemon there).

The replies are decoded by the daemon's own strict OSC 1.0 decoder
(``daemon/osc/wire.py``): a message or a bundle of messages, with exactly the
argument types the daemon sends (``encode_message``: T/F, i, h, f, d, s, b, N).
Each message but ``/pong`` and ``/error`` is one line on stdout, the address and
then its arguments (strings quoted). A reply that is not well-formed, or holds
an argument of another type, is one error line and exit status 1.
"""

from __future__ import annotations

import argparse
import math
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
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ParameterError(f"target must be [HOST:]PORT, got {args.target!r}") from None
    if not args.address.startswith("/"):
        raise ParameterError(f"an OSC address starts with '/', got {args.address!r}")
    timeout = args.timeout
    if timeout is None:  # a load is answered when it ends: reading a long file takes a while
        timeout = LOAD_TIMEOUT_S if args.address == "/track/load" else 1.0
    if not (math.isfinite(timeout) and timeout > 0):
        raise ParameterError(f"--timeout must be a positive number of seconds, got {timeout}")
    values = [osc_value(a) for a in args.args]
    target = _peer((host, port))
    # The daemon answers a control it sets with nothing; a /ping after the message is
    # answered once the message is done (the daemon answers datagrams in order), so
    # silence means nothing listens. /track/load is answered when the load ends, after
    # that /pong: its own reply (or /error) is what to wait for.
    marker = args.address not in ("/ping", "/track/load")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            # Connected: a closed port's ICMP answer comes back as ConnectionRefusedError.
            sock.connect((host, port))
            sock.send(encode_message(args.address, values))
            if marker:
                sock.send(encode_message("/ping", []))
        except ConnectionRefusedError:
            raise ParameterError(_nothing_listens(target, port)) from None
        except OSError as exc:
            raise ParameterError(f"cannot send to {target}: {exc.strerror}") from None
        answered, error = _replies(sock, args.address, marker, timeout)
    if error is not None:
        raise ParameterError(f"/error from {target}: {error}")
    if answered is None:
        raise ParameterError(_nothing_listens(target, port))
    if not answered:
        raise ParameterError(
            f"no reply from {target} within {timeout:g} s "
            "(is stemdeck serve running there? a longer --timeout waits more)"
        )
    return 0


def _nothing_listens(target: str, port: int) -> str:
    return (
        f"no reply from {target}: nothing listens on that port "
        f"(is stemdeck serve running with --osc-port {port}?)"
    )


def _replies(
    sock: socket.socket, address: str, marker: bool, timeout: float
) -> tuple[bool | None, str | None]:
    """Print the replies to ``address`` until the daemon's ``/pong`` (``marker``), the
    end of a ``/state``, or ``timeout``; (whether anything answered, None when the
    port is closed; the first ``/error``'s text)."""
    answered = False
    error: str | None = None
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, sender = sock.recvfrom(65536)
        except TimeoutError:
            break
        except ConnectionRefusedError:
            return (answered or None), error
        try:  # the whole datagram first: nothing of a malformed one is printed
            messages = list(iter_messages(decode(data)))
            lines = [reply_line(m) for m in messages]
        except (OscDecodeError, ParameterError) as exc:
            raise ParameterError(f"malformed reply from {_peer(sender)}: {exc}") from None
        answered = True
        for message, line in zip(messages, lines, strict=True):
            if marker and message.address == "/pong" and not message.args:
                return True, error
            if message.address == "/error":
                if error is None:
                    error = " ".join(str(a) for a in message.args)
                continue
            print(line)
            if message.address == "/state/end":
                return True, error
        if address != "/state":  # a peer that is not stemdeck sends no /pong
            deadline = min(deadline, time.monotonic() + 0.1)
    return answered, error
