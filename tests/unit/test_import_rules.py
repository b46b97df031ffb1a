"""The house's arrows: what ships (the layer package ``myi`` and the handlers under ``functions/``)
imports no development or deploy code, and the domain imports no HTTP layer. Every import counts,
including one inside a function."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.paths import LAYER_SOURCE, REPO

PACKAGE = LAYER_SOURCE / "myi"
FUNCTIONS = REPO / "functions"
# The HTTP layer: the API's routers and the auth function's routes.
HTTP_LAYER = (PACKAGE / "api", PACKAGE / "auth" / "routes.py")
NOT_SHIPPED = ("infra", "devtools", "tests")
HTTP_MODULES = ("myi.api", "aws_lambda_powertools.event_handler")


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports, absolute, with its line; relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(LAYER_SOURCE).parent.parts if path.is_relative_to(LAYER_SOURCE) else ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from myi import api` imports myi.api
                yield node.lineno, f"{module}.{alias.name}"


def within(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


def shipped_files() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *FUNCTIONS.rglob("*.py")])


def wrong_arrows(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in files
        for line, module in imports_of(path)
        if within(module, forbidden)
    ]


def test_the_rules_see_every_shipped_module() -> None:
    files = shipped_files()
    assert len(files) > 50
    assert any(module == "myi.api.errors" for _, module in imports_of(PACKAGE / "api" / "app.py"))


def test_what_ships_imports_no_development_or_deploy_code() -> None:
    assert wrong_arrows(shipped_files(), NOT_SHIPPED) == []


def test_the_domain_imports_no_http_layer() -> None:
    domain = [
        path
        for path in PACKAGE.rglob("*.py")
        if not any(path == part or path.is_relative_to(part) for part in HTTP_LAYER)
    ]
    assert domain and wrong_arrows(domain, HTTP_MODULES) == []


@pytest.mark.parametrize(
    ("source", "forbidden", "expected"),
    [
        ("import devtools.local\n", NOT_SHIPPED, ["devtools.local"]),
        ("def f():\n    from infra import wiring\n", NOT_SHIPPED, ["infra", "infra.wiring"]),
        ("from myi import api\n", HTTP_MODULES, ["myi.api"]),
        (
            "from aws_lambda_powertools.event_handler import Response\n",
            HTTP_MODULES,
            ["aws_lambda_powertools.event_handler", "aws_lambda_powertools.event_handler.Response"],
        ),
        ("from myi import errors\nimport myi.apiary\n", HTTP_MODULES, []),
    ],
)
def test_a_wrong_arrow_is_found(
    tmp_path: Path, source: str, forbidden: tuple[str, ...], expected: list[str]
) -> None:
    path = tmp_path / "module.py"
    path.write_text(source)
    assert [module for _, module in imports_of(path) if within(module, forbidden)] == expected
