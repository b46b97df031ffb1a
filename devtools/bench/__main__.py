"""Run every benchmark module (or those named on the command line) and print their figures."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import tempfile
from pathlib import Path

from devtools import embedded
from devtools.bench import BenchContext


def main(argv: list[str]) -> int:
    import devtools.bench as pkg

    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    wanted = [n for n in names if not argv or n in argv]
    if argv and not wanted:
        print(f"no such benchmark; choose from: {' '.join(names)}", file=sys.stderr)
        return 2
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    pg = embedded.start_postgres("pg-bench")
    url = pg.create_database("myi_bench")
    aws_emulator = embedded.start_aws()
    embedded.apply_emulator_env(aws_emulator.url)
    os.environ["DATABASE_URL"] = url
    failed = 0
    with tempfile.TemporaryDirectory(prefix="myi-bench-") as scratch:
        ctx = BenchContext(database_url=url, scratch=Path(scratch), aws_endpoint=aws_emulator.url)
        try:
            for name in wanted:
                module = importlib.import_module(f"devtools.bench.{name}")
                try:
                    for figure in module.run(ctx):
                        print(figure.line(), flush=True)
                except Exception as exc:  # one broken benchmark must not hide the others
                    failed += 1
                    print(f"# benchmark {name} failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            ctx.close()
            aws_emulator.stop()
            pg.drop_database(url)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
