"""What the host takes from a worker's `result` and `value` frames, with every cap enforced
on this side of the channel.

Model code shares the worker's interpreter: it can find the worker's objects and write frames
of its own, so nothing the worker promises about a frame is taken on trust. Output is cut to
the block's limit, an error and the variable listings to theirs, and an answer larger than
`MAX_FINAL` is refused (the block reports why; a cut answer is never passed off as whole).
Non-finite numbers in an answer become the strings "NaN", "Infinity" and "-Infinity", so
what the run prints, traces and stores is strict JSON.
"""

from __future__ import annotations

import math
from typing import Any

from .base import BlockResult
from .inside import framing

MAX_FINAL = 64 * 1024 * 1024
"""The largest answer (characters of its JSON text, or of its text) a block may give."""
MAX_ERROR = 8_000
"""The longest error text kept from a block (the worker's own are at most 4,000)."""
MAX_NAMES = 1_000
"""The most new-variable names kept from one block."""
MAX_SHOWN = 200
"""The most variables listed with their descriptions, and the longest name or description."""
CUT_MARK = "\n... [{cut:,} characters cut by the host; {total:,} in all] ...\n"


class Malformed(Exception):
    """A frame that is not the worker's shape: a protocol violation."""


def block_result(header: dict[str, Any], max_output: int) -> BlockResult:
    """A `result` frame as a BlockResult, bounded by the caps whatever the frame says."""
    stdout, stderr = header.get("stdout", ""), header.get("stderr", "")
    stdout_len, stderr_len = header.get("stdout_len", 0), header.get("stderr_len", 0)
    error, final = header.get("error"), header.get("final")
    new_vars, shown = header.get("new_vars", []), header.get("vars", {})
    if not (
        type(stdout) is str
        and type(stderr) is str
        and type(stdout_len) is int
        and type(stderr_len) is int
        and (error is None or type(error) is str)
        and (final is None or _is_final(final))
        and type(new_vars) is list
        and all(type(v) is str for v in new_vars)
        and type(shown) is dict
        and all(type(v) is str for v in shown.values())
    ):
        raise Malformed("the worker sent a malformed result frame")
    refused = None
    if final is not None:
        try:
            final, refused = _checked_final(final)
        except RecursionError:
            raise Malformed("the worker sent an answer nested too deeply") from None
    if refused is not None:
        error = f"{error}\n{refused}" if error else refused
    # The worker's own cut adds a line of about 70 characters: allow for it before cutting.
    limit = max_output + 200
    return BlockResult(
        stdout=cut(stdout, limit),
        stdout_len=max(stdout_len, len(stdout)),
        stderr=cut(stderr, limit),
        stderr_len=max(stderr_len, len(stderr)),
        error=None if error is None else cut(error, MAX_ERROR),
        final=final,
        new_vars=[name[:MAX_SHOWN] for name in new_vars[:MAX_NAMES]],
        vars={k[:MAX_SHOWN]: v[:MAX_SHOWN] for k, v in list(shown.items())[:MAX_SHOWN]},
    )


def value_reply(reply: dict[str, Any]) -> dict[str, Any] | None:
    """A `value` frame's answer ({"json": v} or {"text": s}), or None where the variable was
    not found, the frame is malformed, or the value is over `MAX_FINAL`."""
    if reply.get("op") != "value" or not reply.get("found"):
        return None
    value = {k: reply[k] for k in ("json", "text") if k in reply}
    if not _is_final({"kind": "value", **value}):
        return None
    try:
        checked, refused = _checked_final(value)
    except RecursionError:
        return None
    return None if refused else checked


def cut(text: str, limit: int) -> str:
    """`text` whole when it fits `limit`; else its head and tail around a line saying so."""
    if len(text) <= limit:
        return text
    half = max(limit // 2, 1)
    return text[:half] + CUT_MARK.format(cut=len(text) - 2 * half, total=len(text)) + text[-half:]


def strict(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by "NaN", "Infinity", "-Infinity"."""
    if type(value) is float and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if type(value) is list:
        return [strict(item) for item in value]
    if type(value) is dict:
        return {key: strict(item) for key, item in value.items()}
    return value


def _checked_final(final: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The answer in strict JSON, or None and why it was refused (over `MAX_FINAL`)."""
    if "json" in final:
        text = framing.dumps(final["json"])
        if len(text) <= MAX_FINAL:
            if "NaN" in text or "Infinity" in text:
                return {**final, "json": strict(final["json"])}, None
            return final, None
    else:
        text = final["text"]
        if len(text) <= MAX_FINAL:
            return final, None
    return None, (
        f"FINAL: the answer is {len(text):,} characters, more than the {MAX_FINAL:,} "
        "allowed; it was not accepted (give a shorter answer)"
    )


def _is_final(final: Any) -> bool:
    return (
        type(final) is dict
        and final.get("kind") in ("value", "submit")
        and ("json" in final or type(final.get("text")) is str)
    )
