"""The layering of ``../shared/DESIGN.md``, checked on the tree.

* ``lint-imports`` (import-linter, configured in ``pyproject.toml``) holds the
  module-level contracts; :func:`test_import_contracts_catch_a_violation` proves
  they bite by planting a violation in a copy of the tree.
* The benchmark suite, the cookbook and the integrations import only *public
  names* of the library: no private module on the way, and every name in its
  module's ``__all__`` (import-linter sees modules, not names, so this is an
  AST check).
"""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_USERS = ("dynasor_bench", "cookbook", "integrations")


def _library_imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """``(line, module, name)`` for each import of ``dynasor_agents`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "dynasor_agents":
                for alias in node.names:
                    yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "dynasor_agents":
                    yield node.lineno, alias.name, None


def _private_uses(path: Path, root: Path = ROOT) -> list[str]:
    """What ``path`` imports of the library that is not public (locations relative to ``root``)."""
    problems = []
    for line, module, name in _library_imports(path):
        where = f"{path.relative_to(root)}:{line}"
        private = [part for part in module.split(".") if part.startswith("_")]
        if private:
            problems.append(f"{where}: private module {module}")
            continue
        if name is None:
            continue
        exported = getattr(importlib.import_module(module), "__all__", ())
        if name not in exported:
            problems.append(f"{where}: {module}.{name} is not in {module}.__all__")
    return problems


def _sources() -> list[Path]:
    return sorted(p for d in PUBLIC_USERS for p in (ROOT / d).rglob("*.py"))


def test_bench_cookbook_and_integrations_use_public_names_only() -> None:
    assert _sources(), "no sources found: is the test looking at the right tree?"
    problems = [problem for path in _sources() for problem in _private_uses(path)]
    assert problems == []


def test_the_public_name_check_sees_a_private_import(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "from dynasor_agents.server._table import ProgramTable\n"
        "from dynasor_agents.program import _ERRORS\n"
        "from dynasor_agents import SelfConsistency\n"
    )
    found = _private_uses(tmp_path / "bad.py", tmp_path)
    assert found == [
        "bad.py:1: private module dynasor_agents.server._table",
        "bad.py:2: dynasor_agents.program._ERRORS is not in dynasor_agents.program.__all__",
    ]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (it is in the lint dependency group)")
    return subprocess.run(
        [exe, "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_import_contracts_hold_on_the_tree() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("dynasor_agents", "dynasor_bench"):
        shutil.copytree(ROOT / package, dest / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("dynasor_agents/certainty/_extract.py", "import dynasor_bench", "never imports the bench"),
        ("dynasor_agents/server/_table.py", "import dynasor_agents.strategies", "server half"),
        ("dynasor_agents/certainty/_entropy.py", "import httpx", "certainty/ is pure"),
        ("dynasor_agents/protocol.py", "import dynasor_agents.program", "imports pydantic only"),
        ("dynasor_bench/traces/_bank.py", "import dynasor_bench.sim", "Benchmark layers"),
    ],
)
def test_import_contracts_catch_a_violation(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    _copy_tree(tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert contract in result.stdout and "BROKEN" in result.stdout
