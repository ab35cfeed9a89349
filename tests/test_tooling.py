"""The package stays lint-clean, formatted and type-checked."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "core", "daemon", "tests"],
    ],
)
def test_tool_is_clean(command: list[str]) -> None:
    pytest.importorskip(command[0])
    proc = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_code_and_docs_cite_only_files_in_the_repository() -> None:
    """Design documents outside the repository are not cited (their content is in docs/)."""
    offenders = []
    for path in ROOT.rglob("*"):
        if path.suffix not in (".py", ".md", ".toml") or ".venv" in path.parts:
            continue
        if "egg-info" in str(path) or path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if "DESIGN.md" in text or "../shared" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    for doc in ("docs/architecture.md", "docs/osc.md"):
        assert (ROOT / doc).is_file()
