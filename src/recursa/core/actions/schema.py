"""The action protocol: what a root model may send in action mode, as pydantic models.

A reply is one JSON object or a list of them (optionally inside a ```json fence), each with
an `action` field naming one of ACTIONS. Every item is validated on its own, so a bad item
is reported by position with the field that is wrong and what the action takes; nothing in
here raises on a model's mistake: `parse_reply` returns errors as text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
"""A variable a result is stored in: an identifier of at most 64 characters."""
STEP_PATTERN = r'(?:\[-?[0-9]{1,9}\]|\.[A-Za-z_][A-Za-z0-9_]{0,63}|\["[^"\]\\]{1,300}"\])'
REF_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}" + STEP_PATTERN + "*$"
"""A variable read: a name, then any of `[3]`, `[-1]`, `.key`, `["a key"]` (into lists and
mappings)."""

MAX_ACTIONS_PER_REPLY = 16
MAX_PROMPT_TEMPLATE = 20_000

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Ref = Annotated[str, Field(pattern=REF_PATTERN, max_length=300)]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def arguments(self) -> dict[str, Any]:
        """The action as the model sent it, defaults included (for events and guards)."""
        return self.model_dump(mode="json")


class Preview(_Action):
    """A slice of a variable: characters of a text, items of a list or mapping."""

    action: Literal["preview"]
    var: Ref
    start: int = 0
    length: int = Field(1000, ge=1, le=50_000)


class Search(_Action):
    """Literal (default) or regex search; `^`/`$` match at line ends."""

    action: Literal["search"]
    var: Ref
    pattern: str = Field(min_length=1, max_length=2000)
    regex: bool = False
    ignore_case: bool = False
    max_hits: int = Field(20, ge=1, le=200)
    context_chars: int = Field(80, ge=0, le=500)
    into: Name | None = None


class Lines(_Action):
    """Lines `start` (1-based) to `start + count - 1`, numbered."""

    action: Literal["lines"]
    var: Ref
    start: int = Field(1, ge=1)
    count: int = Field(50, ge=1, le=2000)
    into: Name | None = None


class Load(_Action):
    """A range of a variable into a new variable: [start, end) in chars, lines or items."""

    action: Literal["load"]
    var: Ref
    start: int = 0
    end: int | None = None
    unit: Literal["chars", "lines", "items"] | None = None
    into: Name


class Chunk(_Action):
    """Split a text (or a list) into a list of chunks of `size` chars, lines or items."""

    action: Literal["chunk"]
    var: Ref
    size: int = Field(ge=1)
    overlap: int = Field(0, ge=0)
    unit: Literal["chars", "lines", "items"] | None = None
    into: Name


class ExtractOverChunks(_Action):
    """One sub-model call per item of a list, all at once; answers kept in order."""

    action: Literal["extract_over_chunks"]
    var: Ref
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_TEMPLATE)
    into: Name
    model: str | None = None


class SubLM(_Action):
    """One prompt to the sub-model; `{name}` is replaced by that variable's text."""

    action: Literal["sub_lm"]
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_TEMPLATE)
    into: Name | None = None
    model: str | None = None


class JsonParse(_Action):
    """The JSON value in a variable's text (the first one, when prose surrounds it)."""

    action: Literal["json_parse"]
    var: Ref
    into: Name


class Extract(_Action):
    """Typed fields read from a variable's text by the sub-model, checked against types."""

    action: Literal["extract"]
    var: Ref
    fields: dict[Annotated[str, Field(pattern=NAME_PATTERN)], str] = Field(
        min_length=1, max_length=30
    )
    instructions: str = Field("", max_length=4000)
    into: Name
    model: str | None = None


class Aggregate(_Action):
    """count, sum, unique, top_k or concat over a list (or one field of its objects)."""

    action: Literal["aggregate"]
    var: Ref
    op: Literal["count", "sum", "unique", "top_k", "concat"]
    field: str | None = Field(None, max_length=200)
    k: int = Field(10, ge=1, le=1000)
    match: str | None = Field(None, max_length=2000)
    exclude: str | None = Field(None, max_length=2000)
    separator: str = Field("\n", max_length=100)
    into: Name | None = None


class ToolCall(_Action):
    """An allowlisted host tool; `{"$var": "name"}` in args passes a variable's value."""

    action: Literal["tool_call"]
    name: str = Field(min_length=1, max_length=200)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    into: Name | None = None


class WriteVar(_Action):
    """Set a variable to a JSON value, or to (a part of) another variable."""

    action: Literal["write_var"]
    name: Name
    value: Any = None
    var: Ref | None = None


class Vars(_Action):
    """List the variables, with their types and sizes."""

    action: Literal["vars"]


class Final(_Action):
    """End the run with a value, or with (a part of) a variable."""

    action: Literal["final"]
    value: Any = None
    var: Ref | None = None


Action = Annotated[
    Preview
    | Search
    | Lines
    | Load
    | Chunk
    | ExtractOverChunks
    | SubLM
    | JsonParse
    | Extract
    | Aggregate
    | ToolCall
    | WriteVar
    | Vars
    | Final,
    Field(discriminator="action"),
]
ADAPTER: TypeAdapter[Any] = TypeAdapter(Action)

MODELS: dict[str, type[_Action]] = {
    model.model_fields["action"].annotation.__args__[0]: model  # type: ignore[union-attr]
    for model in (
        Preview,
        Search,
        Lines,
        Load,
        Chunk,
        ExtractOverChunks,
        SubLM,
        JsonParse,
        Extract,
        Aggregate,
        ToolCall,
        WriteVar,
        Vars,
        Final,
    )
}
ACTIONS: tuple[str, ...] = tuple(MODELS)


def usage(name: str) -> str:
    """`search(var, pattern, regex=false, ...)`: what an action takes, as the model is told."""
    model = MODELS[name]
    parts = []
    for field_name, info in model.model_fields.items():
        if field_name == "action":
            continue
        if info.is_required():
            parts.append(field_name)
        else:
            default = info.get_default(call_default_factory=True)
            parts.append(f"{field_name}={json.dumps(default)}")
    return f"{name}({', '.join(parts)})"


VALID_ACTIONS = ", ".join(ACTIONS)


@dataclass(slots=True)
class Item:
    """One item of a reply: the validated action, or why it is not one."""

    raw: Any
    action: Any = None
    error: str | None = None

    @property
    def name(self) -> str:
        if self.action is not None:
            name: str = self.action.action
            return name
        if isinstance(self.raw, dict) and isinstance(self.raw.get("action"), str):
            raw: str = self.raw["action"]
            return raw[:40]
        return "?"


@dataclass(slots=True)
class ParsedReply:
    items: list[Item] = field(default_factory=list)
    error: str | None = None
    """Why nothing in the reply could be read as actions (the items are then empty)."""


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)
_CODE_LANGS = frozenset({"repl", "python", "py", "python3", "sh", "bash"})


def parse_reply(text: str) -> ParsedReply:
    """A model's reply as a list of validated actions (or errors); never raises."""
    if not text.strip():
        return ParsedReply(error="your reply was empty.")
    values: list[Any] = []
    fences = _FENCE.findall(text)
    if fences:
        code = [lang for lang, _ in fences if lang.lower() in _CODE_LANGS]
        if code and len(code) == len(fences):
            return ParsedReply(
                error=f"your reply holds a ```{code[0]} code block, but no code runs in "
                "action mode: send JSON actions instead."
            )
        for lang, body in fences:
            if lang.lower() in _CODE_LANGS:
                continue
            try:
                values.append(json.loads(body))
            except ValueError as exc:
                return ParsedReply(error=f"a ```{lang or ''} block is not valid JSON ({exc}).")
    else:
        value, error = _first_json(text)
        if error is not None:
            return ParsedReply(error=error)
        values.append(value)
    raw_items: list[Any] = []
    for value in values:
        if (
            isinstance(value, dict)
            and "action" not in value
            and isinstance(value.get("actions"), list)
        ):
            value = value["actions"]
        if isinstance(value, list):
            raw_items.extend(value)
        else:
            raw_items.append(value)
    if not raw_items:
        return ParsedReply(error="your reply holds an empty list: no action to run.")
    items = [_validate(raw) for raw in raw_items[:MAX_ACTIONS_PER_REPLY]]
    for raw in raw_items[MAX_ACTIONS_PER_REPLY:]:
        why = f"at most {MAX_ACTIONS_PER_REPLY} actions run per reply: send the rest next."
        items.append(Item(raw, error=why))
    return ParsedReply(items=items)


def _first_json(text: str) -> tuple[Any, str | None]:
    stripped = text.strip()
    try:
        return json.loads(stripped), None
    except ValueError as exc:
        whole_error = str(exc)
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict | list):
            return value, None
    if stripped[:1] in "[{":
        return None, f"your reply is not valid JSON ({whole_error})."
    return None, "your reply holds no JSON: send one JSON object or a list of them."


def _validate(raw: Any) -> Item:
    if not isinstance(raw, dict):
        shown = json.dumps(raw)[:80] if _dumpable(raw) else repr(raw)[:80]
        return Item(raw, error=f"an action must be a JSON object, not {shown}.")
    name = raw.get("action")
    if "action" not in raw:
        return Item(raw, error=f'an action needs an "action" field, one of: {VALID_ACTIONS}.')
    if not isinstance(name, str) or name not in MODELS:
        shown = json.dumps(name)[:60] if _dumpable(name) else repr(name)[:60]
        return Item(raw, error=f"unknown action {shown}; the actions are: {VALID_ACTIONS}.")
    try:
        return Item(raw, action=ADAPTER.validate_python(raw))
    except ValidationError as exc:
        return Item(raw, error=explain(name, exc))
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - defensive
        return Item(raw, error=f"{name}: {exc}. It takes {usage(name)}.")


def explain(name: str, exc: ValidationError) -> str:
    """A validation failure as one or a few lines naming each bad field."""
    lines = []
    for error in exc.errors()[:5]:
        loc = [str(p) for p in error["loc"] if str(p) != name]
        where = ".".join(loc) or "(the object)"
        kind = error["type"]
        if kind == "missing":
            lines.append(f"field `{where}` is missing")
        elif kind == "extra_forbidden":
            lines.append(f"`{where}` is not a field of {name}")
        elif kind == "string_pattern_mismatch":
            what = (
                "a variable name (letters, digits and _)"
                if (loc and loc[-1] in ("into", "name")) or "fields" in loc
                else "a variable, optionally indexed: name, name[0], name[-1].key"
            )
            lines.append(f"`{where}` must be {what}, not {_short(error.get('input'))}")
        else:
            lines.append(f"`{where}`: {error['msg']} (got {_short(error.get('input'))})")
    return f"{name}: " + "; ".join(lines) + f". It takes {usage(name)}."


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if _dumpable(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dumpable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True
