"""`recursa batch`: the command over `recursa.batch` (the questions file, resume, the
results) and `recursa.executors` (where the questions run)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from .options import option, program_for, renamed, run_options
from .output import EXIT_ERROR, EXIT_LIMIT, EXIT_OK, LIMIT_STATUSES

_NOT_FOR_BATCH = frozenset(
    {"concurrency", "trace_path", "trace_format", "trace_context", "otel", "no_store", "as_json"}
)
"""Run options that mean something else in a batch, or nothing: the batch's --jobs
counts questions, and its own --lm-concurrency is the per-run one without the old
--concurrency alias, which in a batch still means --jobs, and traces go to
--trace-dir, one per question."""


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
    from ..batch import BatchConfig, plan, run_batch
    from ..options import make_program

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
    program_for(opts)  # and so does a bad option

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

    summary = run_batch(config, functools.partial(make_program, opts), on_result=report)
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
        return EXIT_ERROR
    if any(s in LIMIT_STATUSES for s in statuses):
        return EXIT_LIMIT
    return EXIT_OK


def _command() -> click.Command:
    """`batch` with the shared run options but those `_NOT_FOR_BATCH`, and its own."""
    func = run_options(batch)
    attrs = vars(func)  # click keeps a function's options in its `__click_params__`
    attrs["__click_params__"] = [
        p for p in attrs["__click_params__"] if p.name not in _NOT_FOR_BATCH
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


batch_command = _command()
