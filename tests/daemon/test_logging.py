"""One logger per module, below ``stemdeck``, all printed by the CLI's one handler."""

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from stemdeck.daemon import realtime, supervisor
from stemdeck.daemon.audio import jack, recorder, sinks
from stemdeck.daemon.cli.parser import setup_logging
from stemdeck.daemon.web import advertise

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def package_logger() -> Iterator[logging.Logger]:
    """The ``stemdeck`` logger, restored after the test (``setup_logging`` changes it)."""
    root = logging.getLogger("stemdeck")
    saved = root.handlers[:], root.level, root.propagate
    yield root
    root.handlers[:], root.propagate = saved[0], saved[2]
    root.setLevel(saved[1])


def test_a_module_logger_prints_through_the_cli_handler(
    package_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(verbose=False)  # here, where stderr is the captured one
    modules = (sinks, jack, recorder, realtime, supervisor, advertise)
    for module in modules:
        assert module.log.name == module.__name__
        module.log.warning("from %s", module.__name__)
        module.log.debug("not without --verbose")
    assert capsys.readouterr().err == "".join(
        f"stemdeck: warning: from {module.__name__}\n" for module in modules
    )


def test_every_module_logs_under_its_own_name() -> None:
    """Only the CLI's setup names the package logger; modules use ``__name__``."""
    named = []
    for path in sorted([*ROOT.glob("core/**/*.py"), *ROOT.glob("daemon/**/*.py")]):
        for call in re.findall(r"getLogger\(([^)]*)\)", path.read_text(encoding="utf-8")):
            if call != "__name__":
                named.append((str(path.relative_to(ROOT)), call))
    assert named == [("daemon/cli/parser.py", '"stemdeck"')]
