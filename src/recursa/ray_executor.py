"""`--executor ray`: batch questions and eval jobs as tasks on a Ray cluster (extra:
`pip install 'recursa[ray]'`).

Each question (or eval job) is one Ray task that builds its own program on the node that
runs it, loads its contexts there (the paths must exist on every node: a shared file
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
import warnings
from collections.abc import Callable
from typing import Any

from .batch import BatchConfig, BatchItem, RLMFactory, answer_one
from .errors import ConfigError

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
    from pathlib import Path

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

    def __init__(self, factory: RLMFactory, config: BatchConfig) -> None:
        self.factory = factory
        self.config = config
        self.tasks = RayTasks(_run_question, config.ray_address)

    async def answer(self, item: BatchItem) -> dict[str, Any]:
        trace_dir = str(self.config.trace_dir) if self.config.trace_dir else None
        try:
            return await self.tasks.call(
                self.factory, item.to_dict(), self.config.mmap_threshold, trace_dir
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
