"""This machine as the LAN sees it: the address a server bound to every interface is
reached at (shown in the mixer's URL, announced by ``--advertise``)."""

from __future__ import annotations

import socket

__all__ = ["lan_address"]


def lan_address() -> str:
    """This machine's address on its LAN (a UDP socket's route choice; nothing is sent);
    the host name when there is no route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return socket.gethostname()
