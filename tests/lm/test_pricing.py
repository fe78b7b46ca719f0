"""Prices: the packaged table, forgiving lookup, overrides and the --price flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recursa.errors import ConfigError
from recursa.lm import Price, PriceTable, parse_price


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


def test_packaged_table_has_date_note_and_common_models(table: PriceTable) -> None:
    assert table.as_of and len(table.as_of) == 10
    assert table.note and "change" in table.note
    for model in (
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "openai/gpt-4.1",
        "openai/gpt-4.1-mini",
        "openai/gpt-4.1-nano",
        "openai/gpt-5",
        "openai/gpt-5-mini",
        "openai/gpt-5-nano",
        "openai/o3",
        "openai/o4-mini",
        "anthropic/claude-3-5-haiku",
        "anthropic/claude-3-7-sonnet",
        "anthropic/claude-sonnet-4",
        "anthropic/claude-opus-4",
    ):
        price = table.lookup(model)
        assert price is not None, model
        assert 0 < price.input_per_mtok < price.output_per_mtok


def test_known_list_prices(table: PriceTable) -> None:
    assert table.lookup("openai/gpt-4o") == Price(2.5, 10.0, 1.25)
    assert table.lookup("openai/gpt-4o-mini") == Price(0.15, 0.6, 0.075)
    assert table.lookup("anthropic/claude-sonnet-4") == Price(3.0, 15.0, 0.3, 3.75)


def test_date_suffix_is_ignored_but_exact_entries_win(table: PriceTable) -> None:
    assert table.lookup("openai/gpt-4o-2024-08-06") == Price(2.5, 10.0, 1.25)
    assert table.lookup("openai/gpt-4o-2024-05-13") == Price(5.0, 15.0)
    assert table.lookup("anthropic/claude-sonnet-4-20250514") == Price(3.0, 15.0, 0.3, 3.75)
    assert table.lookup("anthropic/claude-3-7-sonnet-latest") == Price(3.0, 15.0, 0.3, 3.75)
    assert table.lookup("OpenAI/gpt-4o") == Price(2.5, 10.0, 1.25)


@pytest.mark.parametrize("provider", ["ollama", "vllm", "llamacpp", "lmstudio"])
def test_local_models_are_free(table: PriceTable, provider: str) -> None:
    assert table.lookup(f"{provider}/anything:7b") == Price(0.0, 0.0)
    assert table.cost(f"{provider}/anything", 10**6, 10**6) == 0.0


def test_unknown_models_have_no_price(table: PriceTable) -> None:
    assert table.lookup("openai/gpt-99") is None
    assert table.lookup("gpt-4o") is None
    assert table.cost("openai/gpt-99", 1, 1) is None


def test_openrouter_falls_back_to_first_party_price(table: PriceTable) -> None:
    assert table.lookup("openrouter/openai/gpt-4o") == Price(2.5, 10.0, 1.25)
    assert table.lookup("openrouter/anthropic/claude-3.7-sonnet") == Price(3.0, 15.0, 0.3, 3.75)
    assert table.lookup("openrouter/meta-llama/llama-3-70b") is None


def test_cost_arithmetic(table: PriceTable) -> None:
    assert table.cost("openai/gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    assert table.cost("openai/gpt-4o", 2000, 500) == pytest.approx(0.005 + 0.005)


def test_overrides_from_file_replace_and_add(table: PriceTable, tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "as_of": "2030-01-01",
                "prices": {
                    "openai/gpt-4o": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                    "vllm/big": {"input_per_mtok": 0.5, "output_per_mtok": 0.5},
                    "openai/my-ft": [4, 8],
                },
            }
        )
    )
    merged = table.with_overrides(path)
    assert merged.lookup("openai/gpt-4o") == Price(1.0, 2.0)
    assert merged.lookup("openai/gpt-4o-2024-08-06") == Price(1.0, 2.0)
    assert merged.lookup("vllm/big") == Price(0.5, 0.5)
    assert merged.lookup("openai/my-ft") == Price(4.0, 8.0)
    assert merged.lookup("openai/gpt-4o-mini") == Price(0.15, 0.6, 0.075)
    assert merged.as_of == "2030-01-01"
    assert table.lookup("openai/gpt-4o") == Price(2.5, 10.0, 1.25)  # the original is untouched


def test_overrides_from_mapping(table: PriceTable) -> None:
    merged = table.with_overrides({"anthropic/claude-x": Price(1, 2), "openai/y": "3,15"})
    assert merged.lookup("anthropic/claude-x") == Price(1, 2)
    assert merged.lookup("openai/y") == Price(3, 15)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"prices": {"gpt-4o": [1, 2]}}),
        json.dumps({"prices": {"openai/x": {"input_per_mtok": 1}}}),
        json.dumps({"prices": {"openai/x": [-1, 2]}}),
        json.dumps({"prices": {"openai/x": [1, 2, 3, 4, 5]}}),
        json.dumps({"prices": {"openai/x": {"input_per_mtok": "a", "output_per_mtok": 1}}}),
    ],
)
def test_bad_override_files_are_config_errors(
    table: PriceTable, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        table.with_overrides(path)
    assert "\n" not in str(info.value)


def test_missing_override_file(table: PriceTable, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read price file"):
        table.with_overrides(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("text", "price"),
    [("3,15", Price(3, 15)), (" 0.15 , 0.6 ", Price(0.15, 0.6)), ("$1,$2", Price(1, 2))],
)
def test_parse_price(text: str, price: Price) -> None:
    assert parse_price(text) == price


@pytest.mark.parametrize(
    "text", ["3", "3,", "a,b", "1,2,3,4,5", "1,2,-3", "-1,2", "nan,1", "inf,1", ""]
)
def test_parse_price_rejects_bad_values(text: str) -> None:
    with pytest.raises(ConfigError, match="INPUT,OUTPUT"):
        parse_price(text)


def test_every_anthropic_model_prices_cache_reads_and_writes(table: PriceTable) -> None:
    for model, price in table.prices.items():
        if model.startswith("anthropic/"):
            assert price.cache_read_per_mtok == pytest.approx(price.input_per_mtok / 10), model
            assert price.cache_write_per_mtok == pytest.approx(price.input_per_mtok * 1.25)


def test_cache_reads_and_writes_priced_at_their_own_rates(table: PriceTable) -> None:
    # 10,000 prompt tokens: 8,000 read from the cache, 1,500 written, 500 plain; 100 out.
    cost = table.cost("anthropic/claude-sonnet-4-5", 10_000, 100, 8_000, 1_500)
    assert cost == pytest.approx((500 * 3 + 8_000 * 0.3 + 1_500 * 3.75 + 100 * 15) / 1e6)
    # Without cache columns, cached tokens cost what plain input does.
    plain = table.with_overrides({"openai/x": "2,8"})
    assert plain.cost("openai/x", 1000, 0, 900) == plain.cost("openai/x", 1000, 0)


@pytest.mark.parametrize(
    ("text", "price"),
    [("3,15,0.3", Price(3, 15, 0.3)), ("3, 15, 0.3, 3.75", Price(3, 15, 0.3, 3.75))],
)
def test_price_flag_takes_cache_columns(text: str, price: Price) -> None:
    assert parse_price(text) == price
    table = PriceTable().with_overrides(
        {"openai/y": {"input_per_mtok": 3, "output_per_mtok": 15, "cache_read_per_mtok": 0.3}}
    )
    assert table.lookup("openai/y") == Price(3, 15, 0.3)
