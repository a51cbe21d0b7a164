"""MkDocs hook: publish the tutorials of notebooks/ as pages, executed, each showing at least one image.

The tutorials are committed without outputs (tests/test_notebooks.py keeps them
so, except the cells nbval compares), so a page rendered from the committed file
would show code and no results: no DataFrames, no plots. This hook therefore:

* **executes every notebook of notebooks/ during the build** (nbclient, a kernel
  of the interpreter running mkdocs, the notebook's own folder as working
  directory, as nbval and Jupyter run it; `CELL_TIMEOUT` seconds per cell; at
  most `PARALLEL` notebooks at once) into a temporary folder, and adds each
  executed copy to the site as `notebooks/<name>.ipynb`, which mkdocs-jupyter
  renders (with `execute: false`: it only converts). A cell that raises fails
  the build, naming the notebook and showing the cell and its traceback. Why
  execute here rather than commit executed notebooks: the committed notebooks
  stay clean (a diff of a notebook is a diff of its code), and the pages show
  what the code of this very commit prints and draws. Why not mkdocs-jupyter's
  own `execute: true`: it runs one notebook after the other, with no timeout,
  and keeps rendering a notebook whose cell raised unless `allow_errors` is set.
  Widget state is not stored: a static page cannot run widgets (mkdocs-jupyter
  would load a widget renderer from a CDN), so a widget output shows its text
  form, and the Dashboard tutorial embeds a screenshot of the real Dashboard;
* **rewrites images that a notebook's markdown embeds from the docs**
  (`![...](../docs/images/x.png)`, a path that works in Jupyter and on GitHub)
  into the site's URL of that file; an embedded image that is not a file of the
  docs fails the build;
* **fails the build when a rendered tutorial page has no image** (no plot
  output, no embedded image), naming every such page;
* keeps the page's download link (mkdocs-jupyter's `include_source`) pointing
  at the committed notebook, not at the executed copy.

The notebooks are found in `notebooks/` next to the mkdocs.yml being built.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from nbclient import NotebookClient

CELL_TIMEOUT = 300  # seconds, per cell: as pytest's `timeout`, which nbval applies to each cell
PARALLEL = 2  # notebooks executed at once: the CI machine has 2 cores, and the notebooks mostly wait

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of a kernel's traceback
_IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]*)(")', re.IGNORECASE)

# Per build: the temporary folder of executed copies, the tutorials' committed files by page
# URI, and the problems found in rendered pages (reported together once all pages are rendered).
_executed: tempfile.TemporaryDirectory[str] | None = None
_tutorials: dict[str, Path] = {}
_problems: list[str] = []


class _ThisInterpreter(KernelSpecManager):
    """Every kernel name means a kernel of the interpreter running mkdocs (as nbval's --nbval-current-env)."""

    def get_kernel_spec(self, kernel_name: str, *args: Any, **kwargs: Any) -> KernelSpec:
        from ipykernel.kernelspec import RESOURCES, get_kernel_dict

        return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())


async def _execute(path: Path, into: Path, slots: asyncio.Semaphore) -> None:
    async with slots:
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(
            notebook,
            km=AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_ThisInterpreter()),
            timeout=CELL_TIMEOUT,
            store_widget_state=False,
            resources={"metadata": {"path": str(path.parent)}},
        )
        await client.async_execute()
        nbformat.write(notebook, into / path.name)


async def _execute_all(paths: list[Path], into: Path) -> list[BaseException | None]:
    slots = asyncio.Semaphore(PARALLEL)
    return await asyncio.gather(*(_execute(path, into, slots) for path in paths), return_exceptions=True)


def _cleanup() -> None:
    global _executed
    if _executed is not None:
        _executed.cleanup()
        _executed = None


@event_priority(100)  # before the plugins' on_files (mkdocs-jupyter's runs at the default, 0)
def on_files(files: Files, config: MkDocsConfig) -> Files:
    global _executed
    _cleanup()
    _tutorials.clear()
    _problems.clear()
    notebooks = Path(config.config_file_path).resolve().parent / "notebooks"
    paths = sorted(notebooks.glob("*.ipynb"))
    _executed = tempfile.TemporaryDirectory(prefix="byop-nb-docs-")
    into = Path(_executed.name) / "notebooks"
    into.mkdir()
    outcomes = asyncio.run(_execute_all(paths, into))
    failed = [
        f"notebooks/{path.name}: {_ANSI.sub('', str(outcome))}"
        for path, outcome in zip(paths, outcomes, strict=True)
        if outcome is not None
    ]
    if failed:
        raise PluginError(
            "executing the tutorials for the docs failed (each must run top to bottom without an error):\n\n"
            + "\n\n".join(failed)
        )
    for path in paths:
        uri = f"notebooks/{path.name}"
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(
            File(uri, src_dir=str(into.parent), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls)
        )
        _tutorials[uri] = path
    return files


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    committed = _tutorials.get(page.file.src_uri)
    if committed is None:
        return html
    docs_dir = Path(config.docs_dir).resolve()
    shown: list[str] = []

    def rewrite(match: re.Match[str]) -> str:
        src = match.group(2)
        if src.startswith("data:image/") or re.match(r"^[a-z][a-z0-9+.-]*:", src, re.IGNORECASE):
            shown.append(src[:40])
            return match.group(0)
        # A path in the notebook's markdown is relative to the notebook, in notebooks/.
        target = (committed.parent / src).resolve()
        in_docs = target.relative_to(docs_dir).as_posix() if target.is_relative_to(docs_dir) else None
        file = files.get_file_from_path(in_docs) if in_docs is not None else None
        if file is None:
            _problems.append(f"{page.file.src_uri}: the image {src!r} is not a file of the docs ({docs_dir})")
            return match.group(0)
        shown.append(src)
        return match.group(1) + file.url_relative_to(page.file) + match.group(3)

    html = _IMG_SRC.sub(rewrite, html)
    if not shown:
        _problems.append(
            f"{page.file.src_uri}: the rendered tutorial shows no image; add a plot, or embed an image of"
            " the docs in a markdown cell (e.g. ![...](../docs/images/<name>.png))"
        )
    return html


def on_env(env: Any, config: MkDocsConfig, files: Files) -> Any:
    # Runs once every page has been rendered: all the problems at once, not the first one.
    if _problems:
        raise PluginError("tutorial pages without a (working) image:\n" + "\n".join(_problems))
    return env


@event_priority(-100)  # after mkdocs-jupyter's on_post_page, which copies the executed notebook
def on_post_page(output: str, page: Page, config: MkDocsConfig) -> str:
    committed = _tutorials.get(page.file.src_uri)
    if committed is not None and page.file.abs_dest_path is not None:
        download = Path(page.file.abs_dest_path).parent / committed.name
        if download.exists():
            shutil.copyfile(committed, download)
    return output


def on_post_build(config: MkDocsConfig) -> None:
    _cleanup()


def on_build_error(error: Exception) -> None:
    _cleanup()
