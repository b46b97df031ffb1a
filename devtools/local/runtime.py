"""The local runtime: the deployed wiring on one machine.

HTTP requests become API Gateway (payload v2.0) events for the routed function; queues of the AWS
emulator are polled and their messages handed to their consumer in batches, with partial batch
failures and redrive to the dead-letter queues as Lambda does; schedules fire from their
EventBridge expressions. Every function runs the very same ``functions/<name>/handler.py`` that is
deployed, in execution environments as Lambda runs it: processes that run one invocation at a
time each, with their own database connections and module state (:mod:`devtools.local.environments`).
Two control routes drive it from tests and scripts: ``POST /_local/schedules/{rule}`` and
``POST /_local/drain``.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devtools.local import events
from devtools.local.context import LocalContext
from devtools.local.environments import Environments, InvocationFailed
from devtools.local.environments import load_handler as load_handler  # where tests load handlers from
from devtools.local.schedule import Cron, rate_seconds
from devtools.paths import REPO as REPO_ROOT
from infra.wiring import WIRING, Function, Queue, Wiring
from myi import aws
from myi.settings import Settings

FAILED_MESSAGE_BACKOFF_S = 1
CORS_MAX_AGE_S = 600


def log_line(text: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"{stamp} devtools.local {text}", file=sys.stderr, flush=True)


def error_json(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@dataclass
class Invocation:
    ok: bool
    result: Any = None
    error: str | None = None


@dataclass
class Counts:
    """What a function did since the runtime started: invocations, the ones that raised, messages
    reported failed (partial batch failures, or a whole batch whose invocation raised), and the
    most invocations that ran at once."""

    invocations: int = 0
    errors: int = 0
    failed_messages: int = 0
    running: int = 0
    peak: int = 0


@dataclass
class Runtime:
    settings: Settings
    queue_urls: dict[str, str]
    wiring: Wiring = WIRING
    host: str = "127.0.0.1"
    port: int = 8000
    schedules_enabled: bool = True
    functions_dir: Path = REPO_ROOT / "functions"
    web_dir: Path = REPO_ROOT / "web"
    _environments: dict[str, Environments] = field(default_factory=dict)
    _environments_lock: threading.Lock = field(default_factory=threading.Lock)
    _busy: int = 0
    _busy_lock: threading.Lock = field(default_factory=threading.Lock)
    _counts: dict[str, Counts] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _pool: ThreadPoolExecutor | None = None

    # ---- invoking functions -----------------------------------------------------------------
    def environments(self, fn: Function) -> Environments:
        """The execution environments of ``fn``: one per invocation running at once (see
        :mod:`devtools.local.environments`)."""
        with self._environments_lock:
            if fn.name not in self._environments:
                self._environments[fn.name] = Environments(self.functions_dir, fn)
            return self._environments[fn.name]

    def invoke(self, fn: Function, event: dict[str, Any], trigger: str) -> Invocation:
        context = LocalContext(fn.kebab, fn.memory_mb, fn.timeout_s, self.settings.region)
        start = time.perf_counter()
        with self._busy_lock:
            self._busy += 1
            counts = self._counts.setdefault(fn.name, Counts())
            counts.invocations += 1
            counts.running += 1
            counts.peak = max(counts.peak, counts.running)
        outcome = Invocation(ok=False, error="the invocation did not end")
        try:
            result = self.environments(fn).invoke(event, context)
            outcome = Invocation(ok=True, result=result)
        except InvocationFailed as exc:  # the environment printed the handler's traceback
            outcome = Invocation(ok=False, error=str(exc))
        except Exception as exc:
            outcome = Invocation(ok=False, error=f"{type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
        finally:
            with self._busy_lock:
                self._busy -= 1
                counts.running -= 1
                counts.errors += 0 if outcome.ok else 1
        ms = (time.perf_counter() - start) * 1000
        log_line(f"{fn.name} {trigger} {ms:.0f}ms {self._describe(outcome, event)}")
        return outcome

    @staticmethod
    def _describe(outcome: Invocation, event: dict[str, Any]) -> str:
        if not outcome.ok:
            return f"error {outcome.error}"
        result = outcome.result
        if isinstance(result, dict) and "statusCode" in result:
            return str(result["statusCode"])
        if isinstance(result, dict) and "batchItemFailures" in result:
            total = len(event.get("Records", []))
            return f"ok, {len(result['batchItemFailures'])} failed of {total}"
        return "ok"

    # ---- queues -------------------------------------------------------------------------------
    def _poll(self, queue: Queue) -> None:
        fn = self.wiring.consumer_of(queue.name)
        assert fn.queue is not None
        sqs = aws.client("sqs", self.settings)
        url = self.queue_urls[queue.name]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        slots = threading.Semaphore(max(1, fn.queue.max_concurrency or 2))
        assert self._pool is not None
        while not self._stop.is_set():
            slots.acquire()
            try:
                received = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=min(10, fn.queue.batch_size),
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception as exc:
                slots.release()
                if not self._stop.is_set():
                    log_line(f"{fn.name} sqs:{queue.name} receive failed: {exc}")
                    time.sleep(1)
                continue
            if not received:
                slots.release()
                continue
            with self._busy_lock:
                self._busy += 1
            self._pool.submit(self._run_batch, fn, queue, url, arn, received, slots)

    def _run_batch(
        self,
        fn: Function,
        queue: Queue,
        url: str,
        arn: str,
        messages: list[dict[str, Any]],
        slots: threading.Semaphore,
    ) -> None:
        sqs = aws.client("sqs", self.settings)
        try:
            event = events.sqs_event(messages, arn, self.settings.region)
            outcome = self.invoke(fn, event, f"sqs:{queue.name}")
            ids = [m["MessageId"] for m in messages]
            failed = set(events.failed_message_ids(outcome.result, ids)) if outcome.ok else set(ids)
            with self._busy_lock:
                self._counts[fn.name].failed_messages += len(failed)
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                chunk = done[start : start + 10]
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                    ],
                )
            for m in messages:
                if m["MessageId"] in failed:
                    # Visible again soon: Lambda would wait for the visibility timeout; locally a
                    # short back-off keeps retries and the redrive to the DLQ quick.
                    sqs.change_message_visibility(
                        QueueUrl=url,
                        ReceiptHandle=m["ReceiptHandle"],
                        VisibilityTimeout=FAILED_MESSAGE_BACKOFF_S,
                    )
        except Exception as exc:
            log_line(f"{fn.name} sqs:{queue.name} batch handling failed: {exc}")
        finally:
            with self._busy_lock:
                self._busy -= 1
            slots.release()

    def counts(self) -> dict[str, dict[str, int]]:
        """Each function's :class:`Counts` so far, and how many environments it has."""
        with self._busy_lock:
            out = {name: asdict(c) for name, c in sorted(self._counts.items())}
        with self._environments_lock:
            for name, each in self._environments.items():
                out.setdefault(name, asdict(Counts()))["environments"] = each.started
        return out

    def queue_depths(self) -> dict[str, int]:
        sqs = aws.client("sqs", self.settings)
        depths = {}
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        for queue in self.wiring.queues:
            attrs = sqs.get_queue_attributes(QueueUrl=self.queue_urls[queue.name], AttributeNames=names)[
                "Attributes"
            ]
            depths[queue.name] = sum(int(attrs.get(n, 0)) for n in names)
        return depths

    def drain(self, timeout_s: float) -> tuple[bool, dict[str, int]]:
        """Wait until every queue is empty and no handler runs (seen twice in a row)."""
        deadline = time.monotonic() + timeout_s
        quiet_checks = 0
        depths: dict[str, int] = {}
        while time.monotonic() < deadline:
            with self._busy_lock:
                busy = self._busy
            depths = self.queue_depths()
            if busy == 0 and not any(depths.values()):
                quiet_checks += 1
                if quiet_checks >= 2:
                    return True, depths
            else:
                quiet_checks = 0
            time.sleep(0.2)
        return False, depths

    # ---- schedules --------------------------------------------------------------------------
    def rule_arn(self, rule: str) -> str:
        return f"arn:aws:events:{self.settings.region}:000000000000:rule/myi-{self.settings.stage}-{rule}"

    def run_schedule(self, rule: str) -> Invocation | None:
        for schedule, fn in self.wiring.schedules():
            if schedule.rule == rule:
                event = events.scheduled_event(self.rule_arn(rule), self.settings.region)
                return self.invoke(fn, event, f"schedule:{rule}")
        return None

    def _scheduler(self) -> None:
        started = time.monotonic()
        last_rate: dict[str, float] = {}
        last_minute: dict[str, str] = {}
        while not self._stop.wait(1.0):
            now = datetime.now(UTC)
            for schedule, _fn in self.wiring.schedules():
                every = rate_seconds(schedule.expression)
                if every is not None:
                    due = last_rate.get(schedule.rule, started) + every
                    if time.monotonic() >= due:
                        last_rate[schedule.rule] = time.monotonic()
                        self._fire(schedule.rule)
                    continue
                minute = now.strftime("%Y%m%d%H%M")
                if last_minute.get(schedule.rule) != minute and Cron.parse(schedule.expression).matches(now):
                    last_minute[schedule.rule] = minute
                    self._fire(schedule.rule)

    def _fire(self, rule: str) -> None:
        assert self._pool is not None
        self._pool.submit(self.run_schedule, rule)

    # ---- HTTP -----------------------------------------------------------------------------------
    def cors_headers(self, origin: str | None) -> list[tuple[str, str]]:
        if not origin or origin.rstrip("/") not in self.settings.allowed_origins:
            return []
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]

    def preflight_headers(self, origin: str | None) -> list[tuple[str, str]]:
        base = self.cors_headers(origin)
        if not base:
            return []
        return [
            *base,
            ("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE, OPTIONS"),
            ("Access-Control-Allow-Headers", "content-type"),
            ("Access-Control-Max-Age", str(CORS_MAX_AGE_S)),
        ]

    def handle_http(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, client_ip: str
    ) -> events.HttpResponse:
        parts = urlsplit(target)
        path = parts.path or "/"
        origin = next((v for k, v in headers if k.lower() == "origin"), None)
        if method == "OPTIONS":
            return events.HttpResponse(204, self.preflight_headers(origin), b"")
        if path.startswith("/_local/"):
            return self._control(method, path, parse_qs(parts.query))
        match, _known = events.match_route(self.wiring.routes(), method, path)
        if match is None and method in ("GET", "HEAD"):
            page = self.static_file(path)
            if page is not None:
                return page
        if match is None:
            return events.HttpResponse(
                404, [("content-type", "application/json")], error_json("not_found", "No such route.")
            )
        host = next((v for k, v in headers if k.lower() == "host"), f"{self.host}:{self.port}")
        event = events.http_to_event(
            method=method,
            raw_path=path,
            raw_query=parts.query,
            headers=headers,
            body=body,
            match=match,
            source_ip=client_ip,
            host=host,
            now=datetime.now(UTC),
        )
        outcome = self.invoke(match.function, event, f"http:{method} {match.route.path}")
        if not outcome.ok:
            response = events.HttpResponse(
                500, [("content-type", "application/json")], error_json("internal", "The function failed.")
            )
        else:
            response = events.event_response_to_http(outcome.result)
        return events.HttpResponse(
            response.status, [*response.headers, *self.cors_headers(origin)], response.body
        )

    def static_file(self, path: str) -> events.HttpResponse | None:
        """The dashboard (``web/``) at ``/``, as CloudFront serves it in the cloud: files that exist
        under ``web/`` only, never anything outside it."""
        relative = "index.html" if path in ("", "/") else path.lstrip("/")
        try:
            root = self.web_dir.resolve()
            target = (root / relative).resolve()
        except (OSError, RuntimeError):
            return None
        if root not in target.parents or not target.is_file():
            return None
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        return events.HttpResponse(
            200, [("content-type", kind), ("cache-control", "no-cache")], target.read_bytes()
        )

    def _control(self, method: str, path: str, query: dict[str, list[str]]) -> events.HttpResponse:
        json_type = [("content-type", "application/json")]
        if method != "POST":
            return events.HttpResponse(404, json_type, error_json("not_found", "No such route."))
        if path.startswith("/_local/schedules/"):
            rule = path.removeprefix("/_local/schedules/")
            outcome = self.run_schedule(rule)
            if outcome is None:
                return events.HttpResponse(
                    404, json_type, error_json("not_found", f"No schedule named {rule}.")
                )
            if not outcome.ok:
                return events.HttpResponse(
                    500, json_type, error_json("invocation_failed", outcome.error or "")
                )
            body = {"rule": rule, "ok": True, "result": outcome.result}
            return events.HttpResponse(200, json_type, json.dumps(body, default=str).encode())
        if path == "/_local/drain":
            try:
                timeout = float(query.get("timeout", ["60"])[0])
            except ValueError:
                return events.HttpResponse(
                    400, json_type, error_json("invalid_request", "timeout must be a number")
                )
            drained, depths = self.drain(timeout)
            if not drained:
                message = f"Queues still busy after {timeout:g} s: {depths}"
                return events.HttpResponse(504, json_type, error_json("timeout", message))
            body = {"drained": True, "queues": depths, "functions": self.counts()}
            return events.HttpResponse(200, json_type, json.dumps(body).encode())
        return events.HttpResponse(404, json_type, error_json("not_found", "No such route."))

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="myi-invoke")
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                response = runtime.handle_http(
                    self.command, self.path, list(self.headers.items()), body, self.client_address[0]
                )
                self.send_response(response.status)
                names = {k.lower() for k, _ in response.headers}
                for name, value in response.headers:
                    self.send_header(name, value)
                if "content-length" not in names:
                    self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return  # one line per invocation is logged by the runtime instead

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._spawn(self._server.serve_forever, "myi-http")
        for queue in self.wiring.queues:
            self._spawn(lambda q=queue: self._poll(q), f"myi-sqs-{queue.name}")
        if self.schedules_enabled:
            self._spawn(self._scheduler, "myi-scheduler")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._environments_lock:
            environments = list(self._environments.values())
        for each in environments:
            each.stop()
