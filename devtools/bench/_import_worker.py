"""Runs one import job to its end in this process and prints ``seconds peak_rss_kib`` (used by the
import benchmark, so the worker's memory is measured alone)."""

from __future__ import annotations

import resource
import sys
import time
import uuid

from myi import aws, db
from myi.imports.worker import WorkerDeps, run
from myi.settings import Settings


def main(job_id: str) -> None:
    settings = Settings.from_env()
    deps = WorkerDeps(
        settings=settings,
        conn=db.connect(settings),
        progress_conn=db.connect(settings),
        s3=aws.client("s3", settings),
        sqs=aws.client("sqs", settings),
    )
    start = time.perf_counter()
    run(deps, uuid.UUID(job_id))
    seconds = time.perf_counter() - start
    print(f"{seconds} {_peak_rss_kib()}")


def _peak_rss_kib() -> int:
    """This process's peak resident memory. Linux's VmHWM belongs to the process image, where
    ru_maxrss would also count what the parent held when it started this process."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    main(sys.argv[1])
