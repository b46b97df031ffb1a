"""``make layer``: the shared Lambda layer, built for the Lambda architecture without Docker.

The layer's runtime dependencies (``[project] dependencies`` of ``pyproject.toml``) are installed
from wheels for Linux ARM64 and the Lambda runtime's Python (``pip --platform ... --only-binary=:all:
--no-compile``) into ``layers/shared/build/python``, next to the ``myi`` package, copied whole: what only
developers use lives outside it, in ``devtools``. A stamp of the inputs skips the work
when nothing changed.

Every version the layer installs is pinned by ``layers/shared/requirements.lock`` (pip
constraints, the whole tree resolved for the Lambda platform), so two deploys of one commit ship
the same packages. ``make layer-lock`` resolves it anew from ``pyproject.toml`` (to take updates
or a changed requirement, on purpose, in a commit of its own); a lock that no longer satisfies
``pyproject.toml`` fails the build and the tests.

``PYTHON_VERSION`` is the one place that names the Lambda runtime: the CDK stack
(``infra/functions.py``) reads it from here. ``build()`` also takes another platform, Python version
and folder, which the layer smoke test (``tests/infra/test_layer_smoke.py``) uses to build the same
layer for the machine it runs on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devtools.paths import REPO

SOURCE = REPO / "layers" / "shared" / "python" / "myi"
BUILD = REPO / "layers" / "shared" / "build"
LOCK = REPO / "layers" / "shared" / "requirements.lock"
PLATFORM = "manylinux2014_aarch64"  # Lambda's arm64 (the stack's architecture)
PYTHON_VERSION = "3.13"  # the Lambda runtime python3.13


def dependencies() -> list[str]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def locked() -> dict[str, str]:
    """The lock's pins: canonical name -> version."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def unsatisfied() -> list[str]:
    """The requirements of ``pyproject.toml`` that the lock does not pin, or pins outside their
    range (empty when the lock fits)."""
    pins = locked()
    wrong = []
    for dep in dependencies():
        req = Requirement(dep)
        version = pins.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            wrong.append(f"{dep} (locked: {version or 'absent'})")
    return wrong


def _pip(platform: str, python_version: str, target: Path, *args: str) -> None:
    """``pip install`` of wheels for ``platform`` and ``python_version`` into ``target``."""
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
            str(target),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"
        sys.stderr.write("".join(line for line in done.stderr.splitlines(True) if noise not in line))
        raise SystemExit(f"pip could not install the layer's dependencies (exit {done.returncode})")


def lock() -> Path:
    """Resolve ``pyproject.toml``'s dependencies for the Lambda platform and write every package of
    the tree, pinned, to ``LOCK`` (``make layer-lock``)."""
    with tempfile.TemporaryDirectory(prefix="myi-lock-") as scratch:
        report = Path(scratch) / "report.json"
        _pip(
            PLATFORM,
            PYTHON_VERSION,
            Path(scratch) / "target",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            *dependencies(),
        )
        installs = json.loads(report.read_text())["install"]
    pins = sorted((canonicalize_name(i["metadata"]["name"]), i["metadata"]["version"]) for i in installs)
    header = (
        f"# The shared layer's packages, pinned (pip constraints), for {PLATFORM} and Python "
        f"{PYTHON_VERSION}.\n# Made by `make layer-lock` from pyproject.toml: change that, then run it.\n"
    )
    LOCK.write_text(header + "".join(f"{name}=={version}\n" for name, version in pins))
    return LOCK


def _stamp(deps: list[str], platform: str, python_version: str) -> str:
    digest = hashlib.sha256("\n".join([platform, python_version, *deps, LOCK.read_text()]).encode())
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(SOURCE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def build(target: Path = BUILD, *, platform: str = PLATFORM, python_version: str = PYTHON_VERSION) -> bool:
    """Build the layer into ``target`` (its ``python/`` folder is what Lambda puts on the path) for
    ``platform`` (a pip platform tag) and ``python_version``, every package at its locked version;
    returns False when it was already up to date."""
    deps = dependencies()
    if wrong := unsatisfied():
        raise SystemExit(
            f"layers/shared/requirements.lock does not fit pyproject.toml: {'; '.join(wrong)} "
            "(run make layer-lock)"
        )
    stamp = _stamp(deps, platform, python_version)
    stamp_file = target / ".stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return False
    if target.exists():
        shutil.rmtree(target)
    site = target / "python"
    site.mkdir(parents=True)
    _pip(platform, python_version, site, "--constraint", str(LOCK), *deps)
    shutil.copytree(
        SOURCE,
        site / "myi",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    stamp_file.write_text(stamp)
    return True


def main(argv: list[str]) -> int:
    if argv == ["--lock"]:
        print(f"locked: {lock().relative_to(REPO)}")
        return 0
    built = build()
    print(f"layer {'built' if built else 'up to date'}: {BUILD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
