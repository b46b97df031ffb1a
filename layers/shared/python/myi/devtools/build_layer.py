"""``make layer``: the shared Lambda layer, built for the Lambda architecture without Docker.

The layer's runtime dependencies (``[project] dependencies`` of ``pyproject.toml``) are installed
from wheels for Linux ARM64 and the Lambda runtime's Python (``pip --platform ... --only-binary=:all:
--no-compile``) into ``layers/shared/build/python``, next to the ``myi`` package without what only
developers use (``devtools``, ``local``, ``fakespotify``). A stamp of the inputs skips the work
when nothing changed.

``PYTHON_VERSION`` is the one place that names the Lambda runtime: the CDK stack
(``infra/functions.py``) reads it from here. ``build()`` also takes another platform, Python version
and folder, which the layer smoke test (``tests/infra/test_layer_smoke.py``) uses to build the same
layer for the machine it runs on.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[5]
SOURCE = REPO / "layers" / "shared" / "python" / "myi"
BUILD = REPO / "layers" / "shared" / "build"
PLATFORM = "manylinux2014_aarch64"  # Lambda's arm64 (the stack's architecture)
PYTHON_VERSION = "3.13"  # the Lambda runtime python3.13
DEV_ONLY = ("devtools", "local", "fakespotify")


def dependencies() -> list[str]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def _stamp(deps: list[str], platform: str, python_version: str) -> str:
    digest = hashlib.sha256("\n".join([platform, python_version, *deps]).encode())
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(SOURCE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def build(target: Path = BUILD, *, platform: str = PLATFORM, python_version: str = PYTHON_VERSION) -> bool:
    """Build the layer into ``target`` (its ``python/`` folder is what Lambda puts on the path) for
    ``platform`` (a pip platform tag) and ``python_version``; returns False when it was already up
    to date."""
    deps = dependencies()
    stamp = _stamp(deps, platform, python_version)
    stamp_file = target / ".stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return False
    if target.exists():
        shutil.rmtree(target)
    site = target / "python"
    site.mkdir(parents=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--platform",
            platform,
            "--implementation",
            "cp",
            "--python-version",
            python_version,
            "--only-binary=:all:",
            "--no-compile",
            "--target",
            str(site),
            *deps,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"
        sys.stderr.write("".join(line for line in done.stderr.splitlines(True) if noise not in line))
        raise SystemExit(f"pip could not install the layer's dependencies (exit {done.returncode})")
    shutil.copytree(
        SOURCE,
        site / "myi",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *DEV_ONLY),
    )
    stamp_file.write_text(stamp)
    return True


def main() -> int:
    built = build()
    print(f"layer {'built' if built else 'up to date'}: {BUILD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
