"""What C libraries print on the process's stderr, kept out of the terminal.

ALSA's and JACK's libraries write straight to file descriptor 2 when PortAudio
or rtmidi probe for a device or a server that is not there (``ALSA lib
seq_hw.c:466:(snd_seq_hw_open) open /dev/snd/seq failed``, ``Cannot connect to
server socket``, ``jack server is not running or cannot be started``): noise
to a user who asked for a device list or started the daemon, and the answer
(none there) is said plainly anyway. :func:`captured` points descriptor 2 at a
temporary file around such a call and logs each line it got at debug level
(``stemdeck -v`` shows them).

Only around calls made while no other thread writes to stderr: anything
written meanwhile, from any thread, goes the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["captured"]


@contextlib.contextmanager
def captured(log: logging.Logger, source: str) -> Iterator[None]:
    """Send what is written to file descriptor 2 inside the block to ``log`` at debug
    level, one record per line, each prefixed with ``source`` (``"PortAudio"``).

    Where descriptor 2 cannot be redirected (closed, or no temporary file), the
    block runs with stderr as it is.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        sink = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield
        return
    with sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.debug("%s: %s", source, line.rstrip())
