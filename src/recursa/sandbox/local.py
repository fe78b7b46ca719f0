"""The local backend: model code runs IN THIS PROCESS, in a thread of its own. Debugging only.

It blocks nothing. Model code can read every environment variable (API keys included),
every file and the network; start processes that outlive the run; patch anything in the
host; and end the host with `os._exit`. What it keeps: the REPL's semantics (the worker's
own `Worker` class runs the blocks), output caps, restored names, and a cell timeout that
interrupts pure-Python code (an exception raised in the block's thread). A block that ignores
the interrupt, or waits in C code, cannot be stopped: its thread is abandoned and keeps
running. Use it to step through model code with a debugger, never on untrusted output.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import json
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import received
from .base import BlockResult, CallHandler, ContextPayload
from .inside import worker as worker_module
from .process import reply_for

WARNING = (
    "recursa: WARNING: --sandbox local runs model-written code INSIDE this process: it can "
    "read your API keys, files and network, start processes, and end or corrupt the run. "
    "It blocks nothing; use it only to debug."
)
_WARNED = False


def warn_once() -> None:
    """The loud warning, on standard error, once per process."""
    global _WARNED
    if not _WARNED:
        _WARNED = True
        sys.stderr.write(WARNING + "\n")
        sys.stderr.flush()


class _Router:
    """Stands in for sys.stdout / sys.stderr while local blocks run: writes from a block's
    thread go to that block's capped buffer, every other thread's to the real stream."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.routes: dict[int, Any] = {}

    def write(self, s: str) -> int:
        return self.routes.get(threading.get_ident(), self.inner).write(s)

    def flush(self) -> None:
        target = self.routes.get(threading.get_ident(), self.inner)
        with contextlib.suppress(Exception):
            target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


_ROUTE_LOCK = threading.Lock()


def _route(out: Any, err: Any) -> None:
    ident = threading.get_ident()
    with _ROUTE_LOCK:
        for attr, target in (("stdout", out), ("stderr", err)):
            stream = getattr(sys, attr)
            if not isinstance(stream, _Router):
                stream = _Router(stream)
                setattr(sys, attr, stream)
            stream.routes[ident] = target


def _unroute() -> None:
    ident = threading.get_ident()
    with _ROUTE_LOCK:
        for attr in ("stdout", "stderr"):
            stream = getattr(sys, attr)
            if isinstance(stream, _Router):
                stream.routes.pop(ident, None)
                if not stream.routes:
                    setattr(sys, attr, stream.inner)


class _LocalWorker(worker_module.Worker):
    """The worker's REPL, driven from a thread of the host instead of a channel."""

    def __init__(self, box: LocalSandbox) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.box = box
        self.snapshot: dict[str, Any] = {}

    def execute(self, header: dict[str, Any]) -> dict[str, Any]:
        self.snapshot = dict(vars(builtins))
        try:
            return super().execute(header)
        finally:
            self.snapshot = {}

    def exchange(self, call_id: int, frame: Any) -> dict[str, Any]:
        return self.box.call_from_thread(frame.plain())

    def _redirect(self, out: Any, err: Any) -> Any:
        _route(out, err)
        return None

    def _unredirect(self, saved: Any) -> None:
        _unroute()

    def _arm(self, timeout: float) -> None:
        """No signals here: the host interrupts the block's thread itself."""

    def _disarm(self) -> None:
        pass

    def _restore_builtins(self) -> None:
        # Key by key: other threads of the host use the builtins while this runs. Only
        # inside a block: there is nothing to put back outside one.
        if not self.snapshot:
            return
        current = vars(builtins)
        for key in [k for k in current if k not in self.snapshot]:
            current.pop(key, None)
        for key, value in self.snapshot.items():
            if current.get(key, _LocalWorker) is not value:
                current[key] = value


class LocalSandbox:
    """A REPL in a thread of the host process (see the module's warning)."""

    name = "local"

    def __init__(
        self,
        *,
        cell_timeout: float = 60.0,
        max_output: int = 20_000,
        interrupt_grace: float = 2.0,
        **_ignored: Any,
    ) -> None:
        self.cell_timeout = cell_timeout
        self.max_output = max_output
        self.interrupt_grace = interrupt_grace
        self.restarts = 0
        self.limits_in_force: dict[str, Any] = {"memory_mib": None, "processes": None}
        self._payload: Callable[[], ContextPayload] = ContextPayload
        self._tools: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: CallHandler | None = None
        self._worker: _LocalWorker | None = None
        self._jobs: queue.SimpleQueue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._exec_id = 0
        self._call_since: float | None = None
        self._call_time = 0.0

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(
        self,
        payload: ContextPayload | Callable[[], ContextPayload],
        tools: list[str] | None = None,
    ) -> None:
        warn_once()
        self._loop = asyncio.get_running_loop()
        self._payload = payload if callable(payload) else (lambda: payload)
        self._tools = list(tools or [])
        self._spawn()

    def _spawn(self) -> None:
        payload = self._payload()
        worker = _LocalWorker(self)
        worker.init(
            {
                "contexts": payload.specs,
                "vars": payload.variables,
                "max_output": self.max_output,
                "seed": payload.seed,
                "tools": self._tools,
            },
            bytes(payload.body),
        )
        self._worker = worker
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=_serve_jobs, args=(self._jobs,), name="recursa-local-repl", daemon=True
        )
        self._thread.start()

    def _abandon(self) -> None:
        """Leave the current thread to whatever it is stuck in; it gets no more work."""
        if self._jobs is not None:
            self._jobs.put(None)
        self._jobs = self._thread = self._worker = None

    async def close(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._busy():
            _interrupt(self._thread)
        self._abandon()

    def _busy(self) -> bool:
        return self._jobs is not None and getattr(self._thread, "busy", False)

    # ---- running code ----------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        assert self._loop is not None and self._jobs is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._jobs.put((fn, args, future, self._loop))
        return future

    async def execute(self, code: str, handler: CallHandler) -> BlockResult:
        if self._worker is None:
            self._spawn()
        assert self._worker is not None and self._thread is not None
        self._handler = handler
        self._exec_id += 1
        header = {"op": "exec", "id": self._exec_id, "code": code, "timeout": self.cell_timeout}
        self._call_time, self._call_since = 0.0, None
        started = time.monotonic()
        future = self._submit(self._worker.execute, header)
        while True:
            used = time.monotonic() - started - self._calls_so_far()
            left = self.cell_timeout - used
            if left <= 0 and self._call_since is None:
                break
            await asyncio.wait({future}, timeout=max(left, 0.05))
            if future.done():
                return _local_result(future, self.max_output)
        thread = self._thread
        _interrupt(thread)
        await asyncio.wait({future}, timeout=self.interrupt_grace)
        if future.done():
            return _local_result(future, self.max_output)
        self._abandon()
        self.restarts += 1
        self._spawn()
        return BlockResult(
            error=(
                f"TimeoutError: the block ran past its {self.cell_timeout:g} s limit and "
                "ignored the interrupt; the local backend cannot kill it, so it still runs "
                "in a thread of this process"
            ),
            restarted="a new REPL was started: every variable was lost; context is reloaded",
        )

    def _calls_so_far(self) -> float:
        since = self._call_since
        return self._call_time + (time.monotonic() - since if since is not None else 0.0)

    def call_from_thread(self, header: dict[str, Any]) -> dict[str, Any]:
        """A call from model code (in the block's thread), served on the host's loop."""
        assert self._loop is not None and self._handler is not None
        self._call_since = time.monotonic()
        try:
            done = asyncio.run_coroutine_threadsafe(reply_for(header, self._handler), self._loop)
            return json.loads(json.dumps(done.result()))
        finally:
            self._call_time += time.monotonic() - self._call_since
            self._call_since = None

    async def add(
        self, payload: ContextPayload, variables: dict[str, Any] | None = None
    ) -> str | None:
        if self._worker is None:
            self._spawn()
        assert self._worker is not None
        header = {"op": "add", "contexts": payload.specs, "vars": variables or {}}
        await self._submit(self._worker.add, header, bytes(payload.body))
        return None  # the REPL lives in this process: nothing is ever out of its sight

    async def get_value(self, name: str) -> dict[str, Any] | None:
        if self._worker is None:
            return None
        future = self._submit(self._worker.get_value, {"op": "get", "name": name})
        try:
            reply = await asyncio.wait_for(asyncio.shield(future), self.cell_timeout)
        except TimeoutError:
            return None
        return received.value_reply(reply)


def _serve_jobs(jobs: queue.SimpleQueue[Any]) -> None:
    """The REPL thread: run jobs in order until told to stop (None)."""
    thread = threading.current_thread()
    while True:
        try:
            job = jobs.get()
            if job is None:
                return
            fn, args, future, loop = job
            thread.busy = True  # type: ignore[attr-defined]
            try:
                value, error = fn(*args), None
            except BaseException as exc:  # an interrupt that landed outside the block
                value, error = None, exc
            finally:
                thread.busy = False  # type: ignore[attr-defined]
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(_settle, future, value, error)
        except worker_module.CellTimeout:
            continue  # an interrupt that arrived just after its block ended


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_result({"op": "result", "error": f"{type(error).__name__}: {error}"})
    else:
        future.set_result(value)


def _local_result(future: asyncio.Future[Any], max_output: int) -> BlockResult:
    return received.block_result(future.result(), max_output)


def _interrupt(thread: threading.Thread | None) -> None:
    """Raise CellTimeout in `thread` at its next Python instruction."""
    if thread is None or thread.ident is None:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(worker_module.CellTimeout)
    )
