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
    print(f"{seconds} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


if __name__ == "__main__":
    main(sys.argv[1])
