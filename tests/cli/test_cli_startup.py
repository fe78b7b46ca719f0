"""`recursa --help` starts fast because it loads only the CLI: no engine, no LM clients, no
sandbox, no eval harness, no mining; and each program is built by `recursa.options`
whichever interface asks for it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from e2e_helpers import host_env
from recursa import Auto, ConfigError, Direct, PriceTable
from recursa.options import make_program, price_table
from recursa.server.settings import ServeSettings

HEAVY = (
    "recursa.core.programs",
    "recursa.core.gateway",
    "recursa.sandbox",
    "recursa.executors",
    "recursa.evals.harness",
    "recursa.mining.mine",
    "httpx",
    "pydantic",
    "asyncio",
    "rich",
    "ray",
)


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after running `code`."""
    probe = (
        "import sys, contextlib, io, json\n"
        f"{code}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=host_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def help_loads(args: list[str]) -> list[str]:
    code = (
        "from recursa.cli import dispatch\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    assert dispatch({args!r}) == 0\n"
        "assert 'Usage: recursa' in out.getvalue()\n"
    )
    return loaded_after(code)


@pytest.mark.parametrize("args", [["--help"], ["mine", "--help"], ["runs", "--help"]])
def test_help_loads_neither_the_engine_nor_the_sandbox(args: list[str]) -> None:
    assert help_loads(args) == []


@pytest.mark.parametrize("args", [["run", "--help"], ["eval", "--help"], ["batch", "--help"]])
def test_a_commands_help_loads_its_choices_but_not_the_engine(args: list[str]) -> None:
    assert set(help_loads(args)) <= {"recursa.sandbox", "recursa.executors", "asyncio"}


def test_the_package_loads_a_public_name_when_it_is_first_used() -> None:
    assert loaded_after("import recursa") == []
    assert "recursa.core.programs" in loaded_after("from recursa import RLM")


def test_options_make_the_program_each_strategy_names() -> None:
    opts = {
        "model": "openai/m",
        "base_url": "http://127.0.0.1:9/v1",
        "max_depth": 1,
        "max_iterations": 5,
        "cell_timeout": 9.0,
        "concurrency": 2,
        "max_output_chars": 500,
        "sandbox": "subprocess",
    }
    assert isinstance(make_program({**opts, "strategy": "auto"}, env={}), Auto)
    direct = make_program({**opts, "strategy": "direct", "price_args": ["openai/m=1,2"]}, env={})
    assert isinstance(direct, Direct)
    assert direct.max_iterations == 5 and direct.cell_timeout == 9.0
    assert direct.prices.lookup("openai/m") == PriceTable.default().with_overrides(
        {"openai/m": "1,2"}
    ).lookup("openai/m")


def test_a_bad_price_is_one_config_error_for_every_interface() -> None:
    with pytest.raises(ConfigError, match=r"bad --price 'oops'"):
        price_table(None, ["oops"])
    settings = ServeSettings(default_model="openai/m", price_args=("oops",))
    with pytest.raises(ConfigError, match=r"bad --price 'oops'"):
        settings.make_rlm("openai/m", {})


@pytest.mark.parametrize(
    "module",
    ["recursa.cli.serve", "recursa.cli.evals", "recursa.cli.batch", "recursa.server.settings"],
)
def test_each_interface_module_imports_first_without_a_cycle(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=host_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
