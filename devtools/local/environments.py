"""Execution environments, as Lambda keeps them for a function: each is a process of its own that
runs one invocation at a time, and a function runs as many invocations at once as it has
environments busy.

Whatever a handler keeps for an environment's life is that environment's alone, as in Lambda: its
database connections (:mod:`myi.db`), its module globals (batch processors, resolvers and the
routers they are given, clients, dependencies cached with ``functools.cache``) and the libraries'
own process-wide state. An invocation goes to an idle environment of its function, or to a new one
when every one is busy (a cold start: the handler module is loaded in it); how many run at once is
bounded by whoever invokes (a queue's maximum concurrency, the HTTP requests in flight).

Environments are forked from a server process that has the package imported already, so a cold
start costs the handler's own initialisation, not the imports. An environment whose process died
is dropped, and the next invocation gets a new one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

from infra.wiring import Function
from myi import db

# Imported once in the server environments are forked from.
PRELOAD = [
    "devtools.local.environments",
    "myi.api.app",
    "myi.auth.routes",
    "myi.sync",
    "myi.imports.worker",
    "myi.exports.worker",
    "myi.enrichment",
    "myi.spotify_top",
    "aws_lambda_powertools.utilities.batch",
]

_context_lock = threading.Lock()
_context: Any = None


def _forkserver() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(PRELOAD)
        return _context


def load_handler(functions_dir: Path, name: str) -> Callable[..., Any]:
    """``functions/<name>/handler.py``'s ``lambda_handler``, loaded as Lambda loads it."""
    path = functions_dir / name / "handler.py"
    if not path.exists():
        raise LookupError(f"function {name} has no handler at {path}")
    spec = importlib.util.spec_from_file_location(f"myi_function_{name}", path)
    assert spec and spec.loader
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    handler: Callable[..., Any] = module.lambda_handler
    return handler


class InvocationFailed(Exception):
    """The handler raised (its traceback is in the environment's output), or its environment died."""


def _serve(channel: Connection, functions_dir: Path, name: str, environ: dict[str, str]) -> None:
    """An environment's process: the runtime's environment variables, the handler loaded at the
    first invocation, then one invocation after another until the runtime closes the channel."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runtime's to handle: it stops us
    os.environ.clear()
    os.environ.update(environ)
    try:
        _invocations(channel, functions_dir, name)
    finally:
        db.close_connection()


def _invocations(channel: Connection, functions_dir: Path, name: str) -> None:
    handler: Callable[..., Any] | None = None
    while True:
        try:
            job = channel.recv()
        except EOFError:
            return
        if job is None:
            return
        event, context = job
        try:
            if handler is None:
                handler = load_handler(functions_dir, name)
            reply: tuple[str, Any] = ("ok", handler(event, context))
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            reply = ("error", f"{type(exc).__name__}: {exc}")
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            channel.send(reply)
        except Exception as exc:  # a result that cannot be sent back
            channel.send(("error", f"{type(exc).__name__}: the result could not be returned: {exc}"))


class Environment:
    """One execution environment of a function (a process), used by one invoker at a time."""

    def __init__(self, functions_dir: Path, fn: Function, number: int) -> None:
        self.fn = fn
        self.number = number
        ctx = _forkserver()
        self._channel, theirs = ctx.Pipe()
        self._process = ctx.Process(
            target=_serve,
            args=(theirs, functions_dir, fn.name, dict(os.environ)),
            name=f"myi-{fn.kebab}-{number}",
            daemon=True,
        )
        self._process.start()
        theirs.close()

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def run(self, event: dict[str, Any], context: Any) -> Any:
        """The handler's result for ``event``; :class:`InvocationFailed` when it raised."""
        try:
            self._channel.send((event, context))
            status, value = self._channel.recv()
        except (EOFError, OSError) as exc:
            self._process.join(timeout=1)
            raise InvocationFailed(
                f"the environment exited (code {self._process.exitcode}) during the invocation"
            ) from exc
        if status != "ok":
            raise InvocationFailed(value)
        return value

    def stop(self, timeout_s: float = 5) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._channel.send(None)
        self._process.join(timeout=timeout_s)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=timeout_s)
        self._channel.close()


class Environments:
    """The environments of one function: an idle one for each invocation, a new one when none is."""

    def __init__(self, functions_dir: Path, fn: Function) -> None:
        self.fn = fn
        self._functions_dir = functions_dir
        self._idle: list[Environment] = []
        self._started = 0
        self._lock = threading.Lock()
        self._stopped = False

    def invoke(self, event: dict[str, Any], context: Any) -> Any:
        env = self._take()
        try:
            return env.run(event, context)
        finally:
            with self._lock:
                if env.alive and not self._stopped:
                    self._idle.append(env)
                else:
                    env.stop(timeout_s=1)

    def _take(self) -> Environment:
        with self._lock:
            if self._stopped:
                raise InvocationFailed(f"the runtime is stopping: {self.fn.name} takes no more invocations")
            while self._idle:
                env = self._idle.pop()  # the warmest: the one that finished last
                if env.alive:
                    return env
                env.stop(timeout_s=1)
            self._started += 1
            number = self._started
        return Environment(self._functions_dir, self.fn, number)

    @property
    def started(self) -> int:
        """How many environments this function has had."""
        with self._lock:
            return self._started

    def stop(self) -> None:
        """Stops the idle environments now, and the busy ones as their invocations end."""
        with self._lock:
            self._stopped = True
            idle, self._idle = self._idle, []
        for env in idle:
            env.stop()
