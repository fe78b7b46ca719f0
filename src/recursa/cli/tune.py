"""`recursa tune`: argument parsing and printing; the search is `recursa.evals.tune`."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from ..evals.names import FAMILIES as ALL
from .options import option
from .output import EXIT_LIMIT

EXIT_INTERRUPTED = 130


def raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM stops a tuning as Ctrl-C does: what finished is kept for the next run."""
    raise KeyboardInterrupt


@click.command("tune")
@click.option("--model", metavar="PROVIDER/MODEL", help="Root model (default: RECURSA_MODEL).")
@option("sub_model")
@option("base_url")
@click.option(
    "--reflection-model",
    metavar="PROVIDER/MODEL",
    help="The model that proposes new prompts from failed traces (default: --model).",
)
@click.option("--tasks", "tasks_path", metavar="FILE", help="Tasks, JSON lines (docs/TUNING.md).")
@click.option(
    "--held-out-tasks",
    "held_out_path",
    metavar="FILE",
    help="Held-out tasks, JSON lines: then --tasks is all train (default: split --tasks).",
)
@click.option("--families", help=f"Generated task families instead: {', '.join(ALL)}.")
@click.option("--lengths", default="8k", show_default=True, help="Generated tasks' lengths.")
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Generated tasks per family and length.",
)
@click.option(
    "--held-out",
    "held_out",
    type=click.FloatRange(0.05, 0.95),
    default=0.5,
    show_default=True,
    help="Share of the tasks held out to pick the winner.",
)
@option("profile", help="The profile to start from (default: the built-in one).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    metavar="DIR",
    help="profile.json, report.md, results and cache; rerun to resume.",
)
@option("max_llm_calls", help="Model calls for the whole tuning (evaluations and reflection).")
@option("max_cost", help="USD for the whole tuning.")
@click.option(
    "--max-rollouts",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Task runs the optimiser may ask for.",
)
@option("max_iterations", help="Root turns per task [default: 30, or the profile's].")
@option("timeout", help="Seconds per task.")
@option("sandbox")
@click.option(
    "--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Tasks at once."
)
@option("executor", help="ray: each task run is a Ray task (extra: ray).")
@option("ray_address")
@click.option("--seed", type=int, default=0, show_default=True, help="The split and the search.")
def tune_command(**opts: Any) -> int:
    """Tune the controller profile for a model: prompts searched with gepa (extra: tune),
    scored by eval's scorers on train tasks, the winner picked on held-out tasks."""
    from ..core.profile import BUILTIN, Profile
    from ..evals.tasks import load_task_file
    from ..evals.tune import BudgetSpent, Interrupted, TuneConfig, split, tune

    model = opts["model"] or os.environ.get("RECURSA_MODEL")
    if not model:
        raise ConfigError("no model: pass --model PROVIDER/MODEL or set RECURSA_MODEL")
    if bool(opts["tasks_path"]) == bool(opts["families"]):
        raise click.UsageError("give the tasks with one of --tasks FILE or --families LIST")
    if opts["tasks_path"]:
        tasks = load_task_file(opts["tasks_path"])
    else:
        tasks = _generated(opts["families"], opts["lengths"], opts["seeds"])
    if opts["held_out_path"]:
        train, held = tasks, load_task_file(opts["held_out_path"])
    else:
        train, held = split(tasks, opts["held_out"], opts["seed"])
    config = TuneConfig(
        out=Path(opts["out_dir"]),
        train=train,
        held_out=held,
        model=model,
        sub_model=opts["sub_model"] or os.environ.get("RECURSA_SUB_MODEL"),
        base_url=opts["base_url"],
        reflection_model=opts["reflection_model"],
        base=Profile.load(opts["profile"]) if opts["profile"] else BUILTIN,
        max_llm_calls=opts["max_llm_calls"],
        max_cost=opts["max_cost"],
        max_rollouts=opts["max_rollouts"],
        max_iterations=opts["max_iterations"],
        timeout=opts["timeout"],
        sandbox=opts["sandbox"],
        jobs=opts["jobs"],
        executor=opts["executor"],
        ray_address=opts["ray_address"],
        seed=opts["seed"],
    )
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        result = tune(config)
    except Interrupted as exc:
        click.echo(f"recursa tune: {exc}; run the same command again to resume", err=True)
        return EXIT_INTERRUPTED
    except BudgetSpent as exc:
        click.echo(f"recursa: error: {exc}", err=True)
        return EXIT_LIMIT
    finally:
        signal.signal(signal.SIGTERM, previous)
    base, best = result.base.held_out, result.winner.held_out
    click.echo(
        f"held-out score: built-in {base.score():.3f}, tuned {best.score():.3f} "
        f"({result.gain:+.3f}); held-out cost ${base.cost():.4f} -> ${best.cost():.4f}, "
        f"calls {base.calls()} -> {best.calls()}"
    )
    click.echo(f"spent: {result.budget.calls} model calls, ${result.budget.cost:.4f}")
    if result.stopped:
        click.echo(f"recursa tune: stopped early: {result.stopped}", err=True)
    click.echo(f"profile: {result.profile_path}")
    click.echo(f"report: {result.report_path}")
    return 0


def _generated(families: str, lengths: str, seeds: int) -> list[Any]:
    from ..evals.generators import generate
    from ..evals.tasks import parse_lengths

    names = [f.strip() for f in families.split(",") if f.strip()]
    unknown = [f for f in names if f not in ALL]
    if unknown or not names:
        raise click.UsageError(f"unknown task family {unknown[:1]}; known: {', '.join(ALL)}")
    return [
        generate(f, seed, length)
        for f in names
        for length in parse_lengths(lengths)
        for seed in range(seeds)
    ]
