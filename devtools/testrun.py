"""``make test``: the whole suite; pytest's exit code 5 (no tests collected) counts as a failure."""

from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    args = [sys.executable, "-m", "pytest", *argv]
    code = subprocess.call(args, env=env)
    if code == 5:
        print("make test: pytest collected no tests; that is a failure", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
