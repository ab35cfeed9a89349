"""The ``stemdeck`` command line (the console entry point is :func:`main`).

Every user error ends as one line on stderr (``stemdeck: error: ...``) and a
non-zero exit status; tracebacks are kept for real bugs.

Modules
-------
parser
    ``build_parser`` (every command and flag), ``send_positionals``, the exit
    statuses ``EXIT_ERROR``, ``EXIT_USAGE``, ``EXIT_INTERRUPTED``, and
    ``setup_logging`` (the ``stemdeck`` loggers, one line each on stderr).
commands
    ``cmd_separate``, ``cmd_prep``, ``cmd_plot``, ``cmd_serve`` (also ``demo``),
    ``cmd_devices``.
beats
    ``cmd_beats``: a track's beat grid, from the store or analysed, and its edits.
send
    ``cmd_send``: one OSC message, the replies decoded by ``daemon/osc/wire.py``.

:data:`COMMANDS` maps each command's name to its body; ``python -m
stemdeck.daemon.cli`` runs :func:`main` too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from stemdeck.core.errors import StemdeckError

from .beats import cmd_beats
from .commands import cmd_devices, cmd_plot, cmd_prep, cmd_separate, cmd_serve
from .parser import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    build_parser,
    send_positionals,
    setup_logging,
)
from .send import cmd_send

__all__ = ["COMMANDS", "main"]

#: The body of each command, by the name the parser gives it (``args.command``).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "separate": cmd_separate,
    "serve": cmd_serve,
    "demo": cmd_serve,
    "devices": cmd_devices,
    "send": cmd_send,
    "prep": cmd_prep,
    "plot": cmd_plot,
    "beats": cmd_beats,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``stemdeck`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(send_positionals(list(sys.argv[1:] if argv is None else argv)))
    setup_logging(args.verbose)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code = int(COMMANDS[args.command](args))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except StemdeckError as exc:
        print(f"stemdeck: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("stemdeck: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``stemdeck send ... | head``): nothing more to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
