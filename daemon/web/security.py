"""Who may use the web side: the token, the Host and Origin checks, the HTTP rate.

:class:`Guard` is the aiohttp middleware every request passes (``docs/web.md``):

- at most ``HTTP_PER_SECOND`` requests a second from one client address, so a
  flood cannot keep the web thread, and so the GIL, busy building replies;
- bound to loopback, the ``Host`` header must name loopback too, so a page on
  another site cannot reach the mixer by DNS rebinding;
- with a token, it must come with the request (``?token=``, the cookie set after
  the first visit, or ``Authorization: Bearer``).

:func:`origin_ok` is the WebSocket's own check: only the mixer's page may open one.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..osc.limits import TokenBucket
from ..osc.wire import text_bytes

__all__ = [
    "COOKIE",
    "HTTP_BURST",
    "HTTP_PER_SECOND",
    "LOOPBACK_NAMES",
    "Guard",
    "error_response",
    "host_name",
    "is_loopback",
    "json_response",
    "json_text",
    "origin_ok",
]

# HTTP requests per client address (the page's files, OSCQuery reads, WebSocket upgrades):
# a flood cannot keep the web thread, and so the GIL, busy building replies.
HTTP_BURST, HTTP_PER_SECOND = 200, 50.0
COOKIE = "stemdeck_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_LONE_SURROGATE = re.compile(r"\\ud[89a-f][0-9a-f]{2}")


def _text_only(data: Any) -> Any:
    """``data`` with every string as the OSC encoder sends it (``text_bytes``)."""
    if isinstance(data, str):
        return text_bytes(data).decode("utf-8")
    if isinstance(data, dict):
        return {_text_only(k): _text_only(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_text_only(v) for v in data]
    return data


def json_text(data: Any) -> str:
    """``data`` as strict JSON (no NaN). A string UTF-8 cannot hold (a lone surrogate:
    a file or stem name that was not UTF-8) is written as OSC writes it
    (:func:`~stemdeck.daemon.osc.wire.text_bytes`), never as a ``\\udXXX`` escape that
    a JSON reader may refuse.

    Raises
    ------
    ValueError
        A number JSON cannot hold (NaN, infinity), or a value that is not JSON.
    """
    try:
        text = json.dumps(data, allow_nan=False)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    if _LONE_SURROGATE.search(text):  # rare: redone with every string replaced
        text = json.dumps(_text_only(data), allow_nan=False)
    return text


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as strict JSON (:func:`json_text`); what JSON cannot hold is a 500
    saying so, never a traceback."""
    try:
        text = json_text(data)
    except ValueError as exc:
        text, status = json.dumps({"error": f"reply not sent: {exc}"}), 500
    return web.Response(text=text, status=status, content_type="application/json")


def error_response(status: int, text: str) -> web.Response:
    """``{"error": text}`` with ``status``."""
    return json_response({"error": text}, status)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# A Host header (RFC 9110 7.2, RFC 3986 3.2.2): a name or IPv4 address, or an IPv6
# address in brackets, then an optional port; nothing else (no user info, no path).
_HOST = re.compile(
    r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?))(?::[0-9]{1,5})?"
)


def host_name(host: str) -> str:
    """The name in a Host header: ``[::1]:8080`` and ``[::1]`` give ``::1``,
    ``localhost:8080`` gives ``localhost``; anything else gives ``""``: a header is a
    host name (letters, digits, dots and hyphens) or an IPv4 address, or an IPv6
    address in brackets, then at most a colon and a port of 1 to 5 digits.
    ``127.0.0.1:80@evil.example``, ``127.0.0.1:80:80``, ``::1``, ``[127.0.0.1]`` and
    ``[::1].evil.example`` are malformed."""
    found = _HOST.fullmatch(host.lower())
    if found is None:
        return ""
    if found["ipv6"] is None:
        return str(found["name"])
    try:
        return str(ipaddress.IPv6Address(found["ipv6"]))  # brackets hold IPv6 only
    except ValueError:
        return ""


def origin_ok(request: web.Request) -> bool:
    """A browser's WebSocket says which page opened it: only our own page may."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (an OSCQuery tool)
    parts = urlsplit(origin)
    return (
        parts.scheme in ("http", "https") and parts.netloc.lower() == (request.host or "").lower()
    )


class Guard:
    """The checks every HTTP request passes, as an aiohttp middleware.

    Parameters
    ----------
    token : str, optional
        Required on every request when set.
    loopback : bool
        The server is bound to a loopback address: the Host header must name one.

    ``refused`` counts the requests turned away (read from any thread).
    """

    def __init__(self, *, token: str | None, loopback: bool) -> None:
        self.token = token
        self.loopback = loopback
        self.refused = 0
        self._buckets = TokenBucket(HTTP_BURST, HTTP_PER_SECOND)  # by client address

    def token_ok(self, request: web.Request) -> tuple[bool, bool]:
        """(allowed, came in the query string)."""
        if self.token is None:
            return True, False
        given = request.query.get("token")
        if given is not None:
            return hmac.compare_digest(given.encode(), self.token.encode()), True
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            return hmac.compare_digest(cookie.encode(), self.token.encode()), False
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return hmac.compare_digest(auth[7:].encode(), self.token.encode()), False
        return False, False

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        now, address = time.monotonic(), request.remote or "unknown"
        if not self._buckets.available(address, now):
            self.refused += 1
            refusal = error_response(
                429,
                f"too many requests: at most {HTTP_PER_SECOND:g} a second from one address",
            )
            refusal.headers["Retry-After"] = "1"
            return refusal
        self._buckets.take(address, now)
        if self.loopback:
            if not is_loopback(host_name(request.host or "")):
                self.refused += 1
                return error_response(
                    403, f"Host {request.host!r} is not this machine: open http://127.0.0.1"
                )
        ok, in_query = self.token_ok(request)
        if not ok:
            self.refused += 1
            return error_response(
                401,
                "this mixer needs its token: open the URL stemdeck printed "
                "(http://HOST:PORT/?token=...)",
            )
        response = await handler(request)
        if not response.prepared:  # not a WebSocket
            # No other site may frame the page: framed, it is its own origin, so
            # clicks meant for that site would drive the mixer (clickjacking).
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
            if in_query and self.token is not None:
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        return response
