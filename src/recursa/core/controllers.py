"""Which root models are known to drive RLMs well (data in the package, user-extensible).

The table lists model families, not exact names: a family matches every size, date and
variant of its name under any provider, so `claude-sonnet-4` covers
`anthropic/claude-sonnet-4-5` and `qwen3` covers `ollama/qwen3:32b`. Exact PROVIDER/MODEL
names (`controllers`) are kept for user files.
"""

from __future__ import annotations

import functools
import json
import os
import re
from importlib import resources
from typing import Any

from ..errors import ConfigError

_BOUNDARY = re.compile(r"[-:._@/ ]|$")
"""What may follow a family's name: a size, date or variant (`-4-5`, `:32b`, `.1`), or
nothing."""


@functools.cache
def _table(extra_path: str | None) -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact PROVIDER/MODEL names, family names), all lowercase."""
    text = resources.files("recursa").joinpath("data/controllers.json").read_text("utf-8")
    tables = [json.loads(text)]
    if extra_path:
        try:
            with open(extra_path, encoding="utf-8") as fh:
                extra: Any = json.load(fh)
            if not isinstance(extra, dict):
                raise ValueError("expected an object with `families` or `controllers`")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"RECURSA_CONTROLLERS={extra_path}: {exc}") from None
        tables.append(extra)
    exact = {k.lower() for t in tables for k in (t.get("controllers") or {})}
    families = {k.lower() for t in tables for k in (t.get("families") or {})}
    return frozenset(exact), tuple(sorted(families, key=len, reverse=True))


def family_of(model: str) -> str | None:
    """The table's family of `model` (PROVIDER/MODEL, case-insensitive), or None."""
    exact, families = _table(os.environ.get("RECURSA_CONTROLLERS") or None)
    name = model.strip().lower()
    if name in exact:
        return name
    _provider, _, rest = name.partition("/")
    base = (rest or name).rsplit("/", 1)[-1]  # vllm/Qwen/Qwen3-32B -> qwen3-32b
    for family in families:
        if base.startswith(family) and _BOUNDARY.match(base, len(family)):
            return family
    return None


def known_controller(model: str) -> bool:
    """True when `model` belongs to a family of the table (or is named in it exactly)."""
    return family_of(model) is not None
