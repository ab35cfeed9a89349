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

:data:`COMMANDS` maps each command's name to its body (:func:`command` imports
it); ``python -m stemdeck.daemon.cli`` runs :func:`main` too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from stemdeck.core.errors import StemdeckError

__all__ = ["COMMANDS", "main"]

#: The body of each command, by the name the parser gives it (``args.command``), as
#: ``module:function`` of this package: a command imports what it needs (numpy, the
#: audio files, the daemon) when it runs, and so does :func:`main` the parser: the
#: separation's fork server, which imports the ``stemdeck`` command as its main
#: module, pays for this module alone (it imported every command's, 0.2 s).
COMMANDS: dict[str, str] = {
    "separate": "commands:cmd_separate",
    "serve": "commands:cmd_serve",
    "demo": "commands:cmd_serve",
    "devices": "commands:cmd_devices",
    "send": "send:cmd_send",
    "prep": "commands:cmd_prep",
    "plot": "commands:cmd_plot",
    "beats": "beats:cmd_beats",
}
#: Commands that start separation workers: the fork server starts with them.
_FORKING = frozenset({"serve", "demo"})


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The body of command ``name`` (:data:`COMMANDS`), its module imported."""
    module, function = COMMANDS[name].split(":")
    body: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f"{__name__}.{module}"), function
    )
    return body


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``stemdeck`` command; returns the exit status."""
    from .parser import (
        EXIT_ERROR,
        EXIT_INTERRUPTED,
        EXIT_USAGE,
        build_parser,
        send_positionals,
        setup_logging,
    )

    parser = build_parser()
    args = parser.parse_args(send_positionals(list(sys.argv[1:] if argv is None else argv)))
    setup_logging(args.verbose)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        body = command(args.command)
        if args.command in _FORKING:
            # The fork server's imports (0.4 s) run on the other core while the daemon
            # starts and decodes the track, so the first worker forks from it at once.
            # Not earlier: beside this process's own imports they slowed both (0.24 s
            # of imports took 0.33 s) and the first sound by 0.1 s.
            from ..forkserver import warm_up, worker_context

            warm_up(worker_context())
        code = int(body(args))
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
