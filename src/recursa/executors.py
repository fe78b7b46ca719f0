"""Where batch questions and eval jobs run: `local` (this process's event loop) or `ray`
(each one a task on a Ray cluster; extra: `pip install 'recursa[ray]'`). Used by
`recursa batch` (`recursa.batch`) and `recursa eval` (`recursa.evals.harness`).

On Ray, each question (or eval job) is one task that builds its own program on the node
that runs it, loads its contexts there (the paths must exist on every node: a shared file
system, or a cluster of one machine), runs, and returns its result line; the driver writes
the lines as they come back, so resume and interruption work as with the local executor.
A cancelled task is cancelled with `force=True`: its Ray worker is killed, and its sandbox
worker with it (PR_SET_PDEATHSIG).

Without an address (`--ray-address`, RAY_ADDRESS) a local Ray instance is started whose
servers listen on 127.0.0.1 only, and stopped at the end. Model keys: a task sees the
environment of the Ray worker that runs it (for a local instance, this process's); on a
remote cluster, set them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    from .context import Context
    from .core.programs import RLM

RLMFactory = Callable[[], "RLM"]
"""Builds the program for one question. It must pickle (a module-level function, or a
functools.partial of one) to run on Ray."""
EXECUTORS = ("local", "ray")


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One question: its id, its text, and the paths of its contexts (absolute)."""

    id: str | int
    question: str
    contexts: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return str(self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "contexts": list(self.contexts)}


# ---- one question -----------------------------------------------------------------------------


async def answer_one(
    factory: RLMFactory,
    item: BatchItem,
    *,
    mmap_threshold: int | None = None,
    trace_dir: Path | None = None,
    executor: str = "local",
    loaded: dict[str, Context] | None = None,
) -> dict[str, Any]:
    """Run one question; its result line (a failure is a result with status `error`)."""
    from .context import from_path
    from .trace.jsonl import JsonlTrace

    started = time.perf_counter()
    record: dict[str, Any] = item.to_dict()
    trace = None
    try:
        rlm = factory()
        contexts = []
        for p in item.contexts:
            ctx = loaded.get(p) if loaded is not None else None
            if ctx is None:
                ctx = await asyncio.to_thread(from_path, p, mmap_threshold=mmap_threshold)
                if loaded is not None:
                    loaded[p] = ctx
            contexts.append(ctx)
        if trace_dir is not None:
            Path(trace_dir).mkdir(parents=True, exist_ok=True)
            trace = JsonlTrace(Path(trace_dir) / f"{_safe(item.key)}.jsonl")
        one = contexts[0] if len(contexts) == 1 else None
        result = await rlm.arun(
            item.question, one, contexts=contexts if len(contexts) > 1 else None, on_event=trace
        )
        data = result.to_dict()
        record.update(
            answer=data["answer"],
            status=data["status"],
            iterations=data["iterations"],
            usage=data["usage"],
            run_id=data["run_id"],
            error=data.get("error"),
        )
    except Exception as exc:  # a question that fails is a result, not the end of the batch
        text = " ".join(str(exc).split()) or type(exc).__name__
        record.update(answer=None, status="error", iterations=0, usage={}, run_id="", error=text)
    finally:
        if trace is not None:
            trace.close()
    record["wall_s"] = round(time.perf_counter() - started, 3)
    record["executor"] = executor
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return record


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120] or "_"


# ---- executors --------------------------------------------------------------------------------


class Executor(Protocol):
    name: str

    async def answer(self, item: BatchItem) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class LocalExecutor:
    """Every question in this process's event loop (each RLM has its own worker)."""

    name = "local"

    def __init__(
        self,
        factory: RLMFactory,
        *,
        mmap_threshold: int | None = None,
        trace_dir: Path | None = None,
    ) -> None:
        self.factory = factory
        self.mmap_threshold = mmap_threshold
        self.trace_dir = trace_dir
        self.loaded: dict[str, Context] = {}
        """Contexts loaded once and shared by the questions that name them."""

    async def answer(self, item: BatchItem) -> dict[str, Any]:
        return await answer_one(
            self.factory,
            item,
            mmap_threshold=self.mmap_threshold,
            trace_dir=self.trace_dir,
            loaded=self.loaded,
        )

    async def aclose(self) -> None:
        self.loaded.clear()


def make_executor(
    kind: str,
    factory: RLMFactory,
    *,
    mmap_threshold: int | None = None,
    trace_dir: Path | None = None,
    ray_address: str | None = None,
) -> Executor:
    """The executor `kind` (one of EXECUTORS) running questions with `factory`'s programs."""
    if kind == "ray":
        return RayExecutor(
            factory, mmap_threshold=mmap_threshold, trace_dir=trace_dir, address=ray_address
        )
    if kind != "local":
        raise ConfigError(f"unknown executor {kind!r}: choose local or ray")
    return LocalExecutor(factory, mmap_threshold=mmap_threshold, trace_dir=trace_dir)


# ---- Ray ----------------------------------------------------------------------------------------

LOCALHOST = "127.0.0.1"
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray reads it at import: "0" makes a Linux node take 127.0.0.1 as its address (and bind
its servers there) instead of its network address, as Ray does on macOS and Windows."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, which is not installed: pip install 'recursa[ray]'"
        ) from None
    return ray


def start_local_ray(num_cpus: int | None = None, **options: Any) -> Any:
    """Start a local Ray instance listening on 127.0.0.1 only; returns the `ray` module.
    Best before `ray` is first imported (Ray reads the switch at import time)."""
    os.environ[_LOCAL_ONLY_ENV] = "0"
    ray = import_ray()
    with contextlib.suppress(Exception):  # imported earlier: set what it read at import
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address=LOCALHOST,
        log_to_driver=False,
        **options,
    )
    return ray


def node_address() -> str | None:
    """The address of the Ray node running the caller (None outside Ray)."""
    with contextlib.suppress(Exception):
        import ray

        return str(ray.util.get_node_ip_address())
    return None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, in one line, when nothing listens at a cluster's `host:port` (or
    `ray://host:port`): Ray itself retries an unreachable address for minutes."""
    import socket
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    where = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = where.hostname, where.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise ConfigError(f"bad Ray address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}"
        ) from None


def join_cluster(ray: Any, address: str) -> None:
    """Join the cluster at `address`; any failure (nothing listening, no Ray there, Ray's
    client part missing for `ray://`) is one line, not Ray's traceback and warnings."""
    check_reachable(address)
    client = address.startswith("ray://")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # log_to_driver is a driver setting: a client would pass it on to the server
            ray.init(address=address, **({} if client else {"log_to_driver": False}))
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if client and "ray[client]" in text:
            text = "Ray's client part is not installed: pip install 'recursa[ray]'"
        raise ConfigError(f"cannot join the Ray cluster at {address}: {text}") from None


class RayTasks:
    """A connection to a Ray cluster (joined at `address`, the one this process already
    has, or a local one started here and stopped by `aclose`) that runs one function as
    tasks of one CPU each, awaited from asyncio and killed when the awaiting is cancelled."""

    def __init__(self, function: Callable[..., Any], address: str | None = None) -> None:
        self.started = False
        ray = import_ray()
        if not ray.is_initialized():
            if address:
                join_cluster(ray, address)
            else:
                start_local_ray()
                self.started = True
        self.ray = ray
        self.task = ray.remote(num_cpus=1, max_retries=0)(function)

    async def call(self, *args: Any) -> Any:
        """Run the function on the cluster with `args`; its exception if the task failed."""
        ref = self.task.remote(*args)
        try:
            return await asyncio.wrap_future(ref.future())
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
            raise

    async def aclose(self) -> None:
        if self.started:
            self.started = False
            await asyncio.to_thread(self.ray.shutdown)


def task_failure(exc: BaseException) -> str:
    """One line for a task that failed as a task (its worker died, it could not unpickle,
    it raised): the cause, not Ray's traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = " ".join(str(exc).split())[:2000]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _run_question(
    factory: RLMFactory,
    item: dict[str, Any],
    mmap_threshold: int | None,
    trace_dir: str | None,
) -> dict[str, Any]:
    """The Ray task: one question, start to end, on whichever node runs it."""
    batch_item = BatchItem(item["id"], item["question"], tuple(item["contexts"]))
    record = asyncio.run(
        answer_one(
            factory,
            batch_item,
            mmap_threshold=mmap_threshold,
            trace_dir=Path(trace_dir) if trace_dir else None,
            executor="ray",
        )
    )
    record["node"] = node_address()
    return record


class RayExecutor:
    """Batch questions as Ray tasks, at most `concurrency` in flight (the batch's semaphore)."""

    name = "ray"

    def __init__(
        self,
        factory: RLMFactory,
        *,
        mmap_threshold: int | None = None,
        trace_dir: Path | None = None,
        address: str | None = None,
    ) -> None:
        self.factory = factory
        self.mmap_threshold = mmap_threshold
        self.trace_dir = trace_dir
        self.tasks = RayTasks(_run_question, address)

    async def answer(self, item: BatchItem) -> dict[str, Any]:
        trace_dir = str(self.trace_dir) if self.trace_dir else None
        try:
            return await self.tasks.call(
                self.factory, item.to_dict(), self.mmap_threshold, trace_dir
            )
        except Exception as exc:
            record = item.to_dict()
            record.update(
                answer=None, status="error", iterations=0, usage={}, run_id="",
                error=task_failure(exc), wall_s=0.0, executor="ray",
            )  # fmt: skip
            return record

    async def aclose(self) -> None:
        await self.tasks.aclose()
