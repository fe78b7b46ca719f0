"""`recursa batch`: many questions over shared or separate contexts, results as JSON lines.

Each line of the questions file is `{"id": ..., "question": ..., "context": PATH | [PATH,
...]}` ("context" optional: without it the batch's shared `--context` paths are used;
relative paths in a line are read from the questions file's folder). Each question is one
run of its own RLM; `concurrency` of them run at once, on this machine (the `local`
executor) or as tasks on a Ray cluster (`ray`, see `recursa.ray_executor`).

A path a line names that cannot be read makes that question's result an error (the batch
goes on); a missing shared `--context` path is refused before anything runs.

Results are appended to the output file as each question finishes, one JSON object a line
(`id`, `question`, `contexts`, `answer`, `status`, `iterations`, `usage`, `run_id`,
`error`, `wall_s`, `executor`, `finished_at`). With `resume` (`--resume`) a rerun with the
same output skips the ids already there (with `retry_errors`, which implies it, those whose
last result is an error run again), so an interrupted batch resumes where it stopped; without
it an output that already holds results is refused, as `recursa eval` does, so that a fresh
batch never mixes in old results. An interruption (Ctrl-C, SIGTERM) keeps every finished
result and ends the runs in flight with their workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .core.status import LIMIT_STATUSES
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


@dataclass(slots=True)
class BatchConfig:
    questions: Path
    out: Path
    contexts: tuple[str, ...] = ()
    """Shared context paths, for the lines that name none."""
    concurrency: int = 4
    """Questions at once."""
    executor: str = "local"
    ray_address: str | None = None
    resume: bool = False
    """Skip the ids already answered in `out`; without it such an `out` is refused."""
    retry_errors: bool = False
    """Resume, running again the ids whose last result is an error."""
    mmap_threshold: int | None = None
    trace_dir: Path | None = None
    """Write each question's trace to TRACE_DIR/<id>.jsonl (on the node that runs it)."""
    progress: bool = True

    def __post_init__(self) -> None:
        self.questions, self.out = Path(self.questions), Path(self.out)
        if self.executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.executor!r}: choose local or ray")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")


@dataclass(slots=True)
class BatchSummary:
    out: Path
    total: int = 0
    skipped: int = 0
    ran: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.ran:
            counts[record["status"]] = counts.get(record["status"], 0) + 1
        return counts


# ---- reading the files ------------------------------------------------------------------------


def load_questions(path: Path, shared: tuple[str, ...] = ()) -> list[BatchItem]:
    """Every question of a questions file, checked: ids unique, questions text."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    base = Path(path).resolve().parent
    shared_abs = tuple(str(Path(p).resolve()) if p != "-" else p for p in shared)
    if "-" in shared_abs:
        raise ConfigError("a batch cannot read a context from standard input")
    items: list[BatchItem] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number}: expected an object with id and question")
        ident, question = row.get("id"), row.get("question")
        if isinstance(ident, bool) or not isinstance(ident, str | int):
            raise ConfigError(f"{path}:{number}: `id` must be a string or a whole number")
        if not isinstance(question, str) or not question.strip():
            raise ConfigError(f"{path}:{number}: `question` must be a non-empty string")
        if str(ident) in seen:
            raise ConfigError(f"{path}:{number}: id {ident!r} appears twice")
        seen.add(str(ident))
        given = row.get("context")
        if given is None:
            contexts = shared_abs
        else:
            paths = [given] if isinstance(given, str) else given
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ConfigError(f"{path}:{number}: `context` must be a path or a list of paths")
            contexts = tuple(str((base / p).resolve()) for p in paths)
        items.append(BatchItem(ident, question, contexts))
    return items


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """The last complete result of each id in a results file (a line cut short is skipped)."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "id" in record and "status" in record:
                done[str(record["id"])] = record
    return done


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

    def __init__(self, factory: RLMFactory, config: BatchConfig) -> None:
        self.factory = factory
        self.config = config
        self.loaded: dict[str, Context] = {}
        """Contexts loaded once and shared by the questions that name them."""

    async def answer(self, item: BatchItem) -> dict[str, Any]:
        return await answer_one(
            self.factory,
            item,
            mmap_threshold=self.config.mmap_threshold,
            trace_dir=self.config.trace_dir,
            loaded=self.loaded,
        )

    async def aclose(self) -> None:
        self.loaded.clear()


def make_executor(factory: RLMFactory, config: BatchConfig) -> Executor:
    if config.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(factory, config)
    return LocalExecutor(factory, config)


# ---- the batch --------------------------------------------------------------------------------


def plan(config: BatchConfig) -> tuple[list[BatchItem], list[BatchItem]]:
    """(every question, those still to run): an id with a result in `config.out` is done,
    unless `retry_errors` and its last result is an error. Results there without `resume`
    (or `retry_errors`) are refused."""
    items = load_questions(config.questions, config.contexts)
    if config.executor == "local":  # a shared path is the command's: a usage error
        for shared in config.contexts:
            if not Path(shared).exists():
                raise ConfigError(f"context path not found: {shared}")
    done = load_results(config.out)
    if done and not (config.resume or config.retry_errors):
        raise ConfigError(
            f"{config.out} already holds {len(done)} results: pass --resume to go on from "
            "them, or choose another --out"
        )
    if config.retry_errors:
        done = {k: r for k, r in done.items() if r.get("status") != "error"}
    return items, [item for item in items if item.key not in done]


async def arun_batch(
    config: BatchConfig,
    factory: RLMFactory,
    *,
    on_result: Callable[[dict[str, Any], int, int], None] | None = None,
) -> BatchSummary:
    """Run the questions not yet answered in `config.out`, appending each result as it
    finishes. Cancelled, it stops the runs in flight; the results written stay."""
    items, todo = plan(config)
    summary = BatchSummary(out=config.out, total=len(items), skipped=len(items) - len(todo))
    if not todo:
        return summary
    config.out.parent.mkdir(parents=True, exist_ok=True)
    executor = make_executor(factory, config)
    limit = asyncio.Semaphore(config.concurrency)
    try:
        with config.out.open("a", encoding="utf-8") as out:
            if out.tell() > 0 and not _ends_with_newline(config.out):
                out.write("\n")  # a line cut short by a crash stays alone on its line

            async def one(item: BatchItem) -> None:
                async with limit:
                    record = await executor.answer(item)
                out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                out.flush()
                summary.ran.append(record)
                if on_result is not None:
                    on_result(record, len(summary.ran), len(todo))

            tasks = [asyncio.create_task(one(item)) for item in todo]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
    finally:
        await asyncio.shield(executor.aclose())
    return summary


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def run_batch(
    config: BatchConfig,
    factory: RLMFactory,
    *,
    on_result: Callable[[dict[str, Any], int, int], None] | None = None,
) -> BatchSummary:
    """`arun_batch` from sync code, with SIGINT and SIGTERM stopping it cleanly: the
    summary then has `interrupted` set and holds the results finished before."""
    from .sandbox.process import kill_all_live

    ran: list[dict[str, Any]] = []

    def collect(record: dict[str, Any], n: int, total: int) -> None:
        ran.append(record)
        if on_result is not None:
            on_result(record, n, total)

    async def main() -> BatchSummary:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, task.cancel)
        return await arun_batch(config, factory, on_result=collect)

    items, todo = plan(config)
    try:
        return asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        kill_all_live()
        skipped = len(items) - len(todo)
        return BatchSummary(config.out, len(items), skipped, ran, interrupted=True)


# ---- the command ------------------------------------------------------------------------------

_NOT_FOR_BATCH = frozenset(
    {"concurrency", "trace_path", "trace_context", "otel", "no_store", "as_json"}
)
"""Run options that mean something else in a batch, or nothing: the batch's --jobs
counts questions, and its own --lm-concurrency is the per-run one without the old
--concurrency alias, which in a batch still means --jobs, and traces go to
--trace-dir, one per question."""


def make_batch_command(run_options: Callable[..., Any], make_rlm: Callable[..., RLM]) -> Any:
    """The `batch` click command, given the CLI's shared run options and its RLM builder
    (passed in, so that this module does not import the CLI)."""
    import functools

    import click

    from .cli_options import option, renamed

    def batch(
        questions: str,
        out_path: str,
        context_paths: tuple[str, ...],
        jobs: int,
        lm_concurrency: int,
        executor: str,
        ray_address: str | None,
        resume: bool,
        retry_errors: bool,
        mmap_threshold: int | None,
        trace_dir: str | None,
        **opts: Any,
    ) -> int:
        """Answer every question of QUESTIONS (JSON lines: id, question, context) and
        append the results to --out as they finish; rerun with --resume to go on."""

        if not opts.get("model"):
            raise ConfigError("no model: pass --model PROVIDER/MODEL or set RECURSA_MODEL")
        opts = {**opts, "concurrency": lm_concurrency}
        config = BatchConfig(
            questions=Path(questions),
            out=Path(out_path),
            contexts=context_paths,
            concurrency=jobs,
            executor=executor,
            ray_address=ray_address,
            resume=resume,
            retry_errors=retry_errors,
            mmap_threshold=mmap_threshold,
            trace_dir=Path(trace_dir) if trace_dir else None,
            progress=not opts.get("quiet"),
        )
        plan(config)  # a bad questions file fails here, before anything starts
        make_rlm(opts)  # and so does a bad option

        def report(record: dict[str, Any], n: int, total: int) -> None:
            if config.progress:
                answer = record.get("answer")
                shown = answer if isinstance(answer, str) else json.dumps(answer)
                shown = " ".join(str(shown).split())
                click.echo(
                    f"recursa batch: [{n}/{total}] {record['id']}: {record['status']} "
                    f"({record.get('wall_s', 0):.1f} s) {shown[:80]}",
                    err=True,
                )

        summary = run_batch(config, functools.partial(make_rlm, opts), on_result=report)
        statuses = summary.statuses()
        counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none ran"
        click.echo(
            f"recursa batch: {summary.total} questions: {len(summary.ran)} ran ({counts}), "
            f"{summary.skipped} already in {summary.out}",
            err=True,
        )
        click.echo(f"results: {summary.out}")
        if summary.interrupted:
            click.echo(
                "recursa batch: interrupted; the finished results are kept: run the same "
                "command again with --resume to go on",
                err=True,
            )
            return 130
        if statuses.get("error"):
            return 1
        if any(s in LIMIT_STATUSES for s in statuses):
            return 3
        return 0

    func = run_options(batch)
    func.__click_params__ = [  # type: ignore[attr-defined]
        p for p in func.__click_params__ if p.name not in _NOT_FOR_BATCH
    ]
    own = [
        click.argument("questions", type=click.Path(dir_okay=False)),
        click.option(
            "--out", "out_path", required=True, metavar="FILE", help="Results (JSON lines)."
        ),
        click.option(
            "--context",
            "context_paths",
            multiple=True,
            metavar="PATH",
            help="Shared context(s) for the questions that name none (repeatable).",
        ),
        renamed(
            "--jobs",
            "jobs",
            old="--concurrency",
            type=click.IntRange(min=1),
            default=4,
            show_default=True,
            help="Questions at once (each is one run with its own sandbox worker).",
        ),
        click.option(
            "--lm-concurrency",
            type=click.IntRange(min=1),
            default=16,
            show_default=True,
            help="LM requests in flight per question.",
        ),
        option("executor"),
        option("ray_address"),
        click.option(
            "--resume",
            is_flag=True,
            help="Go on from the results already in --out, skipping their ids (without it, "
            "an --out holding results is refused).",
        ),
        click.option(
            "--retry-errors",
            is_flag=True,
            help="Resume, running again the ids whose result is an error.",
        ),
        option("mmap_threshold"),
        click.option("--trace-dir", metavar="DIR", help="One trace per question: DIR/<id>.jsonl."),
    ]
    for decorator in reversed(own):
        func = decorator(func)
    return click.command("batch")(func)
