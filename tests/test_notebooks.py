"""The tutorials and the docs: committed clean, runnable from Binder's spec, and the site builds strictly.

The notebooks themselves are executed by nbval, which `pytest` runs over
`notebooks/` (see `[tool.pytest.ini_options]` in pyproject.toml). These tests
pin down what nbval does not check:

* a committed notebook keeps outputs only in the cells nbval compares, so a
  diff of a notebook is a diff of its code and text;
* `binder/requirements.txt`, installed into a fresh virtual environment (no
  system site-packages), is enough to run a tutorial in a kernel of that
  environment: the Binder spec cannot rot unnoticed;
* every tutorial is a page of the docs, and `mkdocs build --strict` passes: the
  build executes the tutorials (docs/hooks/notebooks.py), so the pages show
  their outputs, and it fails when a tutorial raises or a tutorial page shows
  no image (tested on a small project of its own, where it must fail).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECK = "# NBVAL_CHECK_OUTPUT"
# Left out when the Binder test copies the repository: version control, caches, build output.
_NOT_COPIED = (".git", "build", "dist", "site", "*.egg-info", "__pycache__", ".*_cache", ".*_checkpoints")


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    notebook = nbformat.read(path, as_version=4)
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_there_are_tutorials() -> None:
    names = [path.name for path in NOTEBOOKS]
    for expected in ("01_scheduling_guide.ipynb", "02_events.ipynb", "03_limits.ipynb", "07_scaling_out.ipynb"):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_with_only_checked_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3", "use the python3 kernel"
    for index, cell in enumerate(_code_cells(path)):
        where = f"{path.name}, code cell {index}: {cell.source.splitlines()[:1]}"
        if CHECK in cell.source:
            # nbval compares only cells that were run when saved, and compares stderr too.
            assert cell.execution_count is not None, f"{where}: a checked cell must be saved executed"
            for output in cell.outputs:
                assert output.output_type != "error", f"{where}: saved with an error"
                assert not (output.output_type == "stream" and output.name == "stderr"), (
                    f"{where}: saved with stderr, which nbval would compare"
                )
        else:
            assert not cell.outputs, f"{where}: outputs must be cleared (or the cell marked {CHECK})"
            assert cell.execution_count is None, f"{where}: execution count must be cleared"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_a_page_of_the_docs(path: Path) -> None:
    mkdocs_yml = (ROOT / "mkdocs.yml").read_text()
    assert f"notebooks/{path.name}" in mkdocs_yml, f"add notebooks/{path.name} to the nav in mkdocs.yml"


@pytest.mark.kernel
@pytest.mark.timeout(900)
def test_docs_build_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict`: every page, cross-reference and docstring renders without a warning.

    The tutorials are executed for it: each tutorial page shows outputs and at least one image.
    """
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    assert (site / "index.html").exists()
    assert (site / "reference" / "scheduling" / "index.html").exists()
    rendered = (site / "notebooks" / "02_events" / "index.html").read_text()
    assert "EventManager" in rendered
    for path in NOTEBOOKS:
        page = (site / "notebooks" / path.stem / "index.html").read_text()
        assert "<img" in page, f"{path.name}: the page shows no image"
        # The download link gives the notebook as committed, not the executed copy.
        assert (site / "notebooks" / path.stem / path.name).read_bytes() == path.read_bytes()
    # Outputs of cells that are committed without them: a DataFrame and a plot.
    limits = (site / "notebooks" / "03_limits" / "index.html").read_text()
    assert "dataframe" in limits and "memory_limit" in limits and "data:image/png;base64," in limits
    # The Dashboard tutorial embeds the browser test's screenshot, at its URL in the site.
    dashboard = (site / "notebooks" / "06_dashboard" / "index.html").read_text()
    assert 'src="../../images/dashboard.png"' in dashboard
    assert (site / "images" / "dashboard.png").exists()


def _notebook(*cells: tuple[str, str]) -> str:
    notebook = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    for kind, source in cells:
        notebook.cells.append(
            nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        )
    return nbformat.writes(notebook)


def _docs_project(root: Path, notebooks: dict[str, str]) -> Path:
    """A site of its own, built with this repository's hook: mkdocs.yml, docs/ and notebooks/ under `root`."""
    (root / "docs" / "images").mkdir(parents=True)
    (root / "docs" / "index.md").write_text("# Tutorials\n")
    shutil.copy(ROOT / "docs" / "images" / "dashboard.png", root / "docs" / "images" / "picture.png")
    (root / "notebooks").mkdir()
    for name, text in notebooks.items():
        (root / "notebooks" / name).write_text(text)
    hook = json.dumps(str(ROOT / "docs" / "hooks" / "notebooks.py"))
    (root / "mkdocs.yml").write_text(
        "site_name: check\nstrict: true\n"
        f"hooks:\n  - {hook}\n"
        "plugins:\n  - mkdocs-jupyter:\n      execute: false\n      include_source: true\n      cache: false\n"
    )
    return root


def _build(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(project / "site")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
    )


PLOTTED = _notebook(("code", "import matplotlib.pyplot as plt\n\nplt.plot([1, 3, 2])\nplt.show()"))
PICTURED = _notebook(("markdown", "# Pictured\n\n![a picture](../docs/images/picture.png)"), ("code", "print(1)"))
PLAIN = _notebook(("markdown", "# Plain"), ("code", "print('text, no image')"))
BROKEN = _notebook(("markdown", "![gone](../docs/images/missing.png)"), ("code", "print(2)"))


@pytest.mark.kernel
def test_docs_build_fails_naming_each_tutorial_page_without_an_image(tmp_path: Path, no_orphans: None) -> None:
    notebooks = {"plotted.ipynb": PLOTTED, "pictured.ipynb": PICTURED, "plain.ipynb": PLAIN, "broken.ipynb": BROKEN}
    failed = _build(_docs_project(tmp_path / "failing", notebooks))
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output
    assert "tutorial pages without a (working) image:" in output, output
    problems = output.split("tutorial pages without a (working) image:", 1)[1]
    assert "notebooks/plain.ipynb: the rendered tutorial shows no image" in problems
    assert "notebooks/broken.ipynb: the image '../docs/images/missing.png' is not a file of the docs" in problems
    assert "notebooks/plotted.ipynb" not in problems and "notebooks/pictured.ipynb" not in problems

    # Without the two, the same build passes: what failed it was the check.
    project = _docs_project(tmp_path / "passing", {"plotted.ipynb": PLOTTED, "pictured.ipynb": PICTURED})
    passed = _build(project)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    site = project / "site" / "notebooks"
    assert 'src="data:image/png;base64,' in (site / "plotted" / "index.html").read_text()
    assert 'src="../../images/picture.png"' in (site / "pictured" / "index.html").read_text()
    assert (project / "site" / "images" / "picture.png").exists()
    assert (site / "plotted" / "plotted.ipynb").read_text() == PLOTTED, "the download is the committed notebook"


@pytest.mark.kernel
def test_docs_build_fails_naming_a_tutorial_that_raises(tmp_path: Path, no_orphans: None) -> None:
    raising = _notebook(("code", "print('fine so far')"), ("code", "raise RuntimeError('the tutorial broke')"))
    result = _build(_docs_project(tmp_path, {"plotted.ipynb": PLOTTED, "raising.ipynb": raising}))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "executing the tutorials for the docs failed" in output, output
    problems = output.split("executing the tutorials for the docs failed", 1)[1]
    assert "notebooks/raising.ipynb" in problems and "RuntimeError: the tutorial broke" in problems
    assert "notebooks/plotted.ipynb" not in problems


def _run(command: list[str], **kwargs: object) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.timeout(1800)
def test_binder_requirements_run_a_tutorial_in_a_fresh_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install binder/requirements.txt into a new venv and execute 02_events with that venv's kernel."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_USER")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # As repo2docker does: copy the repository, and install from its root, so "." in the
    # file is this package (built from the copy: the checkout is left untouched).
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    _run([str(python), "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"], cwd=repo, env=env)

    kernels = tmp_path / "jupyter"
    _run([str(python), "-m", "ipykernel", "install", "--prefix", str(kernels), "--name", "byop-binder"], env=env)
    spec_manager = KernelSpecManager(kernel_dirs=[str(kernels / "share" / "jupyter" / "kernels")])
    kernel_manager = KernelManager(kernel_name="byop-binder", kernel_spec_manager=spec_manager)

    for name in ("PYTHONPATH", "PYTHONHOME"):
        monkeypatch.delenv(name, raising=False)
    notebook = nbformat.read(ROOT / "notebooks" / "02_events.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys, byop_nb\nprint(sys.prefix)\nprint(byop_nb.__file__)"))
    client = NotebookClient(
        notebook,
        km=kernel_manager,
        timeout=300,
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    )
    client.execute()

    printed = notebook.cells[-1].outputs[0]["text"].split()
    prefix, package = Path(printed[0]).resolve(), Path(printed[1]).resolve()
    assert prefix == env_dir.resolve(), f"the notebook ran in {prefix}, not in the fresh venv"
    assert package.is_relative_to(env_dir.resolve()), f"byop_nb was imported from {package}, not from the venv"
