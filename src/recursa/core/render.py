"""Values as the core shows them: in JSON (events, results), in excerpts, from replies.

Shared by the programs, both loops and the direct strategy, so a value is shown the same
way wherever it goes.
"""

from __future__ import annotations

import json
from typing import Any

EXCERPT = 2000
"""Characters of a value shown in an event or a prompt before it is cut."""


def json_object(text: str) -> Any:
    """The first JSON object in a reply (models wrap JSON in prose or fences)."""
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        return value
    return None


def jsonable(value: Any) -> Any:
    """`value` when JSON can hold it, else its `str` (an answer that is a set, a date...)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def short(value: Any, limit: int = EXCERPT) -> str:
    """`value` (its repr unless a string) cut to `limit` characters, saying how long it was."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text):,} characters]"
