"""The command-line options that `run`, `demo`, `batch`, `serve` and `mcp` share, defined
once, so that a limit's default or check cannot drift between the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from .batch import EXECUTORS
from .errors import ConfigError
from .sandbox import BACKENDS

F = TypeVar("F", bound=Callable[..., Any])


class Size(click.ParamType):
    """A size in bytes, written as bytes or with K, M or G (`context_files.parse_size`)."""

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        from .context_files import parse_size

        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


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
            "default": 30,
            "help": "Root turns (code cells) before the run stops with its best answer.",
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
            "type": click.Choice(BACKENDS),
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
    "price_args": (
        ("--price", "price_args"),
        {
            "multiple": True,
            "metavar": "MODEL=IN,OUT",
            "help": "A model's price in USD per million input and output tokens.",
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
            "type": click.Choice(EXECUTORS),
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
