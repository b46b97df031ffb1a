"""The shared layer as Lambda loads it. The layer is built by the same builder from the same
requirements as ``make layer``, but for this machine (its manylinux wheels, the runtime's Python
version), then every handler of the wiring is imported, its module-level setup run, in a clean
interpreter of that version (``-I -S``: no site-packages, no environment, no user site) that sees
only the layer's ``python/`` folder and the function's own folder. A dependency missing from the
layer fails the import; a dev-only module (``devtools``, ``devtools.local``, ``devtools.fakespotify``,
``infra``, or any package of the ``infra`` and ``dev`` extras) in ``sys.modules`` afterwards fails
the test, and so does a module loaded from anywhere but those folders and the standard library."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from devtools import build_layer
from infra.wiring import WIRING, Function

PYTHON = build_layer.PYTHON_VERSION
HOST_PLATFORMS = {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64"}

# Runs in the clean interpreter: argv is the layer's python/ folder, the code folder (or "" for the
# package walk), and the JSON list of dev-only module names.
CHILD = r"""
import importlib, json, os, pkgutil, sys, sysconfig
layer, code, forbidden = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path[:0] = [code, layer] if code else [layer]  # Lambda's order: the function's code, then /opt/python
if code:
    module = importlib.import_module("handler")
    assert callable(getattr(module, "lambda_handler", None)), "handler.lambda_handler is missing"
else:
    import myi
    for info in pkgutil.walk_packages(myi.__path__, "myi."):
        importlib.import_module(info.name)
roots = tuple(
    os.path.join(os.path.realpath(p), "")
    for p in filter(None, (code, layer, sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")))
)
outside = sorted(
    f"{name} ({mod.__file__})"
    for name, mod in list(sys.modules.items())
    if getattr(mod, "__file__", None) and not os.path.realpath(mod.__file__).startswith(roots)
)
dev_only = sorted(n for n in sys.modules if any(n == f or n.startswith(f + ".") for f in forbidden))
print(json.dumps({"dev_only": dev_only, "outside": outside, "modules": len(sys.modules)}))
"""


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0]).lower()


def dev_only_modules() -> list[str]:
    """What only developers have: MYI's own dev-only packages and the top-level modules of every
    distribution of the ``infra`` and ``dev`` extras that is not also a layer dependency."""
    with (build_layer.REPO / "pyproject.toml").open("rb") as fh:
        extras = tomllib.load(fh)["project"]["optional-dependencies"]
    layer = {_name(r) for r in build_layer.dependencies()}
    dev = {_name(r) for group in ("infra", "dev") for r in extras[group]} - layer
    modules = {
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if module.isidentifier() and any(_name(owner) in dev for owner in owners)
    }
    assert {"moto", "pytest", "pgserver", "aws_cdk"} <= modules, modules  # the venv has the extras
    return sorted(modules | {"infra", "devtools"})


def runtime_python() -> str | None:
    """An interpreter of the Lambda runtime's Python version: on the path, or installed by pyenv."""
    candidates = [shutil.which(f"python{PYTHON}")]
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += [str(p) for p in sorted(root.glob(f"versions/{PYTHON}.*/bin/python{PYTHON}"))]
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run(
                [candidate, "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == PYTHON:  # a pyenv shim may exist but fail
            return candidate
    return None


@pytest.fixture(scope="session")
def interpreter() -> str:
    found = runtime_python()
    if found is None:
        pytest.skip(f"no Python {PYTHON} (the Lambda runtime's) on this machine to import the handlers with")
    return found


@pytest.fixture(scope="session")
def host_layer(interpreter: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layer built for this machine, once per session."""
    machine = platform.machine()
    if platform.system() != "Linux" or machine not in HOST_PLATFORMS:
        pytest.skip(f"manylinux wheels do not run on {platform.system()} {machine}")
    target = tmp_path_factory.mktemp("layer-smoke")
    build_layer.build(target, platform=HOST_PLATFORMS[machine], python_version=PYTHON)
    site = target / "python"
    assert (site / "myi").is_dir()
    return site


def run_clean(interpreter: str, layer: Path, code: Path | None, env: dict[str, str], cwd: Path) -> dict:
    done = subprocess.run(
        # -B: nothing is written into the function's folder or the layer
        [
            interpreter,
            "-I",
            "-S",
            "-B",
            "-c",
            CHILD,
            str(layer),
            str(code or ""),
            json.dumps(dev_only_modules()),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, f"{code or 'myi'} does not import from the layer alone:\n{done.stderr}"
    report: dict = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["dev_only"] == [], f"dev-only modules loaded: {report['dev_only']}"
    assert report["outside"] == [], f"modules from outside the layer and the code: {report['outside']}"
    return report


def lambda_env(fn: Function, home: Path) -> dict[str, str]:
    """What Lambda and the stack give a function at cold start, with values that reach nothing."""
    return {
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "smoke-test",
        "AWS_SECRET_ACCESS_KEY": "smoke-test",
        "AWS_LAMBDA_FUNCTION_NAME": f"myi-smoke-{fn.kebab}",  # turns tracing on, as in Lambda
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
        "STAGE": "smoke",
        "POWERTOOLS_SERVICE_NAME": "myi",
        "POWERTOOLS_METRICS_NAMESPACE": "MYI",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "API_URL": "https://api.invalid",
        "DB_HOST": "db.invalid",
        "DB_NAME": "myi",
        "DB_USER": "myi_app",
        "DB_IAM_AUTH": "true",
        "STATE_TABLE": "myi-smoke-state",
        "IMPORT_BUCKET": "myi-smoke-imports",
        "TOKEN_KEY_SECRET_ID": "myi-smoke-token-key",
    }


@pytest.mark.parametrize("fn", WIRING.functions, ids=lambda fn: fn.name)
def test_the_handler_imports_from_its_folder_and_the_layer_alone(
    fn: Function, interpreter: str, host_layer: Path, tmp_path: Path
) -> None:
    code = build_layer.REPO / fn.code_dir
    assert fn.handler == "handler.lambda_handler" and (code / "handler.py").is_file()
    report = run_clean(interpreter, host_layer, code, lambda_env(fn, tmp_path), tmp_path)
    assert report["modules"] > 100  # the handler really pulled in the package and its dependencies


def test_every_module_the_layer_ships_imports_from_the_layer_alone(
    interpreter: str, host_layer: Path, tmp_path: Path
) -> None:
    """Modules a handler reaches only at run time (lazy imports, Python migrations) too."""
    run_clean(interpreter, host_layer, None, lambda_env(WIRING.functions[0], tmp_path), tmp_path)


@pytest.mark.parametrize(
    ("extra", "failure"),
    [
        # not in the layer: the import fails
        ({}, "does not import from the layer alone"),
        # shipped beside the handler after all: the import works, the module check fails
        ({"moto.py": ""}, "dev-only modules loaded"),
    ],
    ids=["missing", "shipped"],
)
def test_the_smoke_test_fails_a_handler_that_reaches_a_dev_only_module(
    extra: dict[str, str], failure: str, interpreter: str, host_layer: Path, tmp_path: Path
) -> None:
    """The check itself, on a copy of a handler that imports a dev-only module."""
    fn = WIRING.functions[0]
    code = tmp_path / "code"
    shutil.copytree(build_layer.REPO / fn.code_dir, code)
    handler = code / "handler.py"
    dev_only = "moto" if extra else "devtools.fakespotify"
    handler.write_text(f"import {dev_only}  # noqa\n" + handler.read_text())
    for name, text in extra.items():
        (code / name).write_text(text)
    with pytest.raises(AssertionError, match=failure):
        run_clean(interpreter, host_layer, code, lambda_env(fn, tmp_path), tmp_path)


def test_the_layer_ships_exactly_the_locked_versions_and_the_lock_fits_the_requirements(
    host_layer: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert build_layer.unsatisfied() == []
    shipped = {}
    for meta in host_layer.glob("*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1)
            for line in meta.read_text().splitlines()
            if line.startswith(("Name: ", "Version: "))
        )
        shipped[canonicalize_name(fields["Name"])] = fields["Version"]
    assert shipped == build_layer.locked()
    # A requirement the lock no longer satisfies stops the build, before pip runs.
    pyproject = tmp_path / "pyproject.toml"
    text = (build_layer.REPO / "pyproject.toml").read_text().replace('"ijson>=3.3"', '"ijson>=99"')
    pyproject.write_text(text)
    monkeypatch.setattr(build_layer, "REPO", tmp_path)
    assert build_layer.unsatisfied() == ["ijson>=99 (locked: 3.6.0)"]
    with pytest.raises(SystemExit, match=r"does not fit pyproject\.toml"):
        build_layer.build(tmp_path / "never")


def test_the_layer_ships_the_rds_ca_bundle_where_myi_db_looks_for_it(
    interpreter: str, host_layer: Path, tmp_path: Path
) -> None:
    """The functions verify the database against ``myi/certs/rds-ca-bundle.pem`` (``myi.db``):
    the layer carries it, unchanged, and ``myi.db`` run from the layer alone finds it there."""
    source = build_layer.SOURCE / "certs" / "rds-ca-bundle.pem"
    shipped = host_layer / "myi" / "certs" / "rds-ca-bundle.pem"
    assert shipped.is_file(), "the layer has no RDS CA bundle"
    assert shipped.read_bytes() == source.read_bytes()
    done = subprocess.run(
        [
            interpreter,
            "-I",
            "-S",
            "-B",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import myi.db; print(myi.db.RDS_CA_BUNDLE)",
            str(host_layer),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=lambda_env(WIRING.functions[0], tmp_path),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == shipped.resolve()
