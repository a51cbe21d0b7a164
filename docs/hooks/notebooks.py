"""MkDocs hook: publish the tutorials of notebooks/ as pages, without copying them into docs/.

nbval runs the notebooks where they are (notebooks/ at the repository's root);
this hook adds each of them to the site's files as `notebooks/<name>.ipynb`, so
mkdocs-jupyter renders it (without executing it) and the nav can list it. It
runs before mkdocs-jupyter's own `on_files`, which picks the notebooks up.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

NOTEBOOKS = Path(__file__).resolve().parent.parent.parent / "notebooks"


@event_priority(100)  # before the plugins' on_files (mkdocs-jupyter's runs at the default, 0)
def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        uri = f"notebooks/{path.name}"
        if files.get_file_from_path(uri) is None:
            files.append(
                File(
                    uri,
                    src_dir=str(NOTEBOOKS.parent),
                    dest_dir=config.site_dir,
                    use_directory_urls=config.use_directory_urls,
                )
            )
    return files
