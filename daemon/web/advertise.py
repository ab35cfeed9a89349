"""``--advertise``: announce the OSCQuery server and the OSC port by zeroconf (mDNS).

OSC tools (Chataigne, ossia score, VDMX, TouchDesigner) browse ``_oscjson._tcp``
for OSCQuery servers and ``_osc._udp`` for OSC servers. Off by default: it sends
multicast to the LAN. Registration probes the network for a second or so, so it
runs in its own thread (``stemdeck-advertise``) and never delays the set.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

__all__ = ["Advertiser"]

log = logging.getLogger("stemdeck")


def _addresses(host: str) -> list[bytes]:
    if host in ("0.0.0.0", "::", ""):
        from .server import _lan_address

        host = _lan_address()
    try:
        return [socket.inet_aton(host)]
    except OSError:
        return []


class Advertiser:
    """Registers ``<name>._oscjson._tcp.local.`` (the HTTP port) and
    ``<name>._osc._udp.local.`` (the OSC port); :meth:`stop` withdraws them."""

    def __init__(
        self, *, http_port: int, osc_port: int, host: str, name: str | None = None
    ) -> None:
        self.name = name or f"stemdeck on {socket.gethostname()}"
        self.http_port, self.osc_port, self.host = http_port, osc_port, host
        self.zeroconf: Any = None
        self.services: list[Any] = []
        self._thread = threading.Thread(target=self._register, name="stemdeck-advertise")
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        if self.host in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "--advertise: the web server listens on %s only; other machines will see "
                "the announcement but cannot connect (use --http-host 0.0.0.0)",
                self.host,
            )
        self._thread.start()

    def _register(self) -> None:
        try:
            from zeroconf import ServiceInfo, Zeroconf

            addresses = _addresses(self.host)
            server = socket.gethostname().split(".")[0] + ".local."
            infos = [
                ServiceInfo(
                    f"{kind}.local.",
                    f"{self.name}.{kind}.local.",
                    addresses=addresses,
                    port=port,
                    server=server,
                    properties={"txtvers": "1"},
                )
                for kind, port in (("_oscjson._tcp", self.http_port), ("_osc._udp", self.osc_port))
            ]
            with self._lock:
                if self._stopped:
                    return
                self.zeroconf = Zeroconf()
            for info in infos:
                self.zeroconf.register_service(info)
                self.services.append(info)
            log.info(
                "advertised %r: _oscjson._tcp port %d, _osc._udp port %d",
                self.name,
                self.http_port,
                self.osc_port,
            )
        except Exception as exc:  # the set goes on without the announcement
            log.warning("--advertise failed: %s", exc)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        zc = self.zeroconf
        if zc is None:
            return
        try:
            for info in self.services:
                zc.unregister_service(info)
            zc.close()
        except Exception as exc:
            log.warning("--advertise: withdrawing the announcement failed: %s", exc)
