"""The web side: browser mixer and OSCQuery over aiohttp, in its own thread."""
