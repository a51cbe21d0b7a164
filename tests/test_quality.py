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


LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _calls(text: str, name: str) -> list[str]:
    """The argument text of each `name(...)` call in `text` (parentheses balanced)."""
    calls = []
    start = text.find(name + "(")
    while start != -1:
        depth, i = 0, start + len(name)
        for i in range(start + len(name), len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
        calls.append(text[start + len(name) + 1 : i])
        start = text.find(name + "(", i)
    return calls


def test_every_local_cluster_we_show_listens_on_loopback_only() -> None:
    """A `LocalCluster(...)` in the docs, the tutorials, the README, the examples or a docstring binds its
    scheduler and its dashboard to loopback (dask's defaults listen on every interface); prose that
    names the option (`LocalCluster(host=...)`) is not a call, and the one example of opening a cluster
    to a network says so in a comment ("opened to a network on purpose")."""
    import json
    import re

    sources: dict[str, str] = {}
    for pattern in ("docs/**/*.md", "README.md", "examples/**/*.py", "byop_nb/**/*.py"):
        for path in ROOT.glob(pattern):
            sources[str(path.relative_to(ROOT))] = path.read_text()
    for path in ROOT.glob("notebooks/*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        sources[str(path.relative_to(ROOT))] = "\n".join("".join(cell["source"]) for cell in cells)
    open_ones, shown = [], 0
    for where, text in sources.items():
        for arguments in _calls(text, "LocalCluster"):
            if arguments.strip() in ("host=...", "...") or "opened to a network on purpose" in arguments:
                continue
            shown += 1
            host = re.search(r"""host\s*=\s*["']([^"']*)["']""", arguments)
            dashboard = re.search(r"""dashboard_address\s*=\s*["']([^"']*)["']""", arguments)
            if not (host and host.group(1) in LOOPBACK and dashboard and dashboard.group(1).startswith(LOOPBACK)):
                open_ones.append(f"{where}: LocalCluster({' '.join(arguments.split())})")
    assert shown >= 4, "the scan found fewer LocalCluster calls than the docs show: is it still looking?"
    assert open_ones == [], "not bound to loopback:\n" + "\n".join(open_ones)


def test_ci_finds_the_pythons_of_its_legs_and_names_what_it_accepts_when_one_is_missing(tmp_path: Path) -> None:
    import os

    find = str(ROOT / ".ci" / "find-python")
    for version in ("3.12", "3.13"):
        found = subprocess.run([find, version], capture_output=True, text=True, timeout=60)
        if found.returncode != 0:  # not on this machine: the message must say what to install
            assert f"no Python {version} found" in found.stderr and "accepted" in found.stderr
            continue
        interpreter = found.stdout.strip()
        ran = subprocess.run(
            [interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.stdout.strip() == version
    import shutil

    tools = tmp_path / "bin"  # a PATH with the script's tools and no Python
    tools.mkdir()
    for tool in ("ls", "sort", "tail"):
        (tools / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    nowhere = {**os.environ, "PYENV_ROOT": str(tmp_path), "PATH": str(tools)}
    bash = shutil.which("bash") or "/bin/bash"
    missing = subprocess.run([bash, find, "3.13"], capture_output=True, text=True, timeout=60, env=nowhere)
    assert missing.returncode == 1 and missing.stdout == ""
    assert f"looked in {tmp_path}/versions/3.13.*" in missing.stderr
    assert "accepted: a CPython 3.13.x from pyenv, or python3.13 on PATH" in missing.stderr
    other = subprocess.run([bash, find, "3.10"], capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and "accepted: 3.12, 3.13" in other.stderr
