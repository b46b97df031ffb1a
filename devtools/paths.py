"""Where the repository and its neighbours are, found by the repository's own marker files rather
than by counting folders up from a module."""

from __future__ import annotations

from pathlib import Path


def _repository() -> Path:
    here = Path(__file__).resolve()
    for folder in here.parents:
        if (folder / "pyproject.toml").is_file() and (folder / "layers" / "shared" / "python").is_dir():
            return folder
    raise RuntimeError(f"no MYI repository (pyproject.toml beside layers/shared/python) above {here}")


REPO = _repository()
LAYER_SOURCE = REPO / "layers" / "shared" / "python"
# The shared material beside the repository: the real downloads people published.
REAL_EXPORTS = REPO.parent / "shared" / "real-exports"
