"""``--advertise``: announce the OSCQuery server and the OSC port by zeroconf (mDNS).

OSC tools (Chataigne, ossia score, VDMX, TouchDesigner) browse ``_oscjson._tcp``
for OSCQuery servers and ``_osc._udp`` for OSC servers. Off by default: it sends
multicast to the LAN. Registration probes the network for a second or so, so it
runs in its own thread (``stemdeck-advertise``) and never delays the set. The daemon
imports this module (and zeroconf with it) only with ``--advertise``.
"""

from __future__ import annotations

import logging
import socket
import threading

import zeroconf

from .lan import lan_address

__all__ = ["Advertiser"]

log = logging.getLogger(__name__)


def _addresses(host: str) -> list[bytes]:
    if host in ("0.0.0.0", "::", ""):
        host = lan_address()
    try:
        return [socket.inet_aton(host)]
    except OSError:
        return []


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


class Advertiser:
    """Registers ``<name>._oscjson._tcp.local.`` (the HTTP port) and
    ``<name>._osc._udp.local.`` (the OSC port); :meth:`stop` withdraws them.

    Each service is announced at the address its server listens on. An OSC server
    on the loopback only (the default ``--osc-host``) is not announced: a tool on
    another machine would send to a port that cannot hear it. Such tools reach the
    mixer through the OSCQuery WebSocket instead (binary OSC both ways)."""

    def __init__(
        self,
        *,
        http_port: int,
        osc_port: int,
        host: str,
        osc_host: str = "0.0.0.0",
        name: str | None = None,
    ) -> None:
        self.name = name or f"stemdeck on {socket.gethostname()}"
        self.http_port, self.osc_port, self.host = http_port, osc_port, host
        self.osc_host = osc_host
        self.zeroconf: zeroconf.Zeroconf | None = None
        self.services: list[zeroconf.ServiceInfo] = []
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
            server = socket.gethostname().split(".")[0] + ".local."
            services = [("_oscjson._tcp", self.host, self.http_port)]
            if _loopback(self.osc_host):
                log.info(
                    "--advertise: OSC listens on %s only, so _osc._udp is not announced; "
                    "other machines use the WebSocket (or start with --osc-host 0.0.0.0 "
                    "--osc-allow ADDRESSES)",
                    self.osc_host,
                )
            else:
                services.append(("_osc._udp", self.osc_host, self.osc_port))
            infos = [
                zeroconf.ServiceInfo(
                    f"{kind}.local.",
                    f"{self.name}.{kind}.local.",
                    addresses=_addresses(host),
                    port=port,
                    server=server,
                    properties={"txtvers": "1"},
                )
                for kind, host, port in services
            ]
            with self._lock:
                if self._stopped:
                    return
                self.zeroconf = zeroconf.Zeroconf()
            for info in infos:
                self.zeroconf.register_service(info)
                self.services.append(info)
            log.info(
                "advertised %r: %s",
                self.name,
                ", ".join(f"{kind} port {port}" for kind, _host, port in services),
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
