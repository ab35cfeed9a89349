"""Writing to a :class:`Registry` in a test the way the daemon does: one transaction,
committed through a ``post`` (by default an engine that takes everything)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stemdeck.core.control.registry import Registry, Transaction
from stemdeck.core.mixer.commands import Batch, Command


def commit(
    registry: Registry,
    stage: Callable[[Transaction], object],
    post: Callable[[Command], bool] | None = None,
) -> list[Command]:
    """Stage with ``stage(txn)``, commit; the commands posted (a ``Batch`` unpacked).

    Raises AssertionError if ``post`` refuses the commit.
    """
    posted: list[Command] = []

    def record(command: Command) -> bool:
        ok = post(command) if post is not None else True
        if ok:
            posted.extend(command.commands if isinstance(command, Batch) else [command])
        return ok

    with registry.transaction() as txn:
        stage(txn)
        assert txn.commit(record), "the engine refused the commit"
    return posted


def set_value(
    registry: Registry,
    address: str,
    args: Sequence[object],
    post: Callable[[Command], bool] | None = None,
) -> list[Command]:
    """``address`` = ``args``, committed (an OSC message's path); the commands posted."""
    return commit(registry, lambda txn: txn.set(address, args), post)
