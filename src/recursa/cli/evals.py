"""`recursa eval` and `recursa bench` over `recursa.evals`, registered by `recursa.cli.main`.

Only click is imported at module level: the harness, the datasets and matplotlib load when
a command runs, so `recursa --help` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from ..evals.names import DOCUMENT_FAMILIES
from ..evals.names import FAMILIES as ALL
from ..evals.names import STRATEGIES as STRATEGY_NAMES
from .options import option, renamed

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
CODE_DOMAIN = "Code Repository Understanding"


def _names(
    text: str, known: tuple[str, ...], what: str, everything: tuple[str, ...] | None = None
) -> list[str]:
    """The names in `text` (comma-separated) or `everything` (default: `known`) for 'all'."""
    if text.strip().lower() == "all":
        return list(everything or known)
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in known:
            raise click.BadParameter(f"unknown {what} {name!r}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


_HELP = {
    "families": (
        f"Generated task families, comma-separated, or 'all' ({', '.join(ALL)}). "
        "Default: all, or none when a dataset is given. Only when named: "
        f"{', '.join(DOCUMENT_FAMILIES)} (PDFs; needs the docs extra)."
    ),
    "lengths": "Context lengths in tokens (4 characters a token): 8k, 131k, 1m, 10m ...",
    "strategies": f"Comma-separated: {', '.join(STRATEGY_NAMES)}.",
    "seeds": "Tasks per family and length (seeds 0 .. N-1).",
    "oracle": "No model: each family's scripted oracle runs the pipeline (checks the harness).",
    "out": "Results, cache, report and plots go here (a folder holding results needs --resume).",
    "resume": "Go on from the results already in OUT, skipping the runs there (without it, "
    "an OUT holding results is refused).",
    "jobs": "Tasks at once; fewer than batch's 4 because each holds its generated context "
    "(up to tens of MB) and its RLM's sub-queries run concurrently.",
    "context_window": "The root model's window in tokens (Direct overflows above it).",
    "cache": "Response cache (SQLite); default OUT/cache.sqlite.",
    "report_only": "Rewrite the report from OUT/results.jsonl and exit.",
    "oolong": "OOLONG-synth rows: a .jsonl, .json or .parquet file, or a directory of them.",
    "oolong_subset": "OOLONG source dataset(s), comma-separated, or 'all'.",
    "longbench": "LongBench v2 data.json (or the same items as .jsonl).",
    "longbench_domain": "LongBench v2 domain(s), comma-separated, or 'all'.",
    "browsecomp": "BrowseComp-Plus queries: browsecomp_plus_decrypted.jsonl.",
    "browsecomp_corpus": "Corpus .jsonl (docid, text, url) to pad each query's documents.",
    "browsecomp_docs": "Documents per query when a corpus is given.",
}


@click.command("eval")
@click.option("--families", help=_HELP["families"])
@click.option("--lengths", default="8k,32k", show_default=True, help=_HELP["lengths"])
@click.option("--strategies", default="all", show_default=True, help=_HELP["strategies"])
@click.option(
    "--seeds", type=click.IntRange(min=1), default=1, show_default=True, help=_HELP["seeds"]
)
@click.option("--model", metavar="PROVIDER/MODEL", help="Root model (default: RECURSA_MODEL).")
@click.option(
    "--sub-model",
    metavar="PROVIDER/MODEL",
    help="Model for sub-queries (default: RECURSA_SUB_MODEL).",
)
@option("base_url")
@click.option("--oracle", is_flag=True, help=_HELP["oracle"])
@click.option("--out", "out_dir", required=True, metavar="DIR", help=_HELP["out"])
@click.option("--resume", is_flag=True, help=_HELP["resume"])
@renamed(
    "--jobs",
    "jobs",
    old="--concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help=_HELP["jobs"],
)
@option("profile", help="The controller profile every task runs with (JSON or TOML).")
@option(
    "max_iterations",
    help="Root turns per task before it stops with its best answer "
    "[default: 30, or the profile's].",
)
@option("max_llm_calls", help="Model calls per task.")
@option("max_cost", help="USD per task.")
@option("timeout", help="Seconds per task.")
@option("sandbox")
@click.option("--context-window", type=click.IntRange(min=1), help=_HELP["context_window"])
@click.option("--cache", "cache_path", metavar="FILE", help=_HELP["cache"])
@click.option("--no-cache", is_flag=True, help="Send every request, cache nothing.")
@click.option("--no-plots", is_flag=True, help="Write the markdown report only.")
@click.option("--report-only", is_flag=True, help=_HELP["report_only"])
@click.option(
    "--tasks",
    "tasks_path",
    metavar="FILE",
    help="Your own tasks, JSON lines: question, context, expected[, scorer] (docs/TUNING.md).",
)
@click.option("--oolong", "oolong_path", metavar="PATH", help=_HELP["oolong"])
@click.option(
    "--oolong-subset", default="trec_coarse", show_default=True, help=_HELP["oolong_subset"]
)
@click.option("--longbench", "longbench_path", metavar="FILE", help=_HELP["longbench"])
@click.option(
    "--longbench-domain", default=CODE_DOMAIN, show_default=True, help=_HELP["longbench_domain"]
)
@click.option("--browsecomp", "browsecomp_path", metavar="FILE", help=_HELP["browsecomp"])
@click.option("--browsecomp-corpus", metavar="FILE", help=_HELP["browsecomp_corpus"])
@click.option(
    "--browsecomp-docs",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help=_HELP["browsecomp_docs"],
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Tasks per real dataset.",
)
@option("executor", help="ray: each job is a task on a Ray cluster (extra: ray).")
@option("ray_address")
@click.option("--quiet", is_flag=True, help="No progress on standard error.")
def eval_command(**opts: Any) -> int:
    """Score strategies across task families and context lengths, with a report and plots."""
    from ..core.profile import Profile
    from ..evals.harness import EvalConfig, load_results, run_eval
    from ..evals.oracle import ORACLE_LABEL
    from ..evals.report import accuracy_table, write_report
    from ..evals.tasks import parse_lengths

    out = Path(opts["out_dir"])
    if opts["report_only"]:
        records = load_results(out / "results.jsonl")
        if not records:
            raise ConfigError(f"no results in {out / 'results.jsonl'}")
        written = write_report(records, out, plots=not opts["no_plots"])
        for note in written.notes:
            click.echo(f"recursa eval: {note}", err=True)
        click.echo(str(written.markdown))
        return EXIT_OK

    oracle = "oracle" if opts["oracle"] else None
    model = opts["model"] or (None if oracle else os.environ.get("RECURSA_MODEL"))
    sub_model = opts["sub_model"] or (None if oracle else os.environ.get("RECURSA_SUB_MODEL"))
    if oracle and (opts["model"] or opts["sub_model"]):
        raise click.UsageError("--oracle runs no model: leave out --model and --sub-model")
    if not oracle and not model:
        raise ConfigError(
            "no model: pass --model PROVIDER/MODEL (or set RECURSA_MODEL), or --oracle to "
            "check the harness with the scripted oracle"
        )
    lengths = parse_lengths(opts["lengths"])
    strategies = _names(opts["strategies"], STRATEGY_NAMES, "strategy")
    extra = _dataset_tasks(opts, lengths)
    if opts["families"] is None:
        families = [] if extra else list(ALL)
    elif opts["families"].strip().lower() in ("", "none"):
        families = []
    else:
        families = _names(opts["families"], ALL + DOCUMENT_FAMILIES, "task family", ALL)
    if not families and not extra:
        raise click.UsageError("nothing to run: no families and no dataset")

    config = EvalConfig(
        out=out,
        families=families,
        lengths=lengths,
        strategies=strategies,
        seeds=list(range(opts["seeds"])),
        model=model,
        sub_model=sub_model,
        base_url=opts["base_url"],
        oracle=oracle,
        extra_tasks=extra,
        concurrency=opts["jobs"],
        cache=not opts["no_cache"],
        cache_path=Path(opts["cache_path"]) if opts["cache_path"] else None,
        max_iterations=opts["max_iterations"],
        profile=Profile.load(opts["profile"]) if opts["profile"] else None,
        max_llm_calls=opts["max_llm_calls"],
        max_cost=opts["max_cost"],
        timeout=opts["timeout"],
        sandbox=opts["sandbox"],
        context_window=opts["context_window"],
        plots=not opts["no_plots"],
        progress=not opts["quiet"],
        executor=opts["executor"],
        ray_address=opts["ray_address"],
        resume=opts["resume"],
    )
    if oracle:
        click.echo(
            f"recursa eval: {ORACLE_LABEL}. Every answer comes from a script that runs each "
            "family's program for real; no model is involved, so the scores check the harness.",
            err=True,
        )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        summary = run_eval(config)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if summary.skipped and not opts["quiet"]:
        click.echo(
            f"recursa eval: {summary.skipped} runs already in {summary.results}: skipped",
            err=True,
        )
    mine = [r for r in summary.records if r["model"] == summary.label]
    heading = f"model: {ORACLE_LABEL}" if oracle else f"model: {summary.label}"
    if mine:
        click.echo(heading)
        click.echo(accuracy_table(mine))
    click.echo(f"results: {summary.results}")
    if summary.report:
        click.echo(f"report: {summary.report}")
    for path in summary.plots:
        click.echo(f"plot: {path}")
    for note in summary.notes:
        if not note.startswith("model:"):
            click.echo(f"recursa eval: {note}", err=True)
    if summary.interrupted:
        click.echo(
            f"recursa eval: interrupted; {len(summary.ran)} new results saved in "
            f"{summary.results}: run the same command again with --resume to go on",
            err=True,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _dataset_tasks(opts: dict[str, Any], lengths: list[int]) -> list[Any]:
    from ..evals import datasets

    def listed(text: str) -> tuple[str, ...]:
        return () if text.strip().lower() == "all" else tuple(s.strip() for s in text.split(","))

    tasks: list[Any] = []
    if opts["tasks_path"]:
        from ..evals.tasks import load_task_file

        tasks += load_task_file(opts["tasks_path"])
    if opts["oolong_path"]:
        tasks += datasets.load_oolong(
            opts["oolong_path"],
            subsets=listed(opts["oolong_subset"]),
            lengths=lengths,
            limit=opts["limit"],
        )
    if opts["longbench_path"]:
        tasks += datasets.load_longbench(
            opts["longbench_path"], domains=listed(opts["longbench_domain"]), limit=opts["limit"]
        )
    if opts["browsecomp_path"]:
        tasks += datasets.load_browsecomp(
            opts["browsecomp_path"],
            corpus=opts["browsecomp_corpus"],
            docs_per_query=opts["browsecomp_docs"],
            limit=opts["limit"],
        )
    given = [k for k in ("oolong_path", "longbench_path", "browsecomp_path") if opts[k]]
    if given and not tasks:
        raise ConfigError("the dataset files given hold no task matching the filters")
    return tasks


@click.command("bench")
@click.option(
    "--only",
    metavar="NAME[,NAME...]",
    help="Some benchmarks only: iteration, worker_start, fanout, ledger, needle; and bigfile "
    "(4 GB on disk, minutes), which runs only when named.",
)
@click.option("--out", "out_path", metavar="FILE", help="Also write the table to FILE.")
def bench_command(only: str | None, out_path: str | None) -> int:
    """Run the performance suite (1-2 minutes) and print its table with the machine."""
    from ..evals.perf.suite import BENCHMARKS, OPTIONAL, run_suite

    names = _names(only, BENCHMARKS + OPTIONAL, "benchmark") if only else None
    text, ran_all = run_suite(names, log=sys.stderr)
    click.echo(text)
    if out_path:
        try:
            Path(out_path).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return EXIT_OK if ran_all else EXIT_ERROR
