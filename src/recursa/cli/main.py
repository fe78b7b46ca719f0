"""The `recursa` command: argument parsing and printing only; the library does the work.

Exit codes (the contract): 0 ok; 3 a limit or guard stopped the run (the best answer is
still printed); 2 usage or configuration error, one line, no traceback; 1 anything else.

Only click and the CLI's own modules are imported at module level: each command imports
what it needs when it runs, so that `recursa --help` starts fast.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigError, RecursaError
from .batch import batch_command
from .evals import bench_command, eval_command
from .mining import distill_command, mine_command, pipeline_command
from .options import option, program_for, run_options
from .output import (
    EXIT_DIVERGED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    answer_text,
    fail,
    note_stdin,
    one_line,
    printable,
    report,
)
from .prices import prices_command
from .serve import mcp, serve
from .tune import tune_command

if TYPE_CHECKING:
    from ..context import Context
    from ..core.programs import RLM, RunResult
    from ..events import Event, Listener


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="recursa")
def cli() -> None:
    """recursa: Recursive Language Models over inputs far larger than a model's window."""


@cli.command()
@click.argument("question")
@click.option(
    "--context",
    "context_paths",
    multiple=True,
    metavar="PATH",
    help="A file, a directory, or - for standard input (repeatable).",
)
@option("mmap_threshold")
@run_options
def run(
    question: str, context_paths: tuple[str, ...], mmap_threshold: int | None, **opts: Any
) -> int:
    """Answer QUESTION over the given contexts."""
    from ..context import from_path

    note_stdin(context_paths)
    contexts = [from_path(p, mmap_threshold=mmap_threshold) for p in context_paths]
    if not opts.get("model"):
        raise ConfigError(
            "no model: pass --model PROVIDER/MODEL or set RECURSA_MODEL (try `recursa demo`)"
        )
    return _execute(program_for(opts), question, contexts, opts)


@cli.command()
@click.option(
    "--size-mb",
    type=click.FloatRange(min=0.01),
    default=20.0,
    show_default=True,
    help="Size of the generated log the fact hides in.",
)
@run_options
def demo(size_mb: float, **opts: Any) -> int:
    """Find a planted fact in a generated log: scripted model unless --model is given."""
    from ..context import from_text
    from ..demo import QUESTION, make_haystack, scripted_model
    from ..testing.server import FakeLMServer

    text, _code, _service = make_haystack(int(size_mb * 1_000_000))
    context = from_text(text, f"<demo log, {len(text):,} chars>")
    opts["kind"] = "demo"
    if opts.get("model"):
        return _execute(program_for(opts), QUESTION, [context], opts)
    if not opts["quiet"]:
        click.echo(
            "recursa demo: SCRIPTED model behind a local fake OpenAI server; no real model "
            "is involved. Pass --model PROVIDER/MODEL to run the same task on a real one.",
            err=True,
        )
    if opts["sandbox"] == "auto" and _unisolated():
        opts["sandbox"] = "subprocess"  # the scripted demo's code is ours, not a model's
        click.echo(
            "recursa demo: no sandbox isolates code here, so the scripted demo runs its own "
            "code unisolated (--sandbox subprocess); `recursa doctor` says why",
            err=True,
        )
    with FakeLMServer(scripted_model()) as server:
        opts.update(
            model="openai/scripted-demo", base_url=server.url, sub_model=None, scripted=True
        )
        return _execute(program_for(opts, env={}), QUESTION, [context], opts)


def _unisolated() -> bool:
    """Whether `--sandbox auto` refuses to run model code here (no bwrap, no Landlock)."""
    from ..sandbox import resolve_backend

    try:
        resolve_backend("auto")
    except ConfigError:
        return True
    return False


def _execute(rlm: RLM, question: str, contexts: list[Context], opts: dict[str, Any]) -> int:
    """Run with the listeners `opts` ask for (progress, trace, OpenTelemetry), store the
    run, and print its report; returns the exit code."""
    from ..events import ControllerNote
    from ..progress import Progress
    from ..trace.jsonl import JsonlTrace
    from ..trace.store import RunStore

    listeners: list[Listener] = []
    if not opts["quiet"]:
        listeners.append(Progress())
        for ctx in contexts:
            for warning in ctx.warnings:
                click.echo(f"recursa: warning: {warning}", err=True)
    trace = None
    if opts.get("trace_path"):
        writer = JsonlTrace
        if opts.get("trace_format") == "official":
            from ..trace.official import OfficialTrace as writer  # type: ignore[assignment]
        trace = writer(opts["trace_path"], contexts if opts.get("trace_context") else None)
        listeners.append(trace)
    if opts.get("otel"):
        from ..trace import otel

        otel.configure_sdk()
        listeners.append(otel.OtelExporter())
    events: list[Event] = []
    listeners.append(events.append)
    if opts.get("scripted"):  # the demo's own script drives it: no note on the model
        listeners = [_without(ControllerNote, listeners)]
    try:
        result = _run_interruptible(rlm, question, contexts, listeners)
    finally:
        if trace is not None:
            trace.close()
        if opts.get("otel"):
            otel.shutdown()
    result.trace = trace.path if trace is not None else None
    if not opts.get("no_store") and events:
        try:
            RunStore().save(events, kind=opts.get("kind", "run"), trace_path=result.trace)
        except ConfigError as exc:
            click.echo(f"recursa: warning: the run was not stored: {exc}", err=True)
    return report(result, opts["as_json"])


def _without(kind: type[Event], listeners: list[Listener]) -> Listener:
    """One listener that hands every event but those of `kind` to `listeners`."""

    def deliver(event: Event) -> None:
        if not isinstance(event, kind):
            for listener in listeners:
                listener(event)

    return deliver


def _run_interruptible(
    rlm: RLM, question: str, contexts: list[Context], listeners: list[Listener]
) -> RunResult:
    """Run with SIGINT and SIGTERM cancelling the run cleanly (every worker ended); the
    partial usage then comes from the run's last event."""
    import asyncio
    import signal

    from ..core.programs import RunResult
    from ..events import RunEnded
    from ..sandbox.process import kill_all_live

    ended: list[RunEnded] = []

    def on_event(event: Event) -> None:
        if isinstance(event, RunEnded):
            ended.append(event)
        for listener in listeners:
            listener(event)

    async def main() -> RunResult:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await rlm.arun(
            question,
            contexts[0] if len(contexts) == 1 else None,
            contexts=contexts if len(contexts) > 1 else None,
            on_event=on_event,
        )

    try:
        return asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        kill_all_live()
        last = ended[-1] if ended else None
        return RunResult(
            answer=last.answer if last else None,
            status="error",
            iterations=last.iterations if last else 0,
            usage=last.usage if last else {},
            run_id=last.run_id if last else "",
            error="interrupted: the run was cancelled by a signal",
        )


@cli.command()
@click.argument("trace")
@click.option(
    "--context",
    "context_paths",
    multiple=True,
    metavar="PATH",
    help="The context(s) again, when the trace does not hold them (a trace file's own "
    "paths are never read).",
)
@click.option("--from-turn", type=click.IntRange(min=1), help="Fork: go live from this root turn.")
@click.option("--model", help="Fork: the live model, PROVIDER/MODEL (with --from-turn).")
@click.option("--base-url", help="Fork: base URL of the live model's server.")
@option(
    "sandbox",
    help="Where the recorded code runs (auto never picks a backend that does not isolate: "
    "name subprocess or local to run a trace you trust without isolation).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress on standard error.")
def replay(
    trace: str,
    context_paths: tuple[str, ...],
    from_turn: int | None,
    model: str | None,
    base_url: str | None,
    sandbox: str,
    as_json: bool,
    quiet: bool,
) -> int:
    """Re-run TRACE (a trace file or a stored run id) with no model; report divergence."""
    from ..core.gateway import ClientPool
    from ..progress import Progress
    from ..trace.replay import Recording
    from ..trace.replay import replay as run_replay
    from ..trace.source import resolve_trace

    if (from_turn is None) != (model is None):
        raise click.UsageError("--from-turn and --model go together")
    recording = Recording.from_source(resolve_trace(trace))
    live = ClientPool(base_url=base_url, base_url_for=model).get(model)[0] if model else None
    progress = None if quiet else Progress()
    outcome = run_replay(
        recording,
        contexts=list(context_paths) or None,
        live=live,
        live_model=model,
        from_turn=from_turn,
        on_event=progress,
        sandbox=sandbox,
    )
    result = outcome.result
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), ensure_ascii=False))
    elif result.answer is not None:
        click.echo(answer_text(result.answer))
    if outcome.diverged:
        first = outcome.divergences[0]
        where = f"turn {first.turn} of RLM {first.rlm}" if first.turn else f"RLM {first.rlm}"
        click.echo(f"recursa: replay diverged at {where}: {first.what} differs", err=True)
        return EXIT_DIVERGED
    return EXIT_OK


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def doctor(as_json: bool) -> int:
    """Which sandboxes work here and why not, Landlock, cgroups, Docker, keys set, extras."""
    from ..doctor import diagnose, render

    report = diagnose()
    click.echo(json.dumps(report) if as_json else render(report))
    return EXIT_OK


@cli.group()
def runs() -> None:
    """The run store: every run's summary and trace."""


@runs.command("list")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Runs to list."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def runs_list(limit: int, as_json: bool) -> int:
    """The most recent runs, newest first."""
    from ..trace.store import RunStore

    stored = RunStore().list(limit)
    row = "{:<12}  {:<19}  {:<8} {:<16} {:>5}  {}  {}"
    if stored and not as_json:
        click.echo(row.format("RUN", "STARTED", "KIND", "STATUS", "CALLS", "MODEL", "QUESTION"))
    for run_ in stored:
        if as_json:
            click.echo(json.dumps(run_.to_dict(), ensure_ascii=False))
            continue
        calls = run_.usage.get("llm_calls", 0)
        question = " ".join(run_.question.split())
        click.echo(
            printable(
                row.format(
                    run_.id, _when(run_.started_at), run_.kind, run_.status or "?", calls,
                    run_.model, question[:60],
                )
            )
        )  # fmt: skip
    if not stored and not as_json:
        click.echo("no runs stored yet", err=True)
    return EXIT_OK


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--trace", "as_trace", is_flag=True, help="Print the run's trace as JSON lines.")
def runs_show(run_id: str, as_json: bool, as_trace: bool) -> int:
    """One run: its summary, or with --trace its whole trace."""
    from ..trace.store import RunStore

    store = RunStore()
    run_ = store.get(run_id)
    if as_trace:
        for event in store.events(run_.id):
            click.echo(json.dumps(event, ensure_ascii=False))
    elif as_json:
        click.echo(json.dumps(run_.to_dict(), ensure_ascii=False))
    else:
        for key, value in run_.to_dict().items():
            if key == "started_at":
                value = _when(value)
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            click.echo(printable(f"{key}: {shown}"))
    return EXIT_OK


def _when(epoch: float) -> str:
    """A stored time for people: local date and time (the JSON keeps the epoch seconds)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


@cli.command()
@click.argument("trace")
@click.option(
    "--out",
    "out_path",
    metavar="FILE",
    help="The page to write (default: TRACE with .html, or RUN_ID.html here).",
)
def view(trace: str, out_path: str | None) -> int:
    """Write one self-contained HTML page (works offline) showing the run in TRACE (a trace
    file or a stored run id)."""
    from ..trace.source import resolve_trace
    from ..trace.viewer import TraceFormatError, render_html

    source = resolve_trace(trace)
    events = source.events()
    if not events:
        raise TraceFormatError(f"trace {trace} holds no events")
    page = render_html(events)
    if out_path:
        out = Path(out_path)
    elif source.run is not None:
        out = Path(f"{source.run.id}.html")
    else:
        out = Path(trace).with_suffix(".html")
        if out == Path(trace):
            out = Path(trace + ".html")
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(str(out))
    return EXIT_OK


cli.add_command(serve)
cli.add_command(mcp)
cli.add_command(eval_command)
cli.add_command(bench_command)
cli.add_command(mine_command)
cli.add_command(distill_command)
cli.add_command(pipeline_command)
cli.add_command(batch_command)
cli.add_command(tune_command)
cli.add_command(prices_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps every failure to its exit code and one line."""
    code = dispatch(argv)
    sys.exit(code)


def dispatch(argv: list[str] | None = None) -> int:
    """Run the command `argv` (default: the process's arguments); returns its exit code."""
    try:
        result = cli.main(args=argv, prog_name="recursa", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # `recursa`, `recursa runs`: the help
        exc.show()
        return EXIT_USAGE
    except click.UsageError as exc:
        return fail(" ".join(exc.format_message().split()).rstrip("."), EXIT_USAGE)
    except click.Abort:
        _kill_workers()
        return fail("interrupted", 130)
    except ConfigError as exc:
        return fail(one_line(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        _kill_workers()
        return fail("interrupted", 130)
    except RecursaError as exc:
        return fail(one_line(exc), EXIT_ERROR)
    except click.ClickException as exc:
        return fail(one_line(exc), exc.exit_code or EXIT_ERROR)
    except OSError as exc:
        return fail(one_line(exc), EXIT_ERROR)
    return result if isinstance(result, int) else EXIT_OK


def _kill_workers() -> None:
    """End every sandbox worker still alive (an interrupted command leaves none behind)."""
    from ..sandbox.process import kill_all_live

    kill_all_live()
