"""The command-line options that `run`, `demo`, `batch`, `serve` and `mcp` share, defined
once, so that a limit's default or check cannot drift between the commands; and the step
from a command's options to its program (`program_for`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..core.programs import RLM

F = TypeVar("F", bound=Callable[..., Any])


class Size(click.ParamType):
    """A size in bytes, written as bytes or with K, M or G (`context_files.parse_size`)."""

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        from ..context_files import parse_size

        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class NamesOf(click.Choice):  # type: ignore[type-arg]
    """A choice among the names a module lists (`recursa.sandbox:BACKENDS`), read when a
    command parses or shows its help: defining the option imports nothing, so that
    `recursa --help` does not load the sandbox or the executors."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.case_sensitive = True

    @property
    def choices(self) -> Sequence[str]:  # type: ignore[override]
        module, _, name = self.where.partition(":")
        return tuple(getattr(importlib.import_module(module), name))


class Renamed(click.Option):
    """An option renamed where its old name meant different things in different commands:
    the old name (`old`) still works but `--help` lists only the new one."""

    def __init__(self, *args: Any, old: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.old = old

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.old]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def renamed(*decls: str, old: str, **settings: Any) -> Callable[[F], F]:
    """`click.option(*decls, old, ...)` with `old` working but not listed (`Renamed`)."""
    *names, dest = decls
    return click.option(*names, old, dest, cls=Renamed, old=(old,), **settings)


_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "model": (
        ("--model",),
        {
            "envvar": "RECURSA_MODEL",
            "metavar": "PROVIDER/MODEL",
            "help": "Root model (env: RECURSA_MODEL).",
        },
    ),
    "sub_model": (
        ("--sub-model",),
        {
            "envvar": "RECURSA_SUB_MODEL",
            "metavar": "PROVIDER/MODEL",
            "help": "Model for llm_query (env: RECURSA_SUB_MODEL; default: the root model).",
        },
    ),
    "base_url": (
        ("--base-url",),
        {
            "metavar": "URL",
            "help": "Base URL of --model's provider (a model of another provider uses its own).",
        },
    ),
    "max_depth": (
        ("--max-depth",),
        {
            "type": click.IntRange(min=1),
            "default": 1,
            "help": "Levels of recursion: 1 makes sub-queries plain calls, 2 lets rlm_query "
            "start child RLMs with their own REPL.",
        },
    ),
    "max_iterations": (
        ("--max-iterations",),
        {
            "type": click.IntRange(min=1),
            "help": "Root turns (code cells) before the run stops with its best answer "
            "[default: 30, or the profile's].",
        },
    ),
    "max_llm_calls": (
        ("--max-llm-calls",),
        {"type": click.IntRange(min=1), "help": "Model calls in all, root and sub-queries."},
    ),
    "max_tokens": (
        ("--max-tokens",),
        {"type": click.IntRange(min=1), "help": "Input and output tokens in all."},
    ),
    "max_cost": (
        ("--max-cost",),
        {"type": click.FloatRange(min=0, min_open=True), "help": "USD in all (needs prices)."},
    ),
    "timeout": (
        ("--timeout",),
        {"type": click.FloatRange(min=0, min_open=True), "help": "Seconds for the whole run."},
    ),
    "cell_timeout": (
        ("--cell-timeout",),
        {
            "type": click.FloatRange(min=0, min_open=True),
            "default": 60.0,
            "help": "Seconds one code cell may run in the sandbox.",
        },
    ),
    "concurrency": (
        ("--lm-concurrency", "concurrency"),
        {
            "type": click.IntRange(min=1),
            "default": 16,
            "cls": Renamed,
            "old": ("--concurrency",),
            "help": "Model requests in flight at once within one run (llm_query_batched "
            "fans out up to this).",
        },
    ),
    "max_output_chars": (
        ("--max-output-chars",),
        {
            "type": click.IntRange(min=100),
            "default": 20_000,
            "help": "Characters of a cell's output shown to the model; the rest is cut.",
        },
    ),
    "sandbox": (
        ("--sandbox",),
        {
            "type": NamesOf("recursa.sandbox:BACKENDS"),
            "default": "auto",
            "help": "How model code is isolated; see docs/SANDBOX.md.",
        },
    ),
    "memory_limit": (
        ("--memory-limit",),
        {
            "type": click.IntRange(min=64),
            "metavar": "MIB",
            "help": "Memory per sandbox worker (default: 2048 + 6x the context's MiB).",
        },
    ),
    "mode": (
        ("--mode",),
        {
            "type": click.Choice(["code", "actions"]),
            "default": "code",
            "help": "actions: the model emits JSON actions that a kernel runs; no code runs.",
        },
    ),
    "dialect": (
        ("--dialect",),
        {
            "type": click.Choice(["recursa", "official"]),
            "default": "recursa",
            "help": "official: the REPL conventions of the paper's library (answer dict, its "
            "observation layout), for models trained on its trajectories.",
        },
    ),
    "price_args": (
        ("--price", "price_args"),
        {
            "multiple": True,
            "metavar": "MODEL=IN,OUT[,CACHE_READ[,CACHE_WRITE]]",
            "help": "A model's price in USD per million input and output tokens "
            "(and prompt-cache reads and writes).",
        },
    ),
    "prices_file": (
        ("--prices", "prices_file"),
        {"metavar": "FILE", "help": "A JSON file of model prices."},
    ),
    "no_store": (
        ("--no-store",),
        {
            "is_flag": True,
            "envvar": "RECURSA_NO_STORE",
            "help": "Do not keep this run in the run store (recursa runs list).",
        },
    ),
    "quiet": (("--quiet",), {"is_flag": True, "help": "No progress on standard error."}),
    "profile": (
        ("--profile",),
        {
            "metavar": "FILE",
            "envvar": "RECURSA_PROFILE",
            "help": "A controller profile (JSON or TOML: prompts, chunk hint, sub-model, "
            "turns, guards, strategy), e.g. one `recursa tune` wrote.",
        },
    ),
    "mmap_threshold": (
        ("--mmap-threshold",),
        {
            "type": Size(),
            "metavar": "SIZE",
            "help": "Map context files of at least SIZE (e.g. 64M; default 64M) instead of "
            "reading them.",
        },
    ),
    "executor": (
        ("--executor",),
        {
            "type": NamesOf("recursa.executors:EXECUTORS"),
            "default": "local",
            "help": "ray: each question is a task on a Ray cluster (extra: ray).",
        },
    ),
    "ray_address": (
        ("--ray-address",),
        {
            "metavar": "ADDR",
            "envvar": "RAY_ADDRESS",
            "help": "The Ray cluster to join (default: start a local one bound to 127.0.0.1).",
        },
    ),
}

LIMITS = (
    "max_depth",
    "max_iterations",
    "max_llm_calls",
    "max_tokens",
    "max_cost",
    "timeout",
    "cell_timeout",
    "concurrency",
    "max_output_chars",
)
"""The run limits, in the order `--help` lists them."""


def option(name: str, **changes: Any) -> Callable[[F], F]:
    """The shared option `name`, with `changes` to its click settings (a command's own
    help text, most often)."""
    decls, settings = _OPTIONS[name]
    merged = {**settings, **changes}
    if merged.get("cls") is Renamed:
        decls = (decls[0], *merged["old"], *decls[1:])
    if "default" in merged and not merged.get("is_flag"):
        merged.setdefault("show_default", True)
    return click.option(*decls, **merged)


def stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Apply `decorators` so that `--help` lists their options in the order given."""

    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


run_options = stack(
    option("model"),
    option("profile"),
    option("sub_model"),
    option("base_url"),
    *(option(name) for name in LIMITS),
    option("sandbox"),
    option("memory_limit"),
    click.option(
        "--strategy",
        type=click.Choice(["rlm", "direct", "auto"]),
        help="direct: one call with the context in the prompt; auto: direct when small "
        "[default: rlm, or the profile's].",
    ),
    option("mode"),
    option("dialect"),
    click.option(
        "--system-prompt",
        "system_prompt_file",
        type=click.Path(exists=True, dir_okay=False),
        metavar="FILE",
        help="Use FILE's text as the system prompt (e.g. another library's prompt).",
    ),
    click.option(
        "--signature",
        metavar="SPEC",
        help="Typed outputs, e.g. 'question, context -> answer: int, evidence: list[str]'.",
    ),
    click.option(
        "--context-window",
        type=click.IntRange(min=1),
        help="The root model's window in tokens, where the built-in table is wrong.",
    ),
    option("price_args"),
    option("prices_file"),
    click.option("--trace", "trace_path", metavar="FILE", help="Write events as JSON lines."),
    click.option(
        "--trace-format",
        type=click.Choice(["recursa", "official"]),
        default="recursa",
        show_default=True,
        help="official: the --trace file in the official RLM library's log format.",
    ),
    click.option(
        "--trace-context",
        is_flag=True,
        help="Store the contexts' text and full sub-query prompts in the trace.",
    ),
    click.option("--otel", is_flag=True, help="Export spans with OpenTelemetry (extra: otel)."),
    click.option(
        "--no-guards",
        is_flag=True,
        help="Do not stop a run that repeats itself (stalled), nor warn on printed context.",
    ),
    option("no_store"),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    option("quiet"),
)
"""The options `run`, `demo` and `batch` share: model, limits, sandbox and output."""


def given(name: str) -> bool:
    """Whether the option `name` of the running command was set by the user (flag or
    environment), not left at its default."""
    ctx = click.get_current_context(silent=True)
    source = ctx.get_parameter_source(name) if ctx is not None else None
    return source in (
        click.core.ParameterSource.COMMANDLINE,
        click.core.ParameterSource.ENVIRONMENT,
    )


def program_for(opts: dict[str, Any], env: dict[str, str] | None = None) -> RLM:
    """The program of a command's run options (`recursa.options.make_program`), refusing
    as a usage error the options that cannot go together on the command line."""
    from ..options import make_program

    if opts.get("strategy") == "direct" and given("mode"):
        raise click.UsageError(
            "--mode has no effect with --strategy direct (no REPL runs): leave one out"
        )
    path = opts.get("system_prompt_file")
    if path:
        try:
            opts = {**opts, "system_prompt": Path(path).read_text(encoding="utf-8")}
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--system-prompt {path}: cannot read it ({exc})") from None
    return make_program(opts, env)
