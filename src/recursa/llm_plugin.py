"""The `llm` plugin (extra: llm): models named `recursa/PROVIDER/MODEL` for the `llm` command.

    llm -m recursa/openai/gpt-5 -f big.log "Which services failed after midnight?"

The prompt is the question; fragments (`-f`) and attachments (`-a`) are the contexts (one:
`context`; several: `context_0`, `context_1`, ...). Keys, base URLs and the sub-model come
from the environment exactly as for `recursa run` (`-o sub_model ...` and `-o base_url ...`
also work), and the limits are options (`-o max_llm_calls 50`). The models registered are
RECURSA_MODEL, those listed in RECURSA_LLM_MODELS (comma- or space-separated) and the models
of recursa's price table. Any model `llm` itself knows is `llm/MODEL_ID` in recursa
(`recursa/llm/claude-4-sonnet` here, root or `-o sub_model llm/...`), with `llm`'s stored keys.

The plugin also registers the tool `recursa_rlm`, for models that use `llm`'s tool calling:

    llm -m gpt-4.1 -T recursa_rlm "Use recursa_rlm on $(cat big.log | head -c 2000000) ..."

It answers a question over a long text with an RLM of RECURSA_MODEL (and RECURSA_SUB_MODEL).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import llm
from pydantic import Field

from .errors import RecursaError

PREFIX = "recursa/"
TEXT_TYPES = frozenset(
    {
        "text/plain",
        "text/markdown",
        "text/csv",
        "text/html",
        "text/xml",
        "text/x-python",
        "text/x-log",
        "application/json",
        "application/xml",
        "application/x-ndjson",
        "application/x-yaml",
    }
)


def model_names(env: dict[str, str] | None = None) -> list[str]:
    environ = os.environ if env is None else env
    names = [environ.get("RECURSA_MODEL", "")]
    names += environ.get("RECURSA_LLM_MODELS", "").replace(",", " ").split()
    try:
        from .lm.pricing import PriceTable

        names += sorted(PriceTable.default().prices)
    except Exception:  # the table is a convenience: never let it break `llm`
        pass
    return [name for name in dict.fromkeys(names) if name.count("/") >= 1 and name.strip()]


@llm.hookimpl
def register_models(register: Any) -> None:
    for name in model_names():
        register(RecursaModel(name))


@llm.hookimpl
def register_tools(register: Any) -> None:
    register(recursa_rlm)


def recursa_rlm(question: str, context: str) -> str:
    """Answer a question about a long text with a Recursive Language Model. The text is kept
    in a sandboxed Python REPL that a model explores with code and sub-queries, so it may be
    far longer than any context window. Give the whole text as `context`."""
    from .context import from_text
    from .server.settings import ServeSettings

    model = os.environ.get("RECURSA_MODEL", "").strip()
    if not model:
        raise ValueError("recursa_rlm needs RECURSA_MODEL (PROVIDER/MODEL) in the environment")
    settings = ServeSettings(
        default_model=model,
        sub_model=os.environ.get("RECURSA_SUB_MODEL") or None,
        base_url=None,
        limits={},
        sandbox="auto",
    )
    try:
        result = settings.make_rlm(model, {}).run(question, from_text(context, "<tool context>"))
    except RecursaError as exc:
        raise ValueError(f"recursa: {exc}") from None
    if result.answer is None:
        raise ValueError(f"recursa: the run ended {result.status} without an answer")
    answer = result.answer
    return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)


class RecursaModel(llm.Model):
    can_stream = False
    attachment_types = TEXT_TYPES

    class Options(llm.Options):
        sub_model: str | None = Field(None, description="Model for llm_query, PROVIDER/MODEL")
        base_url: str | None = Field(None, description="Base URL of the provider's server")
        max_depth: int | None = Field(None, description="1: no child RLMs (default)", ge=1)
        max_iterations: int | None = Field(None, description="Root turns (default 30)", ge=1)
        max_llm_calls: int | None = Field(None, description="LM requests in all", ge=1)
        max_tokens: int | None = Field(None, description="Tokens in all, in + out", ge=1)
        max_cost: float | None = Field(None, description="USD in all", gt=0)
        timeout: float | None = Field(None, description="Seconds for the whole run", gt=0)
        cell_timeout: float | None = Field(None, description="Seconds per code block", gt=0)
        sandbox: str | None = Field(None, description="auto, bwrap, landlock, docker or subprocess")
        progress: bool | None = Field(None, description="Show progress on standard error")

    def __init__(self, target: str) -> None:
        self.target = target
        self.model_id = PREFIX + target

    def execute(
        self,
        prompt: Any,
        stream: bool,
        response: Any,
        conversation: Any,
    ) -> Iterator[str]:
        from .context import from_bytes, from_text
        from .server.settings import ServeSettings

        options = prompt.options
        question = _question(prompt)
        contexts = []
        for i, fragment in enumerate(getattr(prompt, "fragments", None) or []):
            name = getattr(fragment, "source", None) or f"<fragment {i}>"
            contexts.append(from_text(str(fragment), str(name)))
        for i, attachment in enumerate(prompt.attachments or []):
            name = attachment.path or attachment.url or f"<attachment {i}>"
            contexts.append(from_bytes(attachment.content_bytes() or b"", str(name)))
        limits = {
            name: getattr(options, name, None)
            for name in (
                "max_depth",
                "max_iterations",
                "max_llm_calls",
                "max_tokens",
                "max_cost",
                "timeout",
                "cell_timeout",
            )
        }
        listeners = []
        if options.progress:
            from .progress import Progress

            listeners.append(Progress())
        try:
            settings = ServeSettings(
                default_model=self.target,
                sub_model=options.sub_model,
                base_url=options.base_url,
                limits={},
                sandbox=options.sandbox or "auto",
            )
            rlm = settings.make_rlm(self.target, limits)
            result = rlm.run(
                question,
                contexts[0] if len(contexts) == 1 else None,
                contexts=contexts if len(contexts) > 1 else None,
                on_event=listeners[0] if listeners else None,
            )
        except RecursaError as exc:
            raise llm.ModelError(f"recursa: {exc}") from None
        response.response_json = result.to_dict()
        usage = result.usage
        response.set_usage(
            input=usage.get("input_tokens"),
            output=usage.get("output_tokens"),
            details={"llm_calls": usage.get("llm_calls"), "cost_usd": usage.get("cost_usd")},
        )
        if result.status == "error":
            raise llm.ModelError(f"recursa: the run failed: {result.error}")
        if result.status != "ok":
            why = f": {result.error}" if result.error else ""
            print(f"recursa: stopped ({result.status}){why}", file=sys.stderr)
        answer = result.answer
        if answer is None:
            return
        yield answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)


def _question(prompt: Any) -> str:
    """The prompt's own text, without the fragments that newer `llm` joins into it."""
    text = prompt._prompt if hasattr(prompt, "_prompt") else prompt.prompt
    text = (text or "").strip()
    system = (prompt.system or "").strip()
    if not text:
        raise llm.ModelError("recursa: the prompt is the question, and it is empty")
    return f"{system}\n\n{text}" if system else text
