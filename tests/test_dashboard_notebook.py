"""The Dashboard in a notebook run by a real kernel (nbclient), read as the saved .ipynb holds it.

One notebook is executed: an Optuna study on SQLite that an earlier process filled (its best is the
study's best), a Trial.Task tuned on it in the kernel with a Dashboard, callbacks that print, a run
started in the background and awaited in a later cell, a second dashboard made after the run. Each
test reads one behaviour from the executed notebook: the saved outputs (what GitHub, nbviewer and a
reopened notebook show without the widgets' state) and what cells printed.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.kernel

EARLIER_KERNEL = """
import optuna, sys
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(storage=sys.argv[1], study_name="digits", direction="maximize")
study.enqueue_trial({"x": 0.5})
study.optimize(lambda trial: 0.9466 + 0 * trial.suggest_float("x", 0.0, 1.0), n_trials=1)
"""

CELLS = [
    # 0: the experiment: an accuracy, maximized, always below the study's best of an earlier kernel
    """
import json, time
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
from byop_nb.optimization import OptunaOptimizer, Trial
from byop_nb.scheduling import Scheduler
from byop_nb.notebook import Dashboard

def evaluate(trial):
    time.sleep(0.05)
    return trial.success(accuracy=0.5 + 0.4 * trial.config["x"])

optimizer = OptunaOptimizer({"x": (0.0, 0.5)}, storage=STORAGE, study_name="digits",
                            direction="maximize", metric="accuracy")
scheduler = Scheduler.with_threads(2)
task = Trial.Task(evaluate, scheduler, call_limit=12)

@scheduler.on_start(repeat=2)
def launch():
    task(optimizer.ask())

@task.on_report
def tell(report):
    optimizer.tell(report)
    print(f"told {report.trial.name}: {report.results}")
    task(optimizer.ask())

scheduler.on_finished(optimizer.fail_pending)
""",
    # 1: the dashboard, shown
    """
dashboard = Dashboard(scheduler, task, optimizer=optimizer, interval=0.1)
dashboard
""",
    # 2: a background run, awaited
    """
handle = dashboard.start()
exit_code = await handle
print(exit_code)
""",
    # 3: what the dashboard says, and a second dashboard made after the run
    """
import re
best = re.sub("<[^>]+>", "", dashboard.best_html.value)
later = Dashboard(scheduler)
print(json.dumps({
    "best": best,
    "this_run_best": max(r["result.accuracy"] for r in task.history.stored_rows(0, len(task.history))),
    "study_best": optimizer.study.best_value,
    "later_title": later.log_pane.titles[0],
    "later_told": later.log_text.count("told "),
    "first_told": dashboard.log_text.count("told "),
}))
""",
]


def _execute(tmp_path: Path) -> dict[str, Any]:
    import nbformat
    from nbclient import NotebookClient

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    subprocess.run([sys.executable, "-c", EARLIER_KERNEL, storage], check=True, timeout=120)
    cells = [
        nbformat.v4.new_code_cell(CELLS[0].replace("STORAGE", repr(storage), 1)),
        *map(nbformat.v4.new_code_cell, CELLS[1:]),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(notebook, str(path))
    saved: dict[str, Any] = json.loads(path.read_text())
    return saved


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield _execute(tmp_path_factory.mktemp("dashboard-notebook"))


def _printed(cell: dict[str, Any]) -> str:
    return "".join(
        "".join(o.get("text", "")) for o in cell["outputs"] if o["output_type"] == "stream" and o["name"] == "stdout"
    )


def test_the_saved_notebook_keeps_a_static_picture_of_the_dashboard_after_the_run(saved, no_orphans):
    outputs = saved["cells"][1]["outputs"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pictures, [sorted(o.get("data", {})) for o in outputs]
    data = pictures[-1]["data"]
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG")
    shown = "".join(data["text/html"])  # saved as a list of lines
    assert "byop-snapshot" in shown and "data:image/png;base64," in shown
    # the picture is of the ended run (updated when it ended), not of the idle dashboard first shown
    assert "exit code: exhausted" in shown and "byop-state-finished" in shown
    assert "12/12 trials" in shown and "best (max)" in shown


def test_with_an_optimizer_the_best_is_the_studys_over_earlier_kernels_in_its_direction(saved):
    said = json.loads(_printed(saved["cells"][3]).strip().splitlines()[-1])
    assert said["study_best"] == pytest.approx(0.9466) and said["this_run_best"] < 0.91
    assert said["best"] == "accuracy: best (max) 0.9466 in the study"


def test_a_dashboard_made_after_the_run_shows_the_log_the_first_one_collected(saved):
    said = json.loads(_printed(saved["cells"][3]).strip().splitlines()[-1])
    assert said["first_told"] == 12
    assert said["later_told"] == 12 and said["later_title"] != "log: empty"


DYING = [
    """
import asyncio, time
from byop_nb.scheduling import Scheduler, Task
from byop_nb.notebook import Dashboard

def pause(x):
    time.sleep(0.1)
    return {"loss": x}

scheduler = Scheduler.with_threads(1)
task = Task(pause, scheduler, call_limit=200)
scheduler.on_start(lambda: task.map(range(200), in_flight=1))
dashboard = Dashboard(scheduler, task, interval=0.2)
dashboard
""",
    # (one cell: nbclient keeps only the messages of the cell it runs; JupyterLab applies a picture's
    # update whenever it comes, see test_browser_e2e)
    "handle = dashboard.start()\nawait asyncio.sleep(6.5)",
    "import os; os._exit(1)  # the kernel dies mid-run",
]


def test_a_kernel_that_dies_mid_run_leaves_a_picture_of_the_run_at_most_seconds_old(tmp_path, no_orphans):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in DYING])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    with pytest.raises(DeadKernelError):
        NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    pictures = [o["data"] for o in notebook.cells[0].outputs if "image/png" in o.get("data", {})]
    assert pictures
    shown = "".join(pictures[-1]["text/html"])
    assert "byop-state-running" in shown, shown[:500]
    ended = int(re.search(r"(\d+)/200 calls", shown).group(1))  # type: ignore[union-attr]
    assert ended >= 10, shown[:500]
