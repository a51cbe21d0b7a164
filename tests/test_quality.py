"""The codebase stays clean: ruff (lint and format) and mypy, as configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_ruff_formatted() -> None:
    result = run("ruff", "format", "--check", "byop_nb", "tests", "benchmarks", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_on_the_package() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_test_commands_are_what_ci_runs() -> None:
    """The README's test commands and `.ci/run`'s legs stay in sync: the full suite's command, the core
    suite's marker expression, its start methods and its Pythons."""
    import re
    import tomllib

    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python -m pip install -q -e ".[all]" && python -m pytest -p no:cacheprovider' in readme
    assert 'python -m pip install -q -e ".[all]"' in ci and "python -m pytest -p no:cacheprovider\n" in ci
    expressions = set(re.findall(r'-m "(not kernel[^"]*)" tests', readme))
    (core,) = re.findall(r'core=\(-m "([^"]+)" tests\)', ci)
    assert expressions == {core}
    # The core suite leaves out exactly the tests of the markers that need more than Python.
    markers = {
        line.split(":")[0]
        for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    }
    assert set(re.findall(r"not (\w+)", core)) == markers
    for method in ("forkserver", "spawn"):
        assert f"BYOP_NB_TEST_START_METHOD={method} python -m pytest" in readme
        assert f"BYOP_NB_TEST_START_METHOD={method} python -m pytest" in ci
    for version in ("3.12", "3.13"):
        assert f"python{version}" in readme
    assert "for version in 3.12 3.13" in ci and ".[test,notebook,optuna,parquet]" in readme + ci
