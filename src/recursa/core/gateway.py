"""The one door every LM request of a run goes through, at every depth.

For each attempt (retries included) it reserves against the ledger, takes one permit of the
run's single concurrency limit (invariant 2), sends, and settles with the usage the server
reported. Retries back off with jitter and honour Retry-After.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..budget import Ledger
from ..errors import BudgetExceeded, ConfigError, LMConnectionError, LMError, LMStatusError
from ..events import BudgetRefused, Emitter, LMCallEnded, LMCallStarted
from ..images import IMAGE_TOKEN_BOUND
from ..lm.base import Completion, LMClient, Message, images_of, text_of
from ..lm.models import Endpoint, ModelSpec, make_client, parse_model, resolve_endpoint
from ..lm.openai_compat import DEFAULT_DEADLINE, DEFAULT_MAX_RESPONSE_BYTES
from ..lm.retry import RetryPolicy

PROMPT_EXCERPT = 1000
"""Characters of a sub-query's prompt kept in its event: prompts hold chunks of the
context, which is recorded by reference only unless asked for (--trace-context)."""


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who is asking, for transports that care (replay): set around each attempt."""

    rlm: str
    depth: int
    purpose: str
    attempt: int


CURRENT_CALL: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
    "recursa_current_call", default=None
)


def messages_sha256(messages: list[Message]) -> str:
    digest = hashlib.sha256()
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # text, then each image by its hash
            marks = "".join(f"\0image:{p['sha256']}" for p in content if p.get("type") == "image")
            content = text_of(content) + marks
        digest.update(f"{message.get('role')}\0{content or ''}\0".encode())
    return digest.hexdigest()


MESSAGE_FRAMING = 8
"""Tokens a chat template may add around one message (role markers, separators)."""
REQUEST_FRAMING = 64
"""Tokens a server may add to a whole request (a template's preamble, the reply's start)."""


def input_token_bound(messages: list[Message]) -> int:
    """An upper bound on a request's input tokens without a tokenizer: a token covers at
    least one UTF-8 byte (byte-level and byte-fallback tokenizers alike), plus framing."""
    size = sum(
        len(text_of(m.get("content")).encode("utf-8", "surrogatepass"))
        + len(str(m.get("role") or "").encode("utf-8", "surrogatepass"))
        + MESSAGE_FRAMING
        for m in messages
    )
    return size + REQUEST_FRAMING + IMAGE_TOKEN_BOUND * len(images_of(messages))


def estimate_tokens(messages: list[Message]) -> int:
    """A tokenizer-free estimate of a request's size, to tell when a conversation nears the
    model's window: 4 characters a token rounded up per message, 4 tokens of framing per
    message, and 2% more for tokenizers that split finer. Budgets reserve the upper bound
    (`input_token_bound`) instead, since an estimate may undercount."""
    chars = sum(-(-len(text_of(m.get("content"))) // 4) + 4 for m in messages)
    return chars + chars // 50 + 1 + IMAGE_TOKEN_BOUND * len(images_of(messages))


class ClientPool:
    """Maps `PROVIDER/MODEL` names to a shared client per endpoint, made on first use.

    `base_url` belongs to the provider of `base_url_for` (a `PROVIDER/MODEL` name) alone:
    a model of any other provider goes to its own server with its own key, so a key never
    reaches a server that was given for another provider.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        base_url_for: str | None = None,
        client: LMClient | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        max_connections: int = 64,
        deadline: float = DEFAULT_DEADLINE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = (base_url or "").strip() or None
        if self.base_url is not None and client is None and not base_url_for:
            raise ConfigError("a base URL needs the model it is given for (base_url_for)")
        self.base_url_provider = parse_model(base_url_for).provider if base_url_for else None
        self.fixed = client
        self.env = env
        self.timeout = timeout
        self.max_connections = max_connections
        self.deadline = deadline
        self.max_response_bytes = max_response_bytes
        self._clients: dict[tuple[str, str], LMClient] = {}

    def check(self, model: str) -> None:
        """Fail now, with a one-line ConfigError, if `model` cannot be reached as configured."""
        if self.fixed is None:
            self._endpoint(model)
        else:
            parse_model(model)

    def _endpoint(self, model: str) -> tuple[ModelSpec, Endpoint]:
        spec = parse_model(model)
        url = self.base_url if spec.provider == self.base_url_provider else None
        if self.env is None:
            return spec, resolve_endpoint(spec, url)
        return spec, resolve_endpoint(spec, url, self.env)

    def get(self, model: str) -> tuple[LMClient, str]:
        """The client for `model` and the model's name as that server knows it."""
        if self.fixed is not None:
            return self.fixed, parse_model(model).name
        spec, endpoint = self._endpoint(model)
        key = (endpoint.wire, endpoint.base_url)
        client = self._clients.get(key)
        if client is None:
            client = make_client(
                endpoint,
                timeout=self.timeout,
                max_connections=self.max_connections,
                deadline=self.deadline,
                max_response_bytes=self.max_response_bytes,
            )
            self._clients[key] = client
        return client, spec.name

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


class Gateway:
    def __init__(
        self,
        ledger: Ledger,
        pool: ClientPool,
        emitter: Emitter,
        *,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        full_prompts: bool = False,
    ) -> None:
        self.ledger = ledger
        self.pool = pool
        self.emitter = emitter
        self.permits = asyncio.Semaphore(concurrency)
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.full_prompts = full_prompts
        self._settled = asyncio.Event()
        self._ids = itertools.count(1)

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        depth: int,
        rlm: str,
        purpose: str,
        prompt_for_trace: str | None = None,
    ) -> Completion:
        """Send one logical request, retrying as the policy allows; every attempt is charged."""
        client, wire_model = self.pool.get(model)
        images = [{"path": p["path"], "sha256": p["sha256"]} for p in images_of(messages)]
        if images and not getattr(client, "takes_images", False):
            raise ValueError(
                f"{model} cannot be sent images here: its provider's client sends text only "
                "(images go to OpenAI-compatible and Anthropic models)"
            )
        bound = input_token_bound(messages)
        digest = messages_sha256(messages)
        shown = prompt_for_trace
        if shown is not None and not self.full_prompts and len(shown) > PROMPT_EXCERPT:
            shown = shown[:PROMPT_EXCERPT] + f"\n... [{len(shown):,} characters in all]"
        attempt = 0
        while True:
            attempt += 1
            try:
                reservation = self.ledger.reserve(model, depth, bound)
            except BudgetExceeded as exc:
                if exc.transient:
                    # It fits once requests in flight settle: wait for one, then try again.
                    await self._settled.wait()
                    attempt -= 1
                    continue
                self.emitter.emit(
                    BudgetRefused(
                        rlm=rlm,
                        depth=depth,
                        limit=exc.limit,
                        model=model,
                        purpose=purpose,
                        message=str(exc),
                    )
                )
                raise
            start = LMCallStarted(
                rlm=rlm,
                depth=depth,
                call_id=next(self._ids),
                model=model,
                purpose=purpose,
                attempt=attempt,
                prompt=shown,
                prompt_sha256=digest,
                images=images or None,
            )
            sent = False
            started = time.monotonic()
            try:
                async with self.permits:
                    self.emitter.emit(start)
                    CURRENT_CALL.set(CallInfo(rlm, depth, purpose, attempt))
                    started = time.monotonic()
                    sent = True
                    completion = await client.complete(
                        messages, model=wire_model, max_tokens=reservation.output_cap
                    )
            except LMError as exc:
                self.ledger.settle(reservation, 0, 0)
                self._notify()
                status = exc.status if isinstance(exc, LMStatusError) else None
                self._ended(start, started, error=str(exc), status=status)
                if attempt > self.retry.max_retries or not self.retry.is_retryable(exc):
                    if images and status == 400:
                        raise LMStatusError(
                            400,
                            f"{model} refused a request with images (it may not take "
                            f"images; send it text instead): {exc}",
                        ) from None
                    raise _final_error(exc, attempt) from None
                await self.sleep(self.retry.delay(attempt, exc))
                continue
            except BaseException:
                if sent:
                    self.ledger.settle(reservation, 0, 0)
                else:
                    self.ledger.release(reservation)
                self._notify()
                raise
            cost = self.ledger.settle(
                reservation,
                completion.input_tokens,
                completion.output_tokens,
                completion.cost_usd,
                completion.usage_problem,
                completion.cache_read_tokens,
                completion.cache_write_tokens,
                completion.reasoning_tokens,
                usage_missing=completion.usage_missing,
            )
            self._notify()
            self._ended(
                start,
                started,
                text=completion.text,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                cost_usd=cost,
                cache_read_tokens=completion.cache_read_tokens,
                cache_write_tokens=completion.cache_write_tokens,
                reasoning_tokens=completion.reasoning_tokens,
            )
            if reservation.breach is not None:
                limit = self.ledger.breach_limit
                message = f"{reservation.breach}: the run stops, as {limit} can no longer hold"
                self.emitter.emit(
                    BudgetRefused(
                        rlm=rlm,
                        depth=depth,
                        limit=limit,
                        model=model,
                        purpose=purpose,
                        message=message,
                    )
                )
                raise BudgetExceeded(limit, message)
            return completion

    def _notify(self) -> None:
        """Wake the requests waiting for budget held by requests in flight."""
        self._settled.set()
        self._settled = asyncio.Event()

    def _ended(self, start: LMCallStarted, started: float, **fields: Any) -> None:
        self.emitter.emit(
            LMCallEnded(
                rlm=start.rlm,
                depth=start.depth,
                call_id=start.call_id,
                model=start.model,
                purpose=start.purpose,
                attempt=start.attempt,
                latency_s=round(time.monotonic() - started, 6),
                **fields,
            )
        )


def _final_error(exc: LMError, attempts: int) -> LMError:
    """The error after the last attempt, saying how many were made."""
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    if isinstance(exc, LMStatusError):
        return LMStatusError(exc.status, f"{exc}{tries}", retry_after=exc.retry_after)
    if isinstance(exc, LMConnectionError):
        return LMConnectionError(f"{exc}{tries}")
    return type(exc)(f"{exc}{tries}")
