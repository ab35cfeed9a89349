"""The web side: the browser mixer, OSCQuery and binary OSC over aiohttp, in its own thread.

Modules
-------
server
    :class:`~.server.WebApp` (the aiohttp application: the page, OSCQuery over
    HTTP) and :class:`~.server.WebServer` (it, served from the ``stemdeck-web`` thread).
gate
    ``Gate``: the accept loop, with the connection limits, the idle timeout and the
    descriptors kept free; ``quiet_exceptions`` and ``QuietLog``, logs that never
    flood.
security
    ``Guard`` (rate per address, Host and token checks as a middleware),
    ``origin_ok``, ``is_loopback``, ``host_name``, ``json_response``, ``json_text``,
    ``error_response``.
websocket
    ``WebSockets`` (connections, binary OSC, LISTEN/IGNORE, the feedback fan-out)
    and ``Connection``.
namespace
    The OSCQuery namespace built from the live state.
advertise
    ``Advertiser``: zeroconf announcements (``--advertise``).
"""
