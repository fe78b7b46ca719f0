"""Guardrails: noticing a controller that is stuck, and output that floods token space.

A `Guard` watches one RLM's turns. The first time something repeats (the same block, the
same error, turns that change nothing, two states in a loop) the model is told what repeats;
if it goes on stalling, the run stops with status `stalled` and the best answer it can give.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import context_files
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..context import Context


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Thresholds; 0 turns a check off. `print_context_chars`: how much of the context one
    block may print back before it is warned."""

    repeated_block: int = 2
    repeated_error: int = 3
    idle_turns: int = 4
    cycle: bool = True
    print_context_chars: int = 4000

    def __post_init__(self) -> None:
        for name in ("repeated_block", "repeated_error", "idle_turns", "print_context_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"guard {name} must be a whole number >= 0, not {value!r}")


@dataclass(frozen=True, slots=True)
class Detection:
    kind: str
    """repeated_block, repeated_error, idle or cycle."""
    detail: str
    count: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a detection means for this turn: the first one warns, any later one stops."""

    detection: Detection
    action: str
    """warned or stopped."""
    what: str
    """The detection in the words the model is shown."""
    warning: str | None
    """Text for the observation when warned."""

    @property
    def stop(self) -> str | None:
        """Why the run stops, when it does."""
        return self.what if self.action == "stopped" else None


@dataclass(slots=True)
class Guard:
    settings: GuardSettings = field(default_factory=GuardSettings)
    blocks: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    outputs: set[str] = field(default_factory=set)
    states: list[str] = field(default_factory=list)
    idle: int = 0
    warned: bool = False

    def judge(
        self,
        codes: list[str],
        outputs: list[str],
        errors: list[str],
        new_vars: int,
        *,
        texts: Mapping[str, str],
        warning: str,
    ) -> Verdict | None:
        """Observe one turn and decide: None, a warning (the first time), or a stop.
        `texts` words each kind of detection for the model; `warning` wraps the first."""
        detection = self.observe(codes, outputs, errors, new_vars)
        if detection is None:
            return None
        what = texts[detection.kind].format(detail=detection.detail, count=detection.count)
        if self.warned:
            return Verdict(detection, "stopped", what, None)
        self.warned = True
        return Verdict(detection, "warned", what, warning.format(what=what))

    def observe(
        self, codes: list[str], outputs: list[str], errors: list[str], new_vars: int
    ) -> Detection | None:
        """Record one turn; return what it repeats, if anything crossed a threshold."""
        s = self.settings
        found: Detection | None = None
        for code in codes:
            key = _normal(code)
            self.blocks[key] += 1
            if s.repeated_block and self.blocks[key] >= s.repeated_block and found is None:
                found = Detection("repeated_block", _excerpt(code), self.blocks[key])
        for error in errors:
            key = _error_key(error)
            self.errors[key] += 1
            if s.repeated_error and self.errors[key] >= s.repeated_error and found is None:
                found = Detection("repeated_error", key, self.errors[key])
        fresh = [o for o in outputs if o.strip() and _digest(o) not in self.outputs]
        self.outputs.update(_digest(o) for o in outputs)
        self.idle = 0 if (new_vars or fresh) else self.idle + 1
        if s.idle_turns and self.idle >= s.idle_turns and found is None:
            found = Detection("idle", "no new variable and no new output", self.idle)
        self.states.append(_digest("\0".join(codes) + "\1" + "\0".join(outputs)))
        a = self.states[-4:]
        looping = len(a) == 4 and a[0] == a[2] and a[1] == a[3] and a[0] != a[1]
        if s.cycle and found is None and looping:
            found = Detection("cycle", "your last four turns alternate between two", 2)
        return found


def printed_context(output: str, text: str, probe: int = 64, samples: int = 12) -> int:
    """About how many characters of `text` (the context) `output` repeats: sampled windows
    of the output are looked up in the context. Cheap enough for every large block."""
    if len(output) < probe * 2 or not text:
        return 0
    step = max((len(output) - probe) // samples, probe)
    starts = range(0, len(output) - probe + 1, step)
    hits = sum(1 for i in starts if output[i : i + probe] in text)
    return int(len(output) * hits / max(len(starts), 1))


def printed_contexts(output: str, contexts: list[Context]) -> int:
    """`printed_context` over a run's contexts: a text whole, a mapped file by its first and
    last MiB (`context_files.edges`), where what model code prints of it usually comes from.
    Probing the whole file would read all of it (gigabytes) for every large output."""
    total = 0
    for ctx in contexts:
        if ctx.kind == "text" and ctx.text:
            total += printed_context(output, ctx.text)
        elif ctx.kind == "file" and ctx.path:
            try:
                edges = context_files.edges(ctx.path, ctx.nbytes)
            except OSError:  # gone since the run started: the worker reports that itself
                continue
            total += sum(printed_context(output, text) for text in edges)
    return total


def _normal(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


_ADDRESS = re.compile(r"0x[0-9a-f]+|line \d+")


def _error_key(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return _ADDRESS.sub("", lines[-1] if lines else error)[:200]


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def _excerpt(code: str) -> str:
    first = _normal(code).splitlines()[:3]
    return " / ".join(first)[:160]
