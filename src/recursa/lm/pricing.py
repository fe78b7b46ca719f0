"""Token prices, so `max_cost` can be enforced before a request is sent.

The packaged table (`recursa/data/prices.json`) holds list prices for common hosted models
as of its `as_of` date; prices change, so users can override any entry with a JSON file of
the same shape or a `--price INPUT,OUTPUT[,CACHE_READ[,CACHE_WRITE]]` flag. Prompt-cache reads
and writes have their own rates where the provider prices them apart. Local servers cost
nothing per token.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from recursa.errors import ConfigError
from recursa.lm.models import LOCAL_PROVIDERS

__all__ = ["Price", "PriceTable", "parse_price"]

_BEDROCK_ANTHROPIC = re.compile(
    r"^(?:[a-z]+\.)?anthropic\.(claude-[a-z0-9.-]+?)(?:-v\d+(?::\d+)?)?$"
)
"""A Bedrock id or inference profile of a Claude model: `us.anthropic.claude-...-v1:0`."""
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")
"""Dated snapshot names (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`) and `-latest`."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input and output tokens, and for prompt-cache reads and writes.

    A cache rate left as None is the plain input rate (a provider that does not discount
    cached tokens, or a price given without cache columns)."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    source: str | None = field(default=None, compare=False)
    """Where the rates were read (the provider's price page); not part of a price's value."""
    as_of: str | None = field(default=None, compare=False)
    """The date they were read, YYYY-MM-DD."""

    def __post_init__(self) -> None:
        for name in _RATES:
            value = getattr(self, name)
            if value is None and name.startswith("cache_"):
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"bad price: {name} must be a number >= 0, got {value!r}")

    @property
    def cache_read_rate(self) -> float:
        return self.input_per_mtok if self.cache_read_per_mtok is None else self.cache_read_per_mtok

    @property
    def cache_write_rate(self) -> float:
        if self.cache_write_per_mtok is None:
            return self.input_per_mtok
        return self.cache_write_per_mtok

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """USD for this many tokens; `input_tokens` is the whole prompt, cached parts included."""
        plain = max(0, input_tokens - cache_read_tokens - cache_write_tokens)
        return (
            plain * self.input_per_mtok
            + cache_read_tokens * self.cache_read_rate
            + cache_write_tokens * self.cache_write_rate
            + output_tokens * self.output_per_mtok
        ) / 1e6


_RATES = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
FREE = Price(0.0, 0.0)
_PRICE_USAGE = (
    "expected INPUT,OUTPUT[,CACHE_READ[,CACHE_WRITE]] in USD per million tokens, e.g. 3,15 "
    "or 3,15,0.3,3.75"
)


def parse_price(text: str) -> Price:
    """Read `INPUT,OUTPUT[,CACHE_READ[,CACHE_WRITE]]` (USD per million tokens, e.g. `3,15`)
    as given on the command line."""
    parts = [p.strip().lstrip("$").strip() for p in (text or "").split(",")]
    usage = f"bad price {text!r}: {_PRICE_USAGE}"
    if not 2 <= len(parts) <= 4 or not all(parts):
        raise ConfigError(usage)
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(usage) from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ConfigError(usage)
    read = values[2] if len(values) > 2 else None
    write = values[3] if len(values) > 3 else None
    return Price(values[0], values[1], read, write)


def _price_from(key: str, value: Any, origin: str) -> Price:
    """One table entry: a Price, {"input_per_mtok", "output_per_mtok", optional
    "cache_read_per_mtok", "cache_write_per_mtok"}, [in, out(, read(, write))] or "in,out"."""
    where = f"{origin}: price for {key!r}"
    if isinstance(value, Price):
        return value
    if isinstance(value, str):
        try:
            return parse_price(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if isinstance(value, Mapping):
        try:
            raw = [value["input_per_mtok"], value["output_per_mtok"]]
        except KeyError:
            raise ConfigError(
                f"{where} needs input_per_mtok and output_per_mtok (USD per million tokens)"
            ) from None
        raw += [value.get("cache_read_per_mtok"), value.get("cache_write_per_mtok")]
        notes = {k: value.get(k) for k in ("source", "as_of")}
        if not all(v is None or isinstance(v, str) for v in notes.values()):
            raise ConfigError(f"{where}: source and as_of must be text")
        try:
            return Price(
                raw[0], raw[1], raw[2], raw[3], source=notes["source"], as_of=notes["as_of"]
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    elif isinstance(value, Sequence) and 2 <= len(value) <= 4:
        raw = list(value)
    else:
        raise ConfigError(f"{where} must be {{input_per_mtok, output_per_mtok}} or [in, out]")
    try:
        return Price(*raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _norm_key(model: str) -> str:
    return model.strip().lower()


def _entries(data: Any, origin: str) -> tuple[dict[str, Price], str | None, str | None]:
    """Read a prices document: {"as_of", "note", "prices": {...}}, or a bare mapping."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: expected a JSON object of PROVIDER/MODEL -> price")
    as_of = data.get("as_of")
    note = data.get("note")
    table = data.get("prices", None)
    if table is None:
        table = {k: v for k, v in data.items() if k not in ("as_of", "note")}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{origin}: 'prices' must be an object of PROVIDER/MODEL -> price")
    prices: dict[str, Price] = {}
    for key, value in table.items():
        if not isinstance(key, str) or "/" not in key.strip("/"):
            raise ConfigError(
                f"{origin}: price key {key!r} must be PROVIDER/MODEL, e.g. openai/gpt-4o"
            )
        prices[_norm_key(key)] = _price_from(key, value, origin)
    return (
        prices,
        as_of if isinstance(as_of, str) else None,
        note if isinstance(note, str) else None,
    )


@functools.cache
def _default_entries() -> tuple[dict[str, Price], str | None, str | None]:
    text = resources.files("recursa").joinpath("data/prices.json").read_text(encoding="utf-8")
    return _entries(json.loads(text), "recursa/data/prices.json")


class PriceTable:
    """An immutable map of `PROVIDER/MODEL` -> Price, with forgiving lookup."""

    def __init__(
        self,
        prices: Mapping[str, Price] | None = None,
        *,
        as_of: str | None = None,
        note: str | None = None,
    ) -> None:
        self._prices = MappingProxyType({_norm_key(k): v for k, v in (prices or {}).items()})
        self.as_of = as_of
        self.note = note

    @property
    def prices(self) -> Mapping[str, Price]:
        """The explicit entries (read-only); lookup also knows local and dated names."""
        return self._prices

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} prices, as_of={self.as_of!r})"

    @classmethod
    def default(cls) -> PriceTable:
        """The packaged table of list prices."""
        prices, as_of, note = _default_entries()
        return cls(prices, as_of=as_of, note=note)

    def with_overrides(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> PriceTable:
        """A new table with entries from a JSON file (same shape as the packaged one) or
        a mapping (values: Price, {input_per_mtok, output_per_mtok}, [in, out] or "in,out")
        replacing or adding to this one's."""
        if isinstance(source, Mapping):
            prices, as_of, _ = _entries(source, "price overrides")
        else:
            path = Path(source)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read price file {str(path)!r}: {exc.strerror}") from None
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"price file {str(path)!r} is not valid JSON: {exc}") from None
            prices, as_of, _ = _entries(data, f"price file {str(path)!r}")
        merged = dict(self._prices)
        merged.update(prices)
        return PriceTable(merged, as_of=as_of or self.as_of, note=self.note)

    def lookup(self, model: str) -> Price | None:
        """The price of `PROVIDER/MODEL`: exact entry, else the entry without a date suffix;
        local providers are free; `openrouter/X/Y` falls back to X/Y's list price and
        `azure/DEPLOYMENT` to `openai/DEPLOYMENT`'s, a Claude model on Bedrock to
        Anthropic's. None when unknown."""
        key = _norm_key(model)
        found = self._match(key)
        if found is not None:
            return found
        provider, _, name = key.partition("/")
        if provider in LOCAL_PROVIDERS:
            return FREE
        if provider == "openrouter" and "/" in name:
            # OpenRouter passes first-party list prices through; its names use dots for
            # versions where Anthropic uses dashes (claude-3.5-sonnet).
            return self._match(name) or self._match(name.replace(".", "-"))
        if provider == "bedrock" and (claude := _BEDROCK_ANTHROPIC.match(name)):
            # Bedrock's on-demand list prices for Claude are Anthropic's.
            return self._match(f"anthropic/{claude.group(1)}")
        if provider == "litellm" and "/" in name:
            return self._match(name)  # litellm/openai/gpt-4o costs what openai/gpt-4o does
        if provider == "azure":
            # A deployment is usually named after its model; Azure's global list prices
            # are OpenAI's. Other names need --price.
            return self._match(f"openai/{name}")
        return None

    def _match(self, key: str) -> Price | None:
        found = self._prices.get(key)
        if found is None:
            stripped = _DATE_SUFFIX.sub("", key)
            if stripped != key:
                found = self._prices.get(stripped)
        return found

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None:
        """USD for this many tokens of `model`, or None when its price is unknown."""
        price = self.lookup(model)
        if price is None:
            return None
        return price.cost(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
