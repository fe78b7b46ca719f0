"""`recursa mine`, `recursa distill` and `recursa pipeline`: argument parsing and printing.

Registered on the main group by `recursa.cli.main`; exit codes are the
CLI's contract: 0 ok, 3 a limit stopped the pipeline, 2 usage or configuration, 1 other.
Only click and the CLI's options are imported here; the mining code loads when a command
runs, so that `recursa --help` does not pay for it.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigError
from .options import option
from .output import note_stdin, report

if TYPE_CHECKING:
    from ..events import Event, Listener


@click.command("mine")
@click.argument("traces", nargs=-1, metavar="[TRACES]...")
@click.option(
    "--store",
    "all_stored",
    is_flag=True,
    help="Also every run in the run store (the default when no TRACES are given).",
)
@click.option("--limit", type=click.IntRange(min=1), help="With --store: the newest N runs only.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report, not markdown.")
@click.option("--out", "out_dir", metavar="DIR", help="Write DIR/report.md and DIR/report.json.")
def mine_command(
    traces: tuple[str, ...], all_stored: bool, limit: int | None, as_json: bool, out_dir: str | None
) -> int:
    """Report the tactics across runs: TRACES are trace files, folders of them (searched
    for *.jsonl) or stored run ids; with none, the run store."""
    from ..mining.mine import mine

    report = mine(traces, all_stored=all_stored or not traces, limit=limit)
    for warning in report.data["warnings"]:
        click.echo(f"recursa: warning: {warning}", err=True)
    if not report.runs:
        raise ConfigError("no runs to mine" + (f" in {', '.join(traces)}" if traces else ""))
    if out_dir:
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.md").write_text(report.markdown(), encoding="utf-8")
            (out / "report.json").write_text(report.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write the report in {out}: {exc.strerror or exc}") from None
        click.echo(str(out / "report.md"))
        click.echo(str(out / "report.json"))
    elif as_json:
        click.echo(report.to_json())
    else:
        click.echo(report.markdown(), nl=False)
    return 0


@click.command("distill")
@click.argument("trace")
@click.option(
    "-o", "--out", "out_path", metavar="FILE", help="Write the program here (default: stdout)."
)
@click.option("--run", "run_id", metavar="ID", help="The run to distill when TRACE holds several.")
def distill_command(trace: str, out_path: str | None, run_id: str | None) -> int:
    """Write a standalone Python program that repeats the working code path of a successful
    run (TRACE: a trace file or a stored run id), calling sub-models only."""
    from ..mining.distill import distill, write

    program = distill(trace, run_id=run_id, name=Path(out_path).name if out_path else "")
    if out_path is None:
        click.echo(program, nl=False)
        return 0
    click.echo(str(write(program, out_path)))
    click.echo(
        f"recursa: review {out_path} before running it: its code runs on this machine, "
        f"outside the sandbox (recursa pipeline {out_path} --context PATH QUESTION)",
        err=True,
    )
    return 0


@click.command("pipeline")
@click.argument("pipeline_path", metavar="PIPELINE.py")
@click.argument("question")
@click.option(
    "--context",
    "context_paths",
    multiple=True,
    required=True,
    metavar="PATH",
    help="A file, a directory, or - for standard input (repeatable: then a list).",
)
@option("sub_model", help="Default: the recorded one.")
@option("base_url")
@option("max_llm_calls")
@option("max_tokens")
@option("max_cost")
@option("timeout")
@option("concurrency")
@option("price_args")
@option("prices_file")
@click.option("--trace", "trace_path", metavar="FILE", help="Write events as JSON lines.")
@click.option("--trace-context", is_flag=True, help="Store the context and full sub-query prompts.")
@option("no_store")
@option("mmap_threshold")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@option("quiet")
def pipeline_command(
    pipeline_path: str, question: str, context_paths: tuple[str, ...], **opts: Any
) -> int:
    """Run a distilled PIPELINE.py on QUESTION over new contexts: sub-models only, with the
    budget, events, trace and run store of `recursa run`. Its code runs on this machine,
    not in the sandbox; what it prints goes to standard error."""
    from ..context import from_path
    from ..mining.pipeline import context_value, load_pipeline
    from ..options import price_table
    from ..progress import Progress
    from ..trace.store import RunStore

    run = load_pipeline(pipeline_path)
    note_stdin(context_paths)
    contexts = [from_path(p, mmap_threshold=opts["mmap_threshold"]) for p in context_paths]
    values = [context_value(c) for c in contexts]
    events: list[Event] = []
    listeners: list[Listener] = [events.append]
    if not opts["quiet"]:
        listeners.append(Progress())
        for ctx in contexts:
            for warning in ctx.warnings:
                click.echo(f"recursa: warning: {warning}", err=True)

    def on_event(event: Event) -> None:
        for listener in listeners:
            listener(event)

    options: dict[str, Any] = {
        "base_url": opts["base_url"],
        "max_llm_calls": opts["max_llm_calls"],
        "max_tokens": opts["max_tokens"],
        "max_cost": opts["max_cost"],
        "timeout": opts["timeout"],
        "concurrency": opts["concurrency"],
        "prices": price_table(opts.get("prices_file"), opts.get("price_args") or ()),
        "trace": opts["trace_path"],
        "record_full_prompts": opts["trace_context"],
        "on_event": on_event,
        "context_refs": [c.reference() for c in contexts],
    }
    if opts["sub_model"]:
        options["sub_model"] = opts["sub_model"]
    printed = io.StringIO() if opts["quiet"] else sys.stderr
    try:
        with contextlib.redirect_stdout(printed):  # stdout holds the answer alone
            result = run(question, values[0] if len(values) == 1 else values, **options)
    finally:
        if not opts["no_store"] and any(e.type == "run_start" for e in events):
            try:
                RunStore().save(events, kind="pipeline", trace_path=opts["trace_path"])
            except ConfigError as exc:
                click.echo(f"recursa: warning: the run was not stored: {exc}", err=True)
    if not hasattr(result, "status"):
        raise ConfigError(f"{pipeline_path}: run() returned {type(result).__name__}, not a result")
    return report(result, opts["as_json"])


__all__ = ["distill_command", "mine_command", "pipeline_command"]
