"""What a new user meets first in `recursa --help`: the help itself, a help text for every
option, one meaning per option name, and defaults that agree between commands."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import click
import pytest

from e2e_helpers import host_env, repl, run_cli
from recursa.cli import cli
from recursa.testing import ScriptedLM


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> dict[str, click.Command]:
    """Every leaf command, by its full name (`runs list`)."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(commands(command, (*path, name)))
        else:
            found[" ".join((*path, name))] = command
    return found


def listed_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


@pytest.mark.parametrize("args", [[], ["runs"]], ids=["recursa", "recursa runs"])
def test_a_group_without_a_subcommand_prints_its_help_as_click_does(args: list[str]) -> None:
    done = run_cli(args)

    assert done.rc == 2  # click's status for a group called without a command
    lines = done.err.splitlines()
    assert lines[0] == f"Usage: {' '.join(['recursa', *args])} [OPTIONS] COMMAND [ARGS]..."
    assert "Commands:" in lines and "recursa: error" not in done.err
    assert any(line.split()[:1] == ["list" if args else "run"] for line in lines)


def test_every_option_of_every_command_has_a_help_text() -> None:
    missing = [
        f"recursa {name} {option.opts[0]}"
        for name, command in commands().items()
        for option in listed_options(command)
        if not (option.help or "").strip()
    ]
    assert missing == []


def test_a_visible_option_name_means_one_thing_and_has_one_default() -> None:
    """`--lm-concurrency` is LM requests in flight wherever it appears; `--jobs` is batch's
    questions and eval's tasks at once (their defaults differ, and eval's help says why)."""
    seen: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, command in commands().items():
        for option in listed_options(command):
            if not option.is_flag:
                seen[option.opts[0]][name] = option.default

    assert "--concurrency" not in seen  # it meant three things: its old uses are hidden
    assert set(seen["--lm-concurrency"].values()) == {16}
    assert {"run", "demo", "batch", "serve", "pipeline"} <= set(seen["--lm-concurrency"])
    # unset: the profile's turns (30 in the built-in profile), as each help says
    assert len(set(map(repr, seen["--max-iterations"].values()))) == 1
    assert all(
        "30, or the profile's" in (o.help or "")
        for command in commands().values()
        for o in listed_options(command)
        if o.opts[0] == "--max-iterations"
    )
    assert {"run", "batch", "eval", "serve"} <= set(seen["--max-iterations"])
    assert seen["--jobs"] == {"batch": 4, "eval": 2, "tune": 2}
    assert "batch's 4" in next(o.help for o in listed_options(cli.commands["eval"])
                               if o.opts[0] == "--jobs")  # fmt: skip
    for name in ("--max-depth", "--cell-timeout", "--max-output-chars", "--sandbox"):
        assert len(set(map(repr, seen[name].values()))) == 1, (name, seen[name])


def test_file_options_say_file() -> None:
    for name, command in commands().items():
        for option in listed_options(command):
            if option.name in ("prices_file", "trace_path", "cache_path", "out_path"):
                assert option.metavar in ("FILE", "DIR"), (name, option.opts)


def test_run_help_lists_the_new_name_and_the_old_name_still_works(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('done')")]))
    helped = run_cli(["run", "--help"])
    old = run_cli(
        ["run", "q", "--model", "openai/x", "--base-url", server.url, "--concurrency", "2",
         "--no-store"],
        env=host_env(),
    )  # fmt: skip

    assert "--lm-concurrency" in helped.out and "--concurrency" not in helped.out
    assert old.rc == 0, old.err
    assert old.out == "done\n"
