"""The direct strategy: one request with the context in the prompt, no REPL.

It goes through the run's gateway like the loops, so it shares their limits, usage
report, events and result. A prompt that cannot fit the model's window is refused
before any request (`ConfigError`), so `Auto` can fall back to an RLM.
"""

from __future__ import annotations

from typing import Any

from ..context import Context
from ..errors import BudgetExceeded, ConfigError
from ..events import FinalReached
from ..lm.windows import DEFAULT_WINDOW, context_window
from . import prompts
from .gateway import estimate_tokens
from .render import json_object, jsonable, short
from .run import Outcome, Run
from .signature import SignatureError
from .status import Status

DIRECT_OUTPUT_RESERVE = 4096
"""Tokens left for the answer when deciding whether a direct call fits the window."""


def text_chars(ctx: Context) -> tuple[int, int]:
    """Bounds on the characters of `ctx.as_text()`, from sizes known without reading a
    file or a directory (a byte is a quarter of a character at least, one at most)."""
    if ctx.kind == "text":
        return ctx.size, ctx.size
    if ctx.kind == "file":
        return ctx.nbytes // 4, ctx.nbytes
    if ctx.kind == "dir":
        headers = sum(len(rel) + 9 for rel, _ in ctx.files)  # "=== rel ===\n" and a newline
        return ctx.size // 4 + headers, ctx.size + headers
    n = len(ctx.as_text())
    return n, n


def direct_prompt(run: Run, question: str, contexts: list[Context], inputs: dict[str, Any]) -> str:
    """The one prompt of a direct call; `ConfigError` when it cannot fit the window."""
    cfg = run.cfg
    signature = cfg.signature
    if signature is None:
        answer_format = prompts.DIRECT_TEXT
    else:
        answer_format = prompts.DIRECT_JSON.format(fields=signature.describe())
    shown = "".join(f"- {k} = {short(v, 300)}\n" for k, v in inputs.items())
    window, known = context_window(cfg.model, cfg.context_window)
    at_least = sum(text_chars(c)[0] for c in contexts) // 4
    unread = any(c.kind in ("file", "dir") for c in contexts)
    if unread and at_least > window:  # refused before a file or directory is read whole
        raise ConfigError(
            f"a direct call needs at least {at_least:,} tokens, more than "
            f"{cfg.model}'s window of {window:,}: use the RLM strategy for this input"
        )
    text = "\n\n".join(c.as_text() for c in contexts)
    prompt = prompts.DIRECT.format(
        question=question,
        inputs=prompts.INPUTS.format(inputs=shown) if inputs else "",
        context=text,
        format=answer_format,
    )
    needed = estimate_tokens([{"role": "user", "content": prompt}]) + DIRECT_OUTPUT_RESERVE
    if needed > window:
        assumed = "" if known else f" (assumed {DEFAULT_WINDOW:,}: set context_window)"
        raise ConfigError(
            f"a direct call needs about {needed:,} tokens, more than {cfg.model}'s "
            f"window of {window:,}{assumed}: use the RLM strategy for this input"
        )
    return prompt


async def answer_directly(run: Run, prompt: str) -> Outcome:
    """Send the prompt once and read the answer (validated when there is a signature)."""
    try:
        completion = await run.gateway.complete(
            [{"role": "user", "content": prompt}],
            model=run.cfg.model,
            depth=0,
            rlm="0",
            purpose="direct",
            prompt_for_trace=prompt,
        )
    except BudgetExceeded as exc:
        return Outcome(Status.BUDGET_EXHAUSTED, None, 0, str(exc))
    reply = completion.text
    answer: Any
    signature = run.cfg.signature
    if signature is None:
        answer, output = reply.strip(), None
    else:
        try:
            output = signature.validate(json_object(reply))
        except SignatureError as exc:
            return Outcome(Status.ERROR, reply.strip(), 1, str(exc))
        answer = output.model_dump(mode="json")
    run.emitter.emit(FinalReached(rlm="0", iteration=1, answer=jsonable(answer), source="direct"))
    return Outcome(Status.OK, answer, 1, output=output)
