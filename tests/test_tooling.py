"""The package stays lint-clean, formatted and type-checked."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["-m", "ruff", "check", "."],
        ["-m", "ruff", "format", "--check", "."],
        # mypy through the stemdeck package, as a developer runs it (see the script).
        ["scripts/typecheck.py"],
    ],
)
def test_tool_is_clean(command: list[str]) -> None:
    pytest.importorskip("ruff" if command[0] == "-m" else "mypy")
    proc = subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_never_takes_an_unresolved_stemdeck_import_for_any() -> None:
    """An import of stemdeck that mypy cannot follow fails the check instead of passing as Any.

    Only libraries without type information may be missing (pyproject's overrides).
    """
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert "ignore_missing_imports" not in config
    for override in config["overrides"]:
        if not override.get("ignore_missing_imports"):
            continue
        modules = override["module"]
        for pattern in [modules] if isinstance(modules, str) else modules:
            assert not pattern.startswith(("stemdeck", "*")), pattern


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


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md's layout stays the tree's: a new module is drawn there."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    layout = page.split("## Layout", 1)[1].split("\n## ", 1)[0]
    modules = [
        path.relative_to(ROOT)
        for folder in ("core", "daemon")
        for path in sorted((ROOT / folder).rglob("*"))
        if path.suffix in (".py", ".c") and path.name != "__init__.py"
    ]
    assert [str(m) for m in modules if m.name not in layout] == []
