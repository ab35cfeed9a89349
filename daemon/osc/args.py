"""The checks OSC handlers make on their arguments; each error names the address."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stemdeck.core.errors import ParameterError

from .limits import Sender

__all__ = ["no_args", "number", "own_port", "scene_name", "string"]


def no_args(address: str, args: Sequence[Any]) -> None:
    """Raise unless ``args`` is empty."""
    if args:
        raise ParameterError(f"{address} takes no arguments, got {len(args)}")


def _port(address: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{address} port must be an int, got {value!r}")
    if not 1 <= value <= 65535:
        raise ParameterError(f"{address} port must be 1..65535, got {value}")
    return value


def own_port(address: str, value: Any, sender: Sender) -> int:
    """A port for /subscribe or /unsubscribe; a WebSocket sender (``"ws:<ip>"``) has
    no UDP port to name: values come back on its connection, keyed by its own port."""
    port = _port(address, value)
    if sender[0].startswith("ws:") and port != sender[1]:
        raise ParameterError(
            f"{address} over the WebSocket takes no port: values come back on this connection"
        )
    return port


def number(address: str, args: Sequence[Any]) -> float:
    """The one finite number in ``args``."""
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int | float):
        raise ParameterError(f"{address} takes a number, got {list(args)!r}")
    value = float(args[0])
    if value != value or value in (float("inf"), float("-inf")):
        raise ParameterError(f"{address} got {value}")
    return value


def string(address: str, args: Sequence[Any]) -> str:
    """The one string in ``args``."""
    if len(args) != 1 or not isinstance(args[0], str):
        raise ParameterError(f"{address} takes one string, got {list(args)!r}")
    return args[0]


def scene_name(address: str, args: Sequence[Any]) -> str:
    """The scene name ``args`` start with."""
    if not args or not isinstance(args[0], str):
        raise ParameterError(f"{address} takes a scene name (string)")
    return args[0]
