"""The subprocess backend: one persistent `python -I` worker per RLM, framed pipes between.

The worker gets an environment built from nothing, a private temporary working directory,
a session of its own (so a terminal's Ctrl-C reaches the host, which then ends the whole
process group), resource limits (`limits`: address space, CPU time, file size, processes)
and, under root, no capabilities. It still runs as the host's user, with the host's view of
files and network: see docs/SANDBOX.md. Wrapping the command (bubblewrap, docker) is left to
subclasses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BudgetExceeded, SandboxError
from . import limits, received
from .base import (
    NO_BODY,
    BlockResult,
    CallHandler,
    ContextPayload,
    PayloadBody,
    StreamedTexts,
)
from .inside import framing

WORKER_PATH = Path(__file__).parent / "inside" / "worker.py"
STDERR_TAIL = 4096
MAX_FRAMES_PER_BLOCK = 100_000
"""Frames (calls, stale or unknown ones) the host reads for one block; past it, the worker
is taken to be flooding the channel and is replaced."""
MAX_CALLS_IN_FLIGHT = 64
CANCEL_WAIT = 10.0
"""Seconds a block that ends early (cancelled, its worker gone) waits for its calls to end."""
"""Calls of one worker served at once (its threads'); more wait, unread, in the pipe."""
_LIVE: weakref.WeakSet[SubprocessSandbox] = weakref.WeakSet()


def clean_env(home: str) -> dict[str, str]:
    """The worker's whole environment. Built from nothing: no variable of the host's leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


class WorkerGone(Exception):
    """The worker process ended or broke the protocol; it must be restarted."""


class SubprocessSandbox:
    """A REPL worker in a child process. Not thread-safe: one engine loop drives it."""

    name = "subprocess"
    drop_caps = True
    """Guard the host's /proc (non-dumpable) and, under root, start the worker with no
    capabilities: a worker that shares the host's pid namespace needs both."""
    use_cgroup = True
    """Put the worker's tree in a cgroup capping processes and memory, where one can be made."""
    limit_tree = True
    """Put rlimits and the cgroup on the started tree (False: the wrapper limits itself)."""
    binds_paths = False
    """The worker sees only the host paths bound as it starts (bwrap, docker): a context
    whose files lie elsewhere needs a new worker (see `add`)."""

    def __init__(
        self,
        *,
        cell_timeout: float = 60.0,
        max_output: int = 20_000,
        python: str | None = None,
        interrupt_grace: float = 2.0,
        memory_limit: int | None = None,
        max_procs: int = limits.DEFAULT_MAX_PROCS,
        cpu_limit: int | None = None,
        file_limit: int = limits.DEFAULT_FILE_MIB,
    ) -> None:
        """`memory_limit` (MiB): the address space of each worker process, and of its whole
        tree where a cgroup can be made; default 2 GiB plus six times the context.
        `max_procs`: processes and threads of the tree. `cpu_limit`: CPU seconds over the
        worker's life (default: an hour, or 60 cell timeouts). `file_limit` (MiB): the
        largest file the worker may write."""
        if memory_limit is not None and memory_limit < limits.MIN_MEMORY_MIB:
            raise ValueError(f"memory_limit must be at least {limits.MIN_MEMORY_MIB} MiB")
        self.cell_timeout = cell_timeout
        self.max_output = max_output
        self.python = python or sys.executable
        self.interrupt_grace = interrupt_grace
        self.memory_limit = memory_limit
        self.max_procs = max_procs
        self.cpu_limit = cpu_limit
        self.file_limit = file_limit
        self.limits: limits.WorkerLimits | None = None
        self.cgroup: limits.Cgroup | None = None
        self.limits_in_force: dict[str, Any] = {}
        """What bounds the running worker: memory_mib, processes ('cgroup', 'rlimit' or
        None), memory_tree (True where a cgroup bounds the whole tree's memory)."""
        self.proc: asyncio.subprocess.Process | None = None
        self.workdir: str | None = None
        self._payload: Callable[[], ContextPayload] = ContextPayload
        self._tools: list[str] = []
        self._stderr_tail = b""
        self._stderr_task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._exec_id = 0
        self.restarts = 0
        self._streaming: StreamedTexts | None = None
        """A call whose prompts are still being read from the channel (see `_read`)."""
        self.bound: list[str] = []
        """The contexts' host paths the running worker was started with."""
        self._told: str | None = None
        """A restart between blocks that the next block's result must report."""

    # ---- lifecycle ---------------------------------------------------------------------------
    def command(self, payload: ContextPayload) -> list[str]:
        """The argv that starts the worker; backends that wrap it override this. `-S`: the
        worker sets up site-packages itself, just after it answers `ready` (see worker.py)."""
        return [self.python, "-I", "-S", "-X", "utf8", str(WORKER_PATH)]

    async def start(
        self,
        payload: ContextPayload | Callable[[], ContextPayload],
        tools: list[str] | None = None,
    ) -> None:
        """Start the worker. Give `payload` as a function to have it rebuilt for each
        (re)start instead of kept in memory beside the contexts it was built from."""
        self._payload = payload if callable(payload) else (lambda: payload)
        self._tools = list(tools or [])
        self.workdir = tempfile.mkdtemp(prefix="recursa-")
        try:
            await self._spawn()
        except BaseException:  # a worker refused at start leaves nothing behind
            await self.close()
            raise

    def worker_limits(self, payload: ContextPayload) -> limits.WorkerLimits:
        memory = self.memory_limit or limits.default_memory_mib(len(payload.body))
        cpu = self.cpu_limit or limits.default_cpu_seconds(self.cell_timeout)
        return limits.WorkerLimits(memory, cpu, self.file_limit, self.max_procs)

    def environment(self) -> dict[str, str]:
        """The environment the started command gets (built from nothing)."""
        assert self.workdir is not None
        return clean_env(self.workdir)

    async def _spawn(self) -> None:
        assert self.workdir is not None
        payload = self._payload()
        self._streaming = None
        self.bound = payload.host_paths()
        self.limits = self.worker_limits(payload)
        self._drop_cgroup()
        if self.use_cgroup:
            self.cgroup = limits.Cgroup.create(
                self.limits.max_procs, self.limits.memory_mib * limits.MIB
            )
        if self.drop_caps:
            limits.guard_host()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(payload),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.environment(),
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=self.preexec(),
            )
        except OSError as exc:
            self._drop_cgroup()
            raise SandboxError(f"could not start the sandbox worker: {exc}") from None
        self.limits_in_force = self.describe_limits()
        _LIVE.add(self)
        self._stderr_tail = b""
        self._stderr_task = asyncio.create_task(self._drain_stderr(self.proc))
        header = {
            "op": "init",
            "contexts": payload.specs,
            "vars": payload.variables,
            "max_output": self.max_output,
            "seed": payload.seed,
            "tools": self._tools,
            **self.init_options(),
        }
        # Limits set after exec are set while the worker boots (moving a process into a
        # cgroup takes milliseconds), and always before start() returns: before any model code.
        stop = threading.Event()
        limiting = None
        if self.limit_tree and self.limits is not None:
            limiting = asyncio.ensure_future(asyncio.to_thread(self._limit_tree, stop))
        try:
            await self._send(header, payload.body)
            del payload
            reply = await self._read()
        except BaseException as exc:
            stop.set()
            if limiting is not None:
                await asyncio.gather(limiting, return_exceptions=True)
            if isinstance(exc, WorkerGone):
                raise SandboxError(f"the sandbox worker failed to start: {exc}") from None
            raise
        if limiting is not None:
            try:
                await limiting
            except OSError as exc:
                raise SandboxError(f"could not put limits on the sandbox worker: {exc}") from None
        if reply.get("op") != "ready":
            raise SandboxError(f"the sandbox worker answered {reply.get('op')!r} to init")
        try:
            self.on_ready(reply)
        except OSError as exc:
            raise SandboxError(f"the sandbox worker is not as asked: {exc}") from None

    def on_ready(self, reply: dict[str, Any]) -> None:
        """Check the worker's `ready` frame (what a backend asked of it at `init`)."""

    def _limit_tree(self, stop: threading.Event) -> None:
        """(In a thread.) Find the worker under its wrapper, then limit the whole tree."""
        assert self.proc is not None and self.limits is not None
        root, python = self.proc.pid, os.fsencode(self.python)
        deadline = time.monotonic() + 30.0
        while True:
            tree = [root, *_tree(root)]  # the wrapper(s), then the worker
            if _argv0(tree[-1]) == python:
                break
            if stop.is_set() or time.monotonic() > deadline:
                raise OSError("the worker process did not appear under its wrapper")
            time.sleep(0.0005)
        procs = tuple(self.cgroup.procs_files) if self.cgroup else ()
        limits.apply_to_running(tree, self.limits, procs, join=tree[-1])

    def preexec(self) -> Any:
        """A function to run in the child before exec, or None. None for the workers: with
        one, Python forks the whole host instead of using vfork (several milliseconds more,
        more for a large host). The worker hardens itself at `init` instead (`_harden`)."""
        return None

    def init_options(self) -> dict[str, Any]:
        """More fields for the worker's `init` frame: what it must do to itself first. A
        plain worker dies with the host, adopts its orphans, and under root drops every
        capability (it shares the host's pid namespace)."""
        root = self.drop_caps and os.geteuid() == 0
        return {
            "harden": {
                "parent": os.getpid(),
                "subreaper": True,
                "drop_caps": root,
                "last_cap": limits.last_cap() if root else 0,
            }
        }

    def describe_limits(self) -> dict[str, Any]:
        assert self.limits is not None
        processes = "cgroup" if self.cgroup is not None else "rlimit" if os.geteuid() != 0 else None
        return {
            "memory_mib": self.limits.memory_mib,
            "processes": processes,
            "max_procs": self.limits.max_procs if processes else None,
            "memory_tree": self.cgroup is not None and len(self.cgroup.dirs) > 1,
        }

    def _drop_cgroup(self) -> None:
        """Empty and remove the worker's cgroup, if any (a leftover is swept later)."""
        group, self.cgroup = self.cgroup, None
        if group is not None:
            group.kill_all()
            for _ in range(50):
                if group.try_remove():
                    return
                time.sleep(0.002)

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.returncode is None:
                _kill_descendants(proc.pid)  # before the worker exits and orphans them
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._send_to(proc, {"op": "shutdown"}), 0.5)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.5)
            _kill_group(proc, self.cgroup)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 2.0)
        self._drop_cgroup()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
        _LIVE.discard(self)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def kill_now(self) -> None:
        """Synchronously end everything this sandbox started (last resort, at exit)."""
        if self.proc is not None:
            _kill_group(self.proc, self.cgroup)

    async def _restart(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _kill_group(proc, self.cgroup)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 2.0)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
        self.restarts += 1
        await self._spawn()

    # ---- framing -----------------------------------------------------------------------------
    async def _send(self, header: dict[str, Any], body: PayloadBody = NO_BODY) -> None:
        if self.proc is None:
            raise WorkerGone("no worker")
        await self._send_to(self.proc, header, body)

    async def _send_to(
        self,
        proc: asyncio.subprocess.Process,
        header: dict[str, Any],
        body: PayloadBody = NO_BODY,
    ) -> None:
        """Write one frame. A large body goes a slice at a time, each drained before the
        next is encoded, so neither it nor the pipe's buffer is ever held whole."""
        assert proc.stdin is not None
        async with self._write_lock:
            try:
                if len(body) <= framing.SMALL_FRAME:
                    proc.stdin.write(framing.encode(header, bytes(body)))
                else:
                    proc.stdin.write(b"".join(framing.encode_parts(header, b"", len(body))))
                    for chunk in body.chunks():
                        await proc.stdin.drain()
                        proc.stdin.write(chunk)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise WorkerGone(
                    f"the worker's channel closed ({exc.__class__.__name__})"
                ) from None

    async def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        if self._streaming is not None:  # a call's prompts come first
            streaming, self._streaming = self._streaming, None
            await streaming.finished.wait()
            if streaming.broken is not None:
                raise WorkerGone(f"a call's prompts could not be read: {streaming.broken!r}")
        try:
            prefix = await stdout.readexactly(framing.PREFIX_SIZE)
            header_len, body_len = framing.parse_prefix(prefix, max_body=framing.MAX_CALL)
            header = framing.decode_header(await stdout.readexactly(header_len))
            if header["op"] == "call" and header_len + body_len > framing.MAX_CALL:
                raise framing.FrameError(
                    f"a call of {header_len + body_len} bytes exceeds {framing.MAX_CALL}"
                )
            if body_len:  # a call's prompts: each read and decoded on its own
                layout = framing.text_layout(header, body_len)
                for number, (name, lengths, single) in enumerate(layout, 1):
                    if number == len(layout) and header.get("fn") == "llm_query_batched":
                        # the last in the body: left in the pipe until each is sent
                        streamed = StreamedTexts(
                            lengths,
                            functools.partial(_read_text, stdout),
                            functools.partial(_skip, stdout),
                        )
                        header["args"][name] = self._streaming = streamed
                        break
                    texts = [await _read_text(stdout, n) for n in lengths]
                    header["args"][name] = texts[0] if single else texts
            return header
        except asyncio.IncompleteReadError:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), 1.0)
            raise WorkerGone(self._death_note()) from None
        except framing.FrameError as exc:
            raise WorkerGone(f"the worker sent malformed data on its channel ({exc})") from None

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            self._stderr_tail = (self._stderr_tail + chunk)[-STDERR_TAIL:]

    def _death_note(self) -> str:
        code = self.proc.returncode if self.proc else None
        tail = self._stderr_tail.decode("utf-8", "replace").strip().splitlines()
        last = f": {tail[-1][:300]}" if tail else ""
        how = f"exit code {code}" if code is not None else "its channel closed"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                how = f"killed by {signal.Signals(-code).name}"
        elif code is not None and 128 < code < 160 and self.name != "subprocess":
            with contextlib.suppress(ValueError):  # a wrapper reports a signal as 128 + N
                how = f"exit code {code}: killed by {signal.Signals(code - 128).name}"
        return f"the worker process ended ({how}){last}"

    # ---- running code ------------------------------------------------------------------------
    async def execute(self, code: str, handler: CallHandler) -> BlockResult:
        told, self._told = self._told, None
        if self.proc is None or self.proc.returncode is not None:
            if self.proc is not None:  # it ended between blocks (a CPU limit, a stray thread)
                died = f"{self._death_note()}; it was restarted: every variable was lost"
                told = f"before this block, {died}; context is reloaded"
            await self._restart()
        self._exec_id += 1
        exec_id = self._exec_id
        pending: set[asyncio.Task[None]] = set()
        try:
            await self._send(
                {"op": "exec", "id": exec_id, "code": code, "timeout": self.cell_timeout}
            )
            result = await self._collect(exec_id, handler, pending)
            if told and not result.restarted:
                result.restarted = told
            return result
        except WorkerGone as exc:
            await self._restart()
            return BlockResult(
                error=str(exc),
                restarted="the worker was restarted: every variable was lost; context is reloaded",
            )
        finally:
            for task in pending:
                task.cancel()
            if pending:  # a child RLM ends, and says so, before the caller of this block goes on
                await asyncio.wait(set(pending), timeout=CANCEL_WAIT)

    async def _collect(
        self, exec_id: int, handler: CallHandler, pending: set[asyncio.Task[None]]
    ) -> BlockResult:
        """Read frames until the block's result, serving its calls as they come.

        The worker interrupts its own block at `cell_timeout` (its clock stops while it
        waits on our calls). This side keeps the same clock plus a grace period, stopped
        while calls are pending: a block that ignores the interrupt is killed with its worker.
        """
        loop = asyncio.get_running_loop()
        remaining = self.cell_timeout + self.interrupt_grace
        scope = asyncio.timeout_at(loop.time() + remaining)
        inside = [True]
        frames = 0

        def call_done(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            if not pending and inside[0] and not scope.expired():
                scope.reschedule(loop.time() + remaining)

        try:
            async with scope:
                while True:
                    header = await self._read()
                    op = header.get("op")
                    if op == "call":
                        while len(pending) >= MAX_CALLS_IN_FLIGHT:  # the worker waits
                            await asyncio.wait(set(pending), return_when=asyncio.FIRST_COMPLETED)
                        if not pending:  # the clock stops while the host works for the block
                            when = scope.when()
                            remaining = max((when or loop.time()) - loop.time(), 0.0)
                            scope.reschedule(None)
                        task = asyncio.create_task(self._serve_call(header, handler))
                        pending.add(task)
                        task.add_done_callback(call_done)
                    elif op == "result" and header.get("id") == exec_id:
                        try:
                            return received.block_result(header, self.max_output)
                        except received.Malformed as exc:
                            raise WorkerGone(str(exc)) from None
                    frames += 1
                    if frames > MAX_FRAMES_PER_BLOCK:
                        raise WorkerGone(
                            f"the worker sent more than {MAX_FRAMES_PER_BLOCK:,} frames in one "
                            "block (calls included)"
                        )
        except TimeoutError:
            if not scope.expired():
                raise
        finally:
            inside[0] = False
        await self._restart()
        return BlockResult(
            error=(
                f"TimeoutError: the block ran past its {self.cell_timeout:g} s "
                "limit and ignored the interrupt, so its worker was killed"
            ),
            restarted="every variable was lost; context is reloaded",
        )

    async def _serve_call(self, header: dict[str, Any], handler: CallHandler) -> None:
        streamed = header["args"].get("prompts") if isinstance(header.get("args"), dict) else None
        try:
            reply = await reply_for(header, handler)
            if isinstance(streamed, StreamedTexts):
                await streamed.finish()  # before the reply: the worker is still writing
        except asyncio.CancelledError as exc:
            if isinstance(streamed, StreamedTexts):
                streamed.abandon(exc)
            raise
        except (asyncio.IncompleteReadError, framing.FrameError, OSError):
            return  # the channel broke mid-call: the block's reader reports the worker gone
        with contextlib.suppress(WorkerGone):
            await self._send(reply)

    async def add(
        self, payload: ContextPayload, variables: dict[str, Any] | None = None
    ) -> str | None:
        """Give the live REPL more contexts and/or restored variables (like `history`).

        The caller first extends what `start`'s payload function returns: every (re)start
        builds the worker from it. A worker that ended, or that cannot see the new contexts'
        files (bwrap and docker bind host paths only as a worker starts), is replaced here
        by one started from it, so with every context and the union of their paths bound;
        the model's own variables are lost: the returned note says why, and so does the
        next block's result."""
        if self.proc is None or self.proc.returncode is not None:
            why = self._death_note() if self.proc is not None else "the worker was not running"
        elif self._unseen(payload):
            why = (
                f"a new context's files were out of the worker's sight ({self.name} shows it "
                "only the host paths bound when it starts)"
            )
        else:
            try:
                await self._hand(payload, variables or {})
                return None
            except WorkerGone as exc:  # it ended since the last block; nobody has looked
                why = str(exc)
        await self._restart()
        if unseen := self._unseen(payload):
            raise SandboxError(f"the restarted worker still cannot see {', '.join(unseen)}")
        self._told = (
            f"before this block, {why}, so the worker was restarted: every variable you "
            "made before was lost; every context and `history` are reloaded"
        )
        try:  # the new worker got every context from the payload function: variables only
            await self._hand(ContextPayload(), variables or {})
        except WorkerGone as exc:
            raise SandboxError(f"could not hand the worker its new contexts: {exc}") from None
        return why

    async def _hand(self, payload: ContextPayload, variables: dict[str, Any]) -> None:
        """One `add` exchange; WorkerGone when the worker is gone or broke the protocol."""
        await self._send({"op": "add", "contexts": payload.specs, "vars": variables}, payload.body)
        try:
            reply = await asyncio.wait_for(self._read(), self.cell_timeout)
        except TimeoutError:
            raise SandboxError("the worker did not take its new contexts in time") from None
        if reply.get("op") != "added":
            raise WorkerGone(f"the worker answered {reply.get('op')!r} to add")

    def _unseen(self, payload: ContextPayload) -> list[str]:
        """The host paths of `payload` that the running worker cannot read."""
        if not self.binds_paths:
            return []
        return [p for p in payload.host_paths() if not _within(p, self.bound)]

    async def get_value(self, name: str) -> dict[str, Any] | None:
        try:
            await self._send({"op": "get", "name": name})
            reply = await asyncio.wait_for(self._read(), self.cell_timeout)
        except (WorkerGone, TimeoutError):
            return None
        return received.value_reply(reply)


async def reply_for(header: dict[str, Any], handler: CallHandler) -> dict[str, Any]:
    """Serve one `call` frame: the `reply` frame for it, also when the handler failed."""
    call_id = header.get("id")
    fn = str(header.get("fn", ""))
    args = given if isinstance(given := header.get("args"), dict) else {}
    try:
        value = await handler(fn, args)
        return {"op": "reply", "id": call_id, "ok": True, "value": value}
    except BudgetExceeded as exc:
        return _error_reply(call_id, "BudgetExceeded", str(exc))
    except (TypeError, ValueError) as exc:
        return _error_reply(call_id, type(exc).__name__, str(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return _error_reply(call_id, "LLMQueryError", f"{type(exc).__name__}: {exc}")


async def _skip(stream: asyncio.StreamReader, size: int) -> None:
    while size:
        size -= len(await stream.readexactly(min(size, 1 << 20)))


async def _read_text(stream: asyncio.StreamReader, size: int) -> str:
    try:
        return (await stream.readexactly(size)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise framing.FrameError(f"a call's text is not UTF-8: {exc}") from None


def _within(path: str, roots: list[str]) -> bool:
    """Whether `path` is one of `roots` or lies under one (a file of a bound directory)."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _error_reply(call_id: Any, error_type: str, message: str) -> dict[str, Any]:
    return {"op": "reply", "id": call_id, "ok": False, "error_type": error_type, "message": message}


def _descendants(root: int) -> list[int]:
    """Every live descendant of `root`, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def _argv0(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0", 1)[0]
    except OSError:
        return b""


def _tree(root: int) -> list[int]:
    """The descendants of `root`, from /proc/PID/task/PID/children (a few reads), or from a
    scan of /proc where the kernel lacks that file."""
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                kids = [int(k) for k in fh.read().split()]
        except FileNotFoundError:
            return _descendants(root)
        except (OSError, ValueError):
            continue
        found.extend(kids)
        todo.extend(kids)
    return found


def _kill_descendants(root: int) -> None:
    for _ in range(5):  # again, for processes forked while we were killing
        pids = _descendants(root) if os.path.isdir("/proc") else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not pids:
            return


def _kill_group(proc: asyncio.subprocess.Process, cgroup: limits.Cgroup | None = None) -> None:
    """End the worker and everything it started: its process group, any descendant that
    left the group (the worker is their subreaper, so they stay in its tree), and anything
    left in its cgroup. Once the worker is reaped its pid may belong to another process, so
    its descendants are looked up only while it lives; its process group stays safe to
    signal (the kernel reissues no number still in use as a group id)."""
    if proc.returncode is None:
        _kill_descendants(proc.pid)
    if cgroup is not None:
        cgroup.kill_all()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def kill_all_live() -> None:
    """Last resort at interpreter exit: no worker outlives the host process."""
    for sandbox in list(_LIVE):
        sandbox.kill_now()
