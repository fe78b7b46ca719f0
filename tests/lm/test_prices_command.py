"""The price table's provenance and `recursa prices`, which lists it as a run would price."""

from __future__ import annotations

import json
import re

from e2e_helpers import run_cli
from recursa.lm import PriceTable


def test_every_shipped_price_has_its_source_and_date() -> None:
    table = PriceTable.default()
    assert len(table.prices) > 30
    for model, price in table.prices.items():
        assert price.source and price.source.startswith("https://"), model
        assert price.as_of and re.fullmatch(r"\d{4}-\d\d-\d\d", price.as_of), model


def test_prices_lists_the_table_with_cache_columns_source_and_date() -> None:
    done = run_cli(["prices"])
    assert done.rc == 0, done.err
    lines = done.out.splitlines()
    assert lines[0].split() == [
        "MODEL", "INPUT", "OUTPUT", "CACHE_READ", "CACHE_WRITE", "AS_OF", "SOURCE",
    ]  # fmt: skip
    assert len(lines) == 1 + len(PriceTable.default().prices)
    sonnet = next(line.split() for line in lines if line.startswith("anthropic/claude-sonnet-4-5 "))
    assert sonnet[1:6] == ["3", "15", "0.3", "3.75", "2025-12-01"]
    assert sonnet[6].startswith("https://")


def test_prices_applies_price_flags_filters_and_speaks_json() -> None:
    done = run_cli(["prices", "gemini", "--price", "gemini/my-tuned=1,2,0.1", "--json"])
    assert done.rc == 0, done.err
    table = json.loads(done.out)
    assert set(table) >= {"gemini/gemini-2.5-pro", "gemini/my-tuned"}
    assert all(model.startswith("gemini/") for model in table)
    assert table["gemini/my-tuned"] == {
        "input_per_mtok": 1.0, "output_per_mtok": 2.0, "cache_read_per_mtok": 0.1,
        "cache_write_per_mtok": None, "source": None, "as_of": None,
    }  # fmt: skip
    bad = run_cli(["prices", "--price", "openai/x=1"])
    assert bad.rc == 2 and len(bad.err_lines) == 1 and "CACHE_READ" in bad.err


def test_doctor_names_the_provider_extras_installed() -> None:
    from importlib.util import find_spec

    done = run_cli(["doctor"])
    line = next(x for x in done.out.splitlines() + done.err_lines if x.startswith("extras"))
    for extra, module in (("bedrock", "botocore"), ("litellm", "litellm")):
        assert (extra in line.split(": ", 1)[1].split(", ")) == (find_spec(module) is not None)
