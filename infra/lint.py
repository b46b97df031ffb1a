"""CloudFormation's own rules (cfn-lint) on the synthesised templates: ``python -m infra.lint [path ...]``.

A path is a template or a cloud assembly (``cdk.out``: every stack its manifest lists). Every error
fails, and so does every warning whose rule ``infra/cfn-lint-ignores.toml`` does not list with its
reason. ``make synth`` runs it on what it synthesised; ``tests/infra`` on both profiles.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cfnlint.api import ManualArgs, lint_file

IGNORES = Path(__file__).resolve().parent / "cfn-lint-ignores.toml"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    template: str
    line: int

    @property
    def error(self) -> bool:
        return not self.rule.startswith(("W", "I"))

    def __str__(self) -> str:
        return f"{self.template}:{self.line}: {self.rule} {self.message}"


def accepted(path: Path = IGNORES) -> dict[str, str]:
    """The rules MYI accepts, each with its reason; a listed error or a missing reason is refused."""
    with path.open("rb") as fh:
        table = tomllib.load(fh)
    reasons: dict[str, str] = {}
    for rule, entry in table.items():
        reason = str(entry.get("reason", "")).strip() if isinstance(entry, dict) else ""
        if not reason:
            raise ValueError(f"{path.name}: {rule} needs a reason")
        if not rule.startswith(("W", "I")):
            raise ValueError(f"{path.name}: {rule} is an error; errors are fixed, never accepted")
        reasons[rule] = " ".join(reason.split())
    return reasons


def templates(path: Path) -> list[Path]:
    """The stack templates of a cloud assembly (as its manifest lists them), or the template itself."""
    if path.is_file():
        return [path]
    manifest = json.loads((path / "manifest.json").read_text())
    found = [
        path / artifact["properties"]["templateFile"]
        for artifact in manifest.get("artifacts", {}).values()
        if artifact.get("type") == "aws:cloudformation:stack"
    ]
    if not found:
        raise FileNotFoundError(f"{path} holds no stack template")
    return found


def lint(template: Path, regions: list[str] | None = None) -> list[Finding]:
    """Everything cfn-lint reports on one template."""
    matches = lint_file(template, ManualArgs(regions=regions or [DEFAULT_REGION]))
    return [
        Finding(rule=m.rule.id, message=m.message, template=str(template), line=m.linenumber) for m in matches
    ]


def unaccepted(findings: list[Finding], reasons: dict[str, str]) -> list[Finding]:
    return [f for f in findings if f.error or f.rule not in reasons]


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [Path("cdk.out")]
    region = os.environ.get("AWS_REGION") or os.environ.get("CDK_DEFAULT_REGION") or DEFAULT_REGION
    reasons = accepted()
    failed = False
    for path in paths:
        for template in templates(path):
            findings = lint(template, [region])
            bad = unaccepted(findings, reasons)
            for finding in bad:
                print(finding, file=sys.stderr)
            kept = sorted({f.rule for f in findings} - {f.rule for f in bad})
            note = f"; accepted ({IGNORES.name}): {', '.join(kept)}" if kept else ""
            verdict = f"{len(bad)} finding(s)" if bad else "clean"
            print(f"cfn-lint {template} ({region}): {verdict}{note}")
            failed = failed or bool(bad)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
