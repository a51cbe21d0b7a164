"""The README's main job, `python examples/demo.py`, runs as the README says and leaves nothing running."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import python_command

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_the_readmes_demo_runs_keeps_two_workers_busy_and_shows_the_results(no_orphans: None) -> None:
    done = subprocess.run(python_command(DEMO), capture_output=True, text=True, timeout=120, cwd=DEMO.parent.parent)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ExitCode.TIMEOUT" in out  # it keeps the workers busy until its 5 s are up
    submitted = int(re.search(r"task-submitted\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert submitted > 20
    header = next(line for line in out.splitlines() if line.lstrip().startswith("call"))
    assert header.split() == ["call", "arg.x", "status", "result", "exception_type", "exception_message", "duration"]
    assert max(len(line) for line in out.splitlines()) < 160  # a table a terminal shows whole
