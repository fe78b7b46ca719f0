"""Parsing one model turn: its code blocks and any FINAL / FINAL_VAR line outside code."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CODE_LANGS = frozenset({"repl", "python", "py", "python3"})
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+-]*)[^\n]*$", re.MULTILINE)
_FINAL_START = re.compile(r"^[ \t>*_`]*(FINAL_VAR|FINAL)\(", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class FinalMarker:
    """A FINAL line outside code: `text` is the answer as written, or the variable's name."""

    kind: str  # "value" or "var"
    text: str


@dataclass(slots=True)
class ParsedTurn:
    blocks: list[str] = field(default_factory=list)
    final: FinalMarker | None = None
    unclosed: bool = False
    """A code fence was opened and never closed: nothing after it can be trusted to run."""
    prose: str = ""
    """The reply's text outside code blocks (its reasoning)."""


def parse_turn(reply: str) -> ParsedTurn:
    """Split a reply into the code blocks to run (in order) and the prose around them."""
    turn = ParsedTurn()
    prose: list[str] = []
    pos = 0
    fences = list(_FENCE.finditer(reply))
    i = 0
    while i < len(fences):
        opening = fences[i]
        marker, lang = opening.group(1), opening.group(2).lower()
        closing_at = None
        for j in range(i + 1, len(fences)):
            candidate = fences[j]
            if (
                candidate.group(1)[0] == marker[0]
                and len(candidate.group(1)) >= len(marker)
                and not candidate.group(2)
            ):
                closing_at = j
                break
        if closing_at is None:
            prose.append(reply[pos : opening.start()])
            if lang in CODE_LANGS:
                turn.unclosed = True
            pos = len(reply)
            break
        closing = fences[closing_at]
        prose.append(reply[pos : opening.start()])
        if lang in CODE_LANGS:
            body = reply[opening.end() + 1 : closing.start()]
            if body.strip():
                turn.blocks.append(body)
        pos = closing.end()
        i = closing_at + 1
    prose.append(reply[pos:])
    turn.prose = "".join(prose).strip()
    turn.final = find_final(turn.prose)
    return turn


def find_final(prose: str) -> FinalMarker | None:
    """The first FINAL(...) or FINAL_VAR(...) that starts a line of prose, if any.

    The answer runs to the parenthesis that balances the opening one (so it may hold
    parentheses and span lines), else to the last one; one pair of surrounding quotes is
    removed.
    """
    match = _FINAL_START.search(prose)
    if match is None:
        return None
    rest = prose[match.end() :]
    close = _balanced_close(rest)
    if close < 0:
        return None
    text = rest[:close].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    kind = "var" if match.group(1) == "FINAL_VAR" else "value"
    if kind == "var":
        text = text.strip().strip("\"'`")
    return FinalMarker(kind=kind, text=text)


def _balanced_close(rest: str) -> int:
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                return i
            depth -= 1
    return rest.rfind(")")
