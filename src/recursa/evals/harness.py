"""Run tasks x strategies, save each result as a JSON line as it finishes, and resume.

Strategies:
- `direct`: one request with the whole context in the prompt (the paper's base model);
  when it cannot fit the model's window it is not sent and scores 0 (status `overflow`).
- `rlm`: the RLM at depth 1 (sub-queries are plain calls).
- `rlm-d2`: the RLM at depth 2 (`rlm_query` starts child RLMs with their own REPL).
- `rlm-nosub`: the RLM told, in its question, that it must answer with code alone; every
  sub-query it still sends is refused (an HTTP 400 the engine does not retry) and counted
  in `refused_sub_queries`. The paper's "RLM, no sub-calls" ablation.

A job is (task, strategy). Finished jobs are appended to `results.jsonl` at once, keyed by
(family, length, seed, strategy, model): a rerun with the same output directory skips the
keys already there when `resume` is set (`--resume`), so an interrupted eval resumes where
it stopped; without it, an output directory that already holds results is refused, so that a
fresh eval never mixes in old results. Identical LM requests
are answered from the SQLite response cache, so a rerun into a new directory is free too.

Executors: `local` runs the jobs in this process's event loop (a generated task is made once
and shared by its strategies); `ray` sends each job to a Ray cluster as a task that makes
its task, runs it and returns its result line (see `run_job_on_node`), while saving,
progress, resume and the report stay here. On Ray each node answers from its own cache file
at the configured path (one shared file on a single machine or a shared file system).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.gateway import ClientPool
from ..core.profile import BUILTIN, Profile
from ..core.programs import RLM
from ..errors import ConfigError
from ..executors import EXECUTORS
from ..lm.base import LMClient
from ..lm.models import parse_model
from ..options import make_program
from ..sandbox.process import kill_all_live
from ..trace.jsonl import JsonlTrace
from .cache import CachedClient, NoSubQueries, ResponseCache, RoutingClient
from .generators import FAMILIES, generate
from .names import DOCUMENT_FAMILIES, STRATEGIES
from .oracle import (
    NOSUB_NOTE,
    ORACLE_LABEL,
    ORACLE_MODEL,
    ORACLE_WINDOW,
    oracle_model,
    oracle_version,
    wrong_model,
)
from .tasks import PdfPages, RepoFiles, Task, format_length

RESULTS = "results.jsonl"
CACHE = "cache.sqlite"
ANSWER_LIMIT = 4000
"""Characters of an answer kept in a result line."""

Key = tuple[str, int, int, str, str]
ClientFactory = Callable[[Task], LMClient]


@dataclass(slots=True)
class EvalConfig:
    """What to run. With `oracle` set no model is used: `"oracle"` (the scripted oracle of
    each family) or `"wrong"` (answers "0" to everything). `client_factory` replaces the
    models in tests: a client per task, labelled `model_label`."""

    out: Path
    families: Sequence[str] = FAMILIES
    lengths: Sequence[int] = (8_000, 32_000)
    strategies: Sequence[str] = STRATEGIES
    seeds: Sequence[int] = (0,)
    model: str | None = None
    sub_model: str | None = None
    base_url: str | None = None
    oracle: str | None = None
    client_factory: ClientFactory | None = None
    model_label: str | None = None
    extra_tasks: Sequence[Task] = ()
    """Tasks loaded from real datasets, run with the same strategies."""
    concurrency: int = 2
    """Jobs at once (each RLM also runs its own sub-queries concurrently)."""
    cache: bool = True
    cache_path: Path | None = None
    max_iterations: int | None = None
    """None: the profile's (30 in the built-in one)."""
    profile: Profile | None = None
    """The controller profile every job runs with (None: the built-in one)."""
    trace_dir: Path | None = None
    """Where each job writes its trace (`<run_id>.jsonl`): `recursa tune` reflects on them."""
    max_llm_calls: int | None = None
    max_cost: float | None = None
    timeout: float | None = None
    sandbox: str = "auto"
    context_window: int | None = None
    plots: bool = True
    progress: bool = True
    executor: str = "local"
    """`local`, or `ray`: each job a task on a Ray cluster (extra: ray)."""
    ray_address: str | None = None
    """The Ray cluster to join; None starts a local one bound to 127.0.0.1."""
    resume: bool = False
    """Skip the jobs already in `out/results.jsonl`; without it such results are refused."""
    on_result: Callable[[dict[str, Any]], None] | None = None
    """Called with each new result once it is saved; raising in it stops the eval (the
    results saved so far stay, and a rerun with `resume` goes on after them)."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ConfigError(f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
        known = FAMILIES + DOCUMENT_FAMILIES
        unknown = [f for f in self.families if f not in known]
        if unknown:
            raise ConfigError(f"unknown task family {unknown[0]!r}; known: {', '.join(known)}")
        if self.oracle not in (None, "oracle", "wrong"):
            raise ConfigError(f"oracle must be 'oracle' or 'wrong', not {self.oracle!r}")
        if self.oracle and self.extra_tasks:
            raise ConfigError(
                "the oracle covers the generated families only: real datasets need a model"
            )
        if self.oracle is None and self.client_factory is None and not self.model:
            raise ConfigError("no model: pass --model PROVIDER/MODEL, or --oracle")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if not self.strategies:
            raise ConfigError("no strategies given")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.executor!r}: choose local or ray")

    @property
    def label(self) -> str:
        if self.oracle:
            return self.oracle
        if self.model_label:
            return self.model_label
        return str(self.model)


@dataclass(slots=True)
class Job:
    task_key: tuple[str, str]
    family: str
    length: int
    seed: int
    strategy: str
    make: Callable[[], Task]
    """Makes the task; it pickles (a partial of a module-level function) to run on Ray."""

    def key(self, model: str) -> Key:
        return (self.family, self.length, self.seed, self.strategy, model)


@dataclass(slots=True)
class EvalSummary:
    out: Path
    results: Path
    label: str
    records: list[dict[str, Any]] = field(default_factory=list)
    """Every result in the file, earlier runs included."""
    ran: list[dict[str, Any]] = field(default_factory=list)
    """The results this call added."""
    skipped: int = 0
    interrupted: bool = False
    report: Path | None = None
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def mean_score(self, strategy: str | None = None, family: str | None = None) -> float:
        rows = [
            r
            for r in self.records
            if r["model"] == self.label
            and (strategy is None or r["strategy"] == strategy)
            and (family is None or r["family"] == family)
        ]
        return sum(r["score"] for r in rows) / len(rows) if rows else 0.0


def record_key(record: dict[str, Any]) -> Key:
    return (
        record["family"],
        int(record["length"]),
        int(record["seed"]),
        record["strategy"],
        record["model"],
    )


def load_results(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a results file (a line cut off by a crash is skipped)."""
    if not path.exists():
        return []
    out = []
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
                record_key(record)
            except (ValueError, KeyError, TypeError):
                continue
            out.append(record)
    return out


def plan(config: EvalConfig) -> list[Job]:
    """Every job of the eval, grouped by task so that strategies share a generated task."""
    jobs: list[Job] = []
    for family in config.families:
        for length in config.lengths:
            for seed in config.seeds:
                for strategy in config.strategies:
                    jobs.append(
                        Job(
                            (family, f"{length}:{seed}"),
                            family,
                            length,
                            seed,
                            strategy,
                            functools.partial(generate, family, seed, length),
                        )
                    )
    for task in config.extra_tasks:
        for strategy in config.strategies:
            jobs.append(
                Job(
                    (task.family, task.id),
                    task.family,
                    task.length,
                    task.seed,
                    strategy,
                    functools.partial(_given, task),
                )
            )
    return jobs


def _given(task: Task) -> Task:
    return task


class _Tasks:
    """Generates each task once (in a thread), shares it between its strategies, and drops
    it (and its materialized directory) when the last of them is done."""

    def __init__(self, jobs: Iterable[Job], workdir: Path) -> None:
        self.remaining: dict[tuple[str, str], int] = {}
        for job in jobs:
            self.remaining[job.task_key] = self.remaining.get(job.task_key, 0) + 1
        self.ready: dict[tuple[str, str], asyncio.Task[tuple[Task, Any]]] = {}
        self.workdir = workdir

    async def acquire(self, job: Job) -> tuple[Task, Any]:
        pending = self.ready.get(job.task_key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(self._load, job))
            self.ready[job.task_key] = pending
        return await asyncio.shield(pending)

    def _load(self, job: Job) -> tuple[Task, Any]:
        task = job.make()
        context = task.context() if callable(task.context) else task.context
        if isinstance(context, RepoFiles | PdfPages):
            context = context.materialize(self.workdir / _safe(task.id))
        return task, context

    def release(self, job: Job) -> None:
        self.remaining[job.task_key] -= 1
        if self.remaining[job.task_key] > 0:
            return
        pending = self.ready.pop(job.task_key, None)
        if pending is not None and pending.done() and not pending.exception():
            _, context = pending.result()
            if isinstance(context, Path) and self.workdir in context.parents:
                folder = context if context.is_dir() else context.parent  # a PDF's own folder
                shutil.rmtree(folder, ignore_errors=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class _Models:
    """The client (and model names) each job runs with, and the response cache."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        self.cache: ResponseCache | None = None
        if config.cache:
            self.cache = ResponseCache(config.cache_path or config.out / CACHE)
        self.pool: ClientPool | None = None
        self.router: RoutingClient | None = None
        self.namespace = ""
        if config.oracle == "oracle":
            self.namespace = f"oracle:{oracle_version()}"
        elif config.oracle == "wrong":
            self.namespace = "wrong:1"
        elif config.client_factory is not None:
            self.namespace = f"factory:{config.label}"
        else:
            self._real(config)

    def _real(self, config: EvalConfig) -> None:
        assert config.model
        self.pool = ClientPool(base_url=config.base_url, base_url_for=config.model)
        routes: dict[str, LMClient] = {}
        endpoints = []
        for model in filter(None, (config.model, config.sub_model)):
            client, name = self.pool.get(model)  # ConfigError here: unknown provider, no key
            if name in routes and routes[name] is not client:
                raise ConfigError(
                    f"two models called {name!r} on different servers: use one of them"
                )
            routes[name] = client
            provider = parse_model(model).provider
            own = config.base_url if provider == self.pool.base_url_provider else None
            endpoints.append(f"{model}@{own or provider}")
        self.router = RoutingClient(routes)
        self.namespace = "model:" + ",".join(endpoints)

    @property
    def model(self) -> str:
        return ORACLE_MODEL if self.config.oracle else (self.config.model or "openai/scripted")

    @property
    def sub_model(self) -> str | None:
        return None if self.config.oracle else self.config.sub_model

    def client(self, task: Task) -> LMClient:
        if self.config.oracle == "oracle":
            return oracle_model(task.family)
        if self.config.oracle == "wrong":
            return wrong_model()
        if self.config.client_factory is not None:
            return self.config.client_factory(task)
        assert self.router is not None
        return self.router

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        if self.cache is not None:
            self.cache.close()


def _program(config: EvalConfig, models: _Models, strategy: str, client: LMClient) -> RLM:
    window = config.context_window or (ORACLE_WINDOW if config.oracle else None)
    opts = {
        "model": models.model,
        "strategy": "direct" if strategy == "direct" else "rlm",
        "sub_model": models.sub_model,
        "max_depth": 2 if strategy == "rlm-d2" else 1,
        "profile": config.profile,
        "max_llm_calls": config.max_llm_calls,
        "max_cost": config.max_cost,
        "timeout": config.timeout,
        "sandbox": config.sandbox,
        "context_window": window,
    }
    if config.max_iterations is not None:
        opts["max_iterations"] = config.max_iterations
    return make_program(opts, env={}, client=client)


async def _run_job(
    config: EvalConfig, models: _Models, job: Job, task: Task, context: Any
) -> dict[str, Any]:
    inner = models.client(task)
    cached = (
        CachedClient(inner, models.cache, models.namespace) if models.cache is not None else None
    )
    client: LMClient = cached or inner
    guard = NoSubQueries(client) if job.strategy == "rlm-nosub" else None
    question = task.question + (NOSUB_NOTE if guard else "")
    started = time.perf_counter()
    answer: Any = None
    status, error, iterations, usage, run_id = "error", None, 0, {}, ""
    profile = (config.profile or BUILTIN).id
    try:
        program = _program(config, models, job.strategy, guard or client)
        profile = program.profile.id
        result = await _traced(config, program, question, context)
        answer, status, error = result.answer, result.status, result.error
        iterations, usage, run_id = result.iterations, result.usage, result.run_id
    except ConfigError as exc:
        overflow = job.strategy == "direct" and "direct call needs" in str(exc)
        status = "overflow" if overflow else "error"
        error = " ".join(str(exc).split())
    except Exception as exc:  # a job that fails is a result, not the end of the eval
        error = f"{type(exc).__name__}: {exc}"
    wall = time.perf_counter() - started
    if isinstance(answer, str) and len(answer) > ANSWER_LIMIT:
        answer = answer[:ANSWER_LIMIT] + f"... [{len(answer):,} characters]"
    return {
        "family": task.family,
        "task_id": task.id,
        "length": task.length,
        "seed": task.seed,
        "strategy": job.strategy,
        "model": config.label,
        "sub_model": None if config.oracle else config.sub_model,
        "oracle": bool(config.oracle),
        "source": task.source,
        "paper": task.paper,
        "question": task.question,
        "expected": task.expected,
        "answer": answer,
        "score": task.score(answer) if answer is not None else 0.0,
        "status": status,
        "error": error,
        "iterations": iterations,
        "llm_calls": usage.get("llm_calls", 0),
        "input_tokens": usage.get("input_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "cost_usd": usage.get("cost_usd", 0.0),
        "cache_hits": cached.hits if cached else 0,
        "cache_misses": cached.misses if cached else 0,
        "refused_sub_queries": guard.refused if guard else 0,
        "context_chars": task.context_chars,
        "wall_s": round(wall, 3),
        "run_id": run_id,
        "profile": profile,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


async def _traced(config: EvalConfig, program: RLM, question: str, context: Any) -> Any:
    """Run `program`, writing its trace under `config.trace_dir` when one is set."""
    if config.trace_dir is None:
        return await program.arun(question, context)
    run_id = uuid.uuid4().hex[:12]
    config.trace_dir.mkdir(parents=True, exist_ok=True)
    trace = JsonlTrace(config.trace_dir / f"{run_id}.jsonl")
    try:
        return await program.arun(question, context, on_event=trace, run_id=run_id)
    finally:
        trace.close()


class _Stop(Exception):
    """`on_result` asked the eval to stop."""


class _Progress:
    """A bar on a terminal; one line per result otherwise (CI logs, pipes)."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.total = total
        self.done = 0
        self.bar: Any = None
        self.enabled = enabled and total > 0
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.bar.start()
            self.task = self.bar.add_task(f"eval ({label})", total=total)

    def advance(self, record: dict[str, Any]) -> None:
        self.done += 1
        if not self.enabled:
            return
        line = (
            f"[{self.done}/{self.total}] {record['family']} {format_length(record['length'])} "
            f"seed {record['seed']} {record['strategy']}: score {record['score']:.2f} "
            f"({record['status']}, {record['llm_calls']} calls, {record['wall_s']:.1f} s)"
        )
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=line)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _LocalJobs:
    """Every job in this event loop: tasks made once per (family, length, seed), one
    client pool and one response cache for all."""

    name = "local"

    def __init__(self, config: EvalConfig, jobs: list[Job]) -> None:
        self.config = config
        self.models = _Models(config)
        self.workdir = config.out / "contexts"
        self.tasks = _Tasks(jobs, self.workdir)

    async def answer(self, job: Job) -> dict[str, Any]:
        return await _answer(self.config, self.models, self.tasks, job)

    async def aclose(self) -> None:
        await self.models.aclose()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def _answer(config: EvalConfig, models: _Models, tasks: _Tasks, job: Job) -> dict[str, Any]:
    """One job's result line; a task that cannot be made is a result too, not the end."""
    try:
        task, context = await tasks.acquire(job)
    except Exception as exc:
        return _failed(config, job, _placeholder(job), f"{type(exc).__name__}: {exc}")
    try:
        return await _run_job(config, models, job, task, context)
    finally:
        tasks.release(job)


def run_job_on_node(config: EvalConfig, job: Job) -> dict[str, Any]:
    """The Ray task: make one job's task, run it and return its result line, with a client
    pool, a scratch folder and the response cache (at the configured path, on this node)
    of its own."""
    from ..executors import node_address

    async def main() -> dict[str, Any]:
        try:
            models = _Models(config)
        except ConfigError as exc:  # this node has no key for the model, ...
            return _failed(config, job, _placeholder(job), str(exc))
        workdir = Path(tempfile.mkdtemp(prefix="recursa-eval-"))
        try:
            return await _answer(config, models, _Tasks([job], workdir), job)
        finally:
            await models.aclose()
            shutil.rmtree(workdir, ignore_errors=True)

    record = asyncio.run(main())
    record["node"] = node_address()
    return record


class _RayJobs:
    """Every job a task on a Ray cluster; the config travels without what only the driver
    uses (the callback, the dataset tasks, which travel inside their jobs)."""

    name = "ray"

    def __init__(self, config: EvalConfig) -> None:
        from ..executors import RayTasks

        cache_path = (config.cache_path or config.out / CACHE).resolve()
        self.node_config = dataclasses.replace(
            config,
            out=config.out.resolve(),
            cache_path=cache_path,
            on_result=None,
            extra_tasks=(),
            progress=False,
        )
        self.tasks = RayTasks(run_job_on_node, config.ray_address)

    async def answer(self, job: Job) -> dict[str, Any]:
        from ..executors import task_failure

        try:
            return await self.tasks.call(self.node_config, job)
        except Exception as exc:  # the task failed as a task: a result, not the end
            return _failed(self.node_config, job, _placeholder(job), task_failure(exc))

    async def aclose(self) -> None:
        await self.tasks.aclose()


async def _run(config: EvalConfig, jobs: list[Job], summary: EvalSummary) -> None:
    executor: _LocalJobs | _RayJobs = (
        _RayJobs(config) if config.executor == "ray" else _LocalJobs(config, jobs)
    )
    limit = asyncio.Semaphore(config.concurrency)
    progress = _Progress(config.progress, len(jobs), config.label)
    stop: list[BaseException] = []

    async def one(job: Job, out: Any) -> None:
        async with limit:
            if stop:
                return
            record = await executor.answer(job)
        if stop:
            return
        record["executor"] = executor.name
        out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        out.flush()
        summary.ran.append(record)
        progress.advance(record)
        if config.on_result is not None:
            try:
                config.on_result(record)
            except BaseException as exc:
                stop.append(exc)
                raise _Stop(f"stopped by on_result: {exc!r}") from exc

    config.out.mkdir(parents=True, exist_ok=True)
    try:
        with summary.results.open("a", encoding="utf-8") as out:
            running = [asyncio.create_task(one(job, out)) for job in jobs]
            try:
                await asyncio.gather(*running)
            except BaseException:
                for pending in running:
                    pending.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                raise
    finally:
        progress.close()
        await asyncio.shield(executor.aclose())


def _placeholder(job: Job) -> Task:
    """The task of a job whose task could not be made, for its error line."""
    return Task(job.family, f"{job.family}-{job.length}", "", None, None, "exact",
                job.length, job.seed)  # fmt: skip


def _failed(config: EvalConfig, job: Job, task: Task, error: str) -> dict[str, Any]:
    return {
        "family": job.family, "task_id": task.id, "length": job.length, "seed": job.seed,
        "strategy": job.strategy, "model": config.label, "sub_model": config.sub_model,
        "oracle": bool(config.oracle), "source": task.source, "paper": None, "question": "",
        "expected": None, "answer": None, "score": 0.0, "status": "error", "error": error,
        "iterations": 0, "llm_calls": 0, "input_tokens": 0, "output_tokens": 0,
        "cost_usd": 0.0, "cache_hits": 0, "cache_misses": 0, "refused_sub_queries": 0,
        "context_chars": 0, "wall_s": 0.0, "run_id": "",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }  # fmt: skip


def run_eval(config: EvalConfig) -> EvalSummary:
    """Run every job (with `resume`, those not already in `config.out/results.jsonl`),
    then write the report.

    Interrupted (Ctrl-C, or `on_result` raising), it stops the running jobs, keeps what
    finished, writes the report of what there is and returns with `interrupted` set."""
    from .report import write_report

    results = config.out / RESULTS
    summary = EvalSummary(out=config.out, results=results, label=config.label)
    previous = load_results(results)
    if previous and not config.resume:
        raise ConfigError(
            f"{results} already holds {len(previous)} results: pass --resume to go on from "
            "them, or choose another --out"
        )
    done = {record_key(r) for r in previous}
    jobs = plan(config)
    todo = [job for job in jobs if job.key(config.label) not in done]
    summary.skipped = len(jobs) - len(todo)
    if todo:
        try:
            asyncio.run(_run(config, todo, summary))
        except (KeyboardInterrupt, asyncio.CancelledError, _Stop):
            kill_all_live()
            summary.interrupted = True
    summary.records = load_results(results)
    if summary.records:
        written = write_report(summary.records, config.out, plots=config.plots)
        summary.report, summary.plots, summary.notes = (
            written.markdown,
            written.plots,
            written.notes,
        )
    if config.oracle:
        summary.notes.insert(0, f"model: {ORACLE_LABEL}")
    return summary
