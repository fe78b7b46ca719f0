"""Any model the `llm` library knows, as `llm/MODEL_ID` (extra: llm).

`llm.get_model()` resolves the id or alias, so its stored keys (`llm keys set`) and the
models other `llm` plugins register all work. The conversation goes as `messages=` (system,
user and assistant messages, as `llm` 0.32 takes them). The output cap goes as the model's
own option (`max_tokens` or `max_output_tokens`); a model with neither cannot carry a cap,
so under `--max-tokens` or `--max-cost` its requests are refused rather than sent uncapped.
Usage is what the model reports through `llm`; a model that reports none is usage that
cannot be trusted under those limits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from recursa.errors import ConfigError, LMConnectionError, LMResponseError, LMStatusError
from recursa.lm.base import Completion, Message

__all__ = ["CAP_OPTIONS", "LLMLibraryClient", "check_model"]

CAP_OPTIONS = ("max_tokens", "max_output_tokens")
"""The option names `llm` plugins give the output cap, in the order they are looked for."""


def _llm() -> Any:
    try:
        import llm
    except ImportError:
        raise ConfigError("llm/ models need the llm library: pip install 'recursa[llm]'") from None
    if not hasattr(llm, "user"):
        raise ConfigError("llm/ models need llm 0.32 or later: pip install -U llm")
    return llm


def _get_model(model_id: str) -> Any:
    llm = _llm()
    try:
        return llm.get_model(model_id)
    except llm.UnknownModelError:
        raise ConfigError(f"llm knows no model {model_id!r}: see `llm models`") from None


def check_model(model_id: str) -> None:
    """Fail now, in one line, when `llm` is missing or does not know the model."""
    _get_model(model_id)


def _cap_option(model: Any) -> str | None:
    fields = getattr(model.Options, "model_fields", {})
    return next((name for name in CAP_OPTIONS if name in fields), None)


def _error(model_id: str, exc: Exception) -> Exception:
    """An exception from a model's plugin as the gateway's errors (status errors retry)."""
    text = " ".join(f"llm model {model_id}: {exc}".split())[:480]
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if isinstance(status, int) and 400 <= status < 600:
        return LMStatusError(status, text)
    if isinstance(exc, ConnectionError | TimeoutError):
        return LMConnectionError(text)
    return LMResponseError(text)


class LLMLibraryClient:
    """`LMClient` over `llm`: one `model.prompt(messages=...)` per call, in a thread."""

    wire = "llm"

    def _send(
        self, messages: list[Message], model_id: str, max_tokens: int | None, temp: float | None
    ) -> Completion:
        llm = _llm()
        model = _get_model(model_id)
        options: dict[str, Any] = {}
        if max_tokens is not None:
            cap = _cap_option(model)
            if cap is None:
                raise LMResponseError(
                    f"llm model {model_id} has no max_tokens option: a capped request "
                    "cannot be sent to it (drop --max-tokens/--max-cost or pick another model)"
                )
            options[cap] = max_tokens
        if temp is not None and "temperature" in getattr(model.Options, "model_fields", {}):
            options["temperature"] = temp
        make = {"system": llm.system, "assistant": llm.assistant}
        chain = [make.get(m["role"], llm.user)(m["content"]) for m in messages]
        try:
            response = model.prompt(messages=chain, stream=False, **options)
            text = response.text()
            usage = response.usage()
        except llm.ModelError as exc:  # a missing key, among others: one clear line
            raise ConfigError(" ".join(f"llm model {model_id}: {exc}".split())) from None
        except Exception as exc:
            raise _error(model_id, exc) from None
        problem = None
        if usage.input is None or usage.output is None:
            problem = f"llm model {model_id} reported no token usage"
        return Completion(
            text=text,
            input_tokens=usage.input or 0,
            output_tokens=usage.output or 0,
            model=model_id,
            usage_problem=problem,
        )

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        return await asyncio.to_thread(self._send, messages, model, max_tokens, temperature)

    async def aclose(self) -> None:
        """Nothing to release: `llm` owns its models' clients."""
