"""One RLM of the tree: its own sandbox worker, its own conversation, its turn loop.

A Loop is opened (its worker starts while the first request is with the model), asked one
question or several (a session), and closed. It charges everything through the run's one
gateway, so every limit holds for the whole tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from pydantic import BaseModel

from ..context import Context, build_payload, describe, from_text, from_value
from ..errors import BudgetExceeded, ConfigError, LMError, SandboxError
from ..events import (
    BlockExecuted,
    BudgetRefused,
    ContextPrinted,
    RLMStarted,
    SubQueriesAsked,
    ToolCalled,
)
from ..images import load_images
from ..lm.base import ContentPart, Message
from ..sandbox import make_sandbox
from ..sandbox.base import BlockResult, ContextPayload, Sandbox, StreamedTexts
from . import dialect, prompts
from .guards import printed_contexts
from .protocol import ParsedTurn, parse_turn
from .render import json_object, short
from .run import Outcome, Run
from .signature import Signature, SignatureError
from .status import Status
from .turns import Turn, TurnLoop, TurnTexts


class Loop(TurnLoop):
    """One RLM of the tree, in code mode: its replies are Python blocks run in its REPL."""

    texts = TurnTexts(
        compact=prompts.COMPACT,
        compacted=prompts.COMPACTED,
        extract=prompts.EXTRACT,
        stalled_extract=prompts.STALLED_EXTRACT,
        stall=prompts.STALL,
        stall_warning=prompts.STALL_WARNING,
    )

    def __init__(
        self,
        run: Run,
        rlm_id: str,
        depth: int,
        model: str,
        *,
        signature: Signature | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> None:
        window = run.cfg.context_window if depth == 0 else None
        super().__init__(run, rlm_id, depth, model, signature, window)
        self.inputs = dict(inputs or {})
        self.contexts: list[Context] = []
        self.log: list[Message] = []
        """Every message of the conversation, never compacted: the REPL's `history`."""
        self.histories: list[list[Message]] = []
        """The official dialect: each finished question's root conversation, `history_N`."""
        self.sandbox: Sandbox | None = None
        self._starting: asyncio.Task[None] | None = None
        self._turn: list[tuple[str, str, str | None, int]] = []
        self.official = run.cfg.dialect == "official"
        """The official dialect: its `answer` dict and its observation layout."""
        """This turn's blocks so far: (code, output, error, new variables)."""

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self, question: str, contexts: list[Context]) -> Outcome:
        """Open, answer one question, close: a single run, or a child RLM."""
        self.run_.emitter.emit(
            RLMStarted(
                rlm=self.id,
                depth=self.depth,
                question=question,
                model=self.model,
                first_message=self._first_message(question, contexts),
                contexts=[c.reference() for c in contexts],
            )
        )
        outcome = Outcome(Status.ERROR, error="the run did not finish")
        try:
            self.open(contexts)
            outcome = await self.ask(question)
            return outcome
        except (LMError, SandboxError) as exc:
            outcome = Outcome(Status.ERROR, self.best, self.iterations, str(exc))
            raise
        finally:
            await self.close()
            self.ended(outcome)

    def open(self, contexts: list[Context]) -> None:
        """Start the worker in the background; the first block waits for it."""
        self.contexts = list(contexts)
        self.sandbox = make_sandbox(
            self.cfg.sandbox,
            cell_timeout=self.cfg.cell_timeout,
            max_output=self.cfg.max_output_chars,
            **self.cfg.sandbox_options,
        )
        tools = list(self.run_.tools) if self.depth == 0 else []
        self._starting = asyncio.create_task(self.sandbox.start(self._payload, tools))

    def _payload(self) -> ContextPayload:
        """Every context so far, and the host-set variables: built again on each restart."""
        payload = build_payload(self.contexts)
        variables = {**self.inputs, **self._question_vars()}
        return ContextPayload(payload.specs, payload.body, variables, seed=self.run_.seed)

    def _question_vars(self) -> dict[str, Any]:
        """The host-set variables each question starts with: `history`, and in the official
        dialect an `answer` not yet ready."""
        variables = self._history_vars()
        if self.official:
            variables[dialect.ANSWER_VARIABLE] = dialect.initial_answer()
        return variables

    def _history_vars(self) -> dict[str, Any]:
        """recursa's `history` is the whole conversation; the official dialect's is the latest
        finished question's, beside every one as `history_0`, `history_1`, ..."""
        if not self.official:
            return {"history": self.log}
        variables: dict[str, Any] = {f"history_{n}": h for n, h in enumerate(self.histories)}
        variables["history"] = self.histories[-1] if self.histories else []
        return variables

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()  # no-op once done; awaiting collects any failure
            with contextlib.suppress(BaseException):
                await self._starting
        if self.sandbox is not None:
            await asyncio.shield(self.sandbox.close())

    async def _ready(self) -> Sandbox:
        """The sandbox, once its worker has started (raises if it could not)."""
        assert self.sandbox is not None and self._starting is not None
        await self._starting
        return self.sandbox

    # ---- asking ------------------------------------------------------------------------------
    def _first_message(self, question: str, contexts: list[Context]) -> str:
        inputs = ""
        if self.inputs:
            shown = "\n".join(f"- {k} = {short(v, 300)}" for k, v in self.inputs.items())
            inputs = prompts.INPUTS.format(inputs=shown)
        described = describe(contexts)
        if not contexts:
            return inputs + prompts.FIRST_USER_NO_CONTEXT.format(
                context_description=described, question=question
            )
        first = prompts.FIRST_QUESTION.format(context_description=described, question=question)
        return inputs + first + self.cfg.profile.first_turn

    async def ask(self, question: str, new_contexts: list[Context] | None = None) -> Outcome:
        """Answer `question`: the first of the conversation, or a later one (a session)."""
        self.iterations = 0
        self.best = None
        start = len(self.log)
        if not self.messages:
            self.first = self._first_message(question, self.contexts)
            self.append({"role": "system", "content": self._system_prompt()})
            self.append({"role": "user", "content": self.first})
        else:
            added = ""
            if new_contexts:
                sandbox = await self._ready()
                start = len(self.contexts)
                self.contexts.extend(new_contexts)
                lost = await sandbox.add(build_payload(new_contexts), self._question_vars())
                for i, ctx in enumerate(new_contexts, start=start):
                    # Named as the worker names it: alone it is `context`; with others,
                    # `context` becomes the list of all of them and each is `context_i`.
                    name = "context" if len(self.contexts) == 1 else f"context_{i}"
                    added += prompts.NEW_CONTEXT.format(
                        description=describe([ctx]).replace("`context`", f"`{name}`", 1)
                    )
                if len(self.contexts) > 1:
                    added += prompts.CONTEXT_NOW_LIST.format(n=len(self.contexts))
            else:
                lost = await (await self._ready()).add(ContextPayload(), self._question_vars())
            repl = prompts.REPL_RESTARTED.format(why=lost) if lost else prompts.REPL_KEPT
            self.first = prompts.NEW_QUESTION.format(question=question, contexts=added, repl=repl)
            self.append({"role": "user", "content": self.first})
        outcome = await self.turns()
        if self.official:
            self.histories.append([dict(m) for m in self.log[start:]])
        return outcome

    def append(self, message: Message) -> None:
        self.messages.append(message)
        self.log.append(message)

    def _system_prompt(self) -> str:
        can_recurse = self.depth + 1 < self.cfg.max_depth
        kind = ", ".join(f"{c.type_name} of {c.size:,}" for c in self.contexts) or "none"
        text = prompts.fill(
            self.run_.system_prompt,
            context_kind=kind,
            sub_window=f"{self.cfg.profile.chunk_chars:,}",
            depth_note=prompts.DEPTH_CHILD if can_recurse else prompts.DEPTH_LIMIT,
        )
        if self.signature is not None:
            kwargs = ", ".join(f"{name}=..." for name in self.signature.fields)
            text += prompts.SUBMIT_SECTION.format(fields=self.signature.describe(), kwargs=kwargs)
        if self.depth == 0 and self.run_.tools:
            listing = "\n".join(
                f"- `{name}{t.description}`" for name, t in sorted(self.run_.tools.items())
            )
            text += prompts.TOOLS_SECTION.format(tools=listing)
        return text

    # ---- the skeleton's hooks ----------------------------------------------------------------
    async def play(self, reply: str, iteration: int) -> Turn:
        parsed = parse_turn(reply)
        self._turn = []
        observation, final = await self._handle(reply, parsed, iteration)
        return Turn(
            observation,
            final,
            len(parsed.blocks),
            codes=[code for code, _, _, _ in self._turn],
            outputs=[output for _, output, _, _ in self._turn],
            errors=[error for _, _, error, _ in self._turn if error],
            new_vars=sum(n for *_, n in self._turn),
        )

    def extract_prompt(self, ask: str | None) -> str:
        if self.signature is not None:
            return prompts.EXTRACT_SIGNATURE.format(fields=self.signature.describe())
        return prompts.EXTRACT if ask is None else ask

    async def extracted(self, reply: str) -> tuple[Any, BaseModel | None]:
        if self.signature is not None:
            try:
                output = self.signature.validate(json_object(reply))
            except SignatureError:
                return reply.strip(), None
            return output.model_dump(mode="json"), output
        marker = parse_turn(reply).final
        if marker is not None and marker.kind == "var":
            value = await self._value_of(marker.text)
            return (value if value is not None else reply.strip()), None
        return (marker.text if marker is not None else reply.strip()), None

    async def after_compaction(self) -> None:
        """The REPL's `history` keeps the whole conversation the prompt no longer holds."""
        await (await self._ready()).add(ContextPayload(), self._history_vars())

    # ---- one reply ---------------------------------------------------------------------------
    async def _handle(
        self, reply: str, parsed: ParsedTurn, iteration: int
    ) -> tuple[str, tuple[Any, BaseModel | None, str] | None]:
        """Run a reply's blocks; return the observation and, once accepted, the answer."""
        if not reply.strip():
            return prompts.EMPTY_REPLY, None
        parts: list[str] = []
        errored = False
        for index, code in enumerate(parsed.blocks, start=1):
            result = await self._execute(code, iteration, index)
            parts.append(self._render(index, result, code))
            errored = errored or result.error is not None
            output = _join_output(result)
            self._turn.append((code, output, result.error, len(result.new_vars)))
            if (warning := self._hygiene(output, iteration, index)) is not None:
                parts.append(warning)
            final = result.final
            if final is None and self.official:
                final = await self._answer_ready()
            if final is not None:
                source = "submit" if final.get("kind") == "submit" else "code"
                accepted = self._accept(_final_value(final), source)
                if isinstance(accepted, str):
                    parts.append(accepted)
                    return "\n\n".join(parts), None
                return "\n\n".join(parts), (*accepted, source)
        if parsed.unclosed:
            parts.append(prompts.UNCLOSED_FENCE)
        marker = parsed.final
        value: Any = None
        if marker is not None and errored:
            parts.append(prompts.FINAL_AFTER_ERROR)
        elif marker is not None and marker.kind == "value":
            value = marker.text
        elif marker is not None:
            value = await self._value_of(marker.text)
            if value is None:
                names = await self._variable_names()
                parts.append(prompts.MISSING_VAR.format(name=marker.text, names=names or "none"))
        if value is not None:
            accepted = self._accept(value, "line")
            if not isinstance(accepted, str):
                return "\n\n".join(parts), (*accepted, "line")
            parts.append(accepted)
        if not parts:
            return prompts.NO_CODE, None
        return "\n\n".join(parts), None

    def _hygiene(self, output: str, iteration: int, index: int) -> str | None:
        """A warning when a block printed a large part of the context back to the model."""
        limit = self.cfg.guards.print_context_chars if self.cfg.guards else 0
        if not limit or len(output) < limit:
            return None
        chars = printed_contexts(output, self.contexts)
        if chars < limit:
            return None
        self.run_.emitter.emit(
            ContextPrinted(
                rlm=self.id, depth=self.depth, iteration=iteration, index=index, chars=chars
            )
        )
        return prompts.CONTEXT_PRINTED.format(chars=chars)

    def _accept(self, value: Any, source: str) -> tuple[Any, BaseModel | None] | str:
        """The answer and typed output, or why the signature refused it (shown to the model)."""
        if self.signature is None:
            return value, None
        names = self.signature.fields
        if source == "submit":
            fields = value
        elif len(names) == 1:
            fields = {names[0]: value}
        else:
            kwargs = ", ".join(f"{name}=..." for name in names)
            return prompts.FINAL_NEEDS_SUBMIT.format(kwargs=kwargs)
        try:
            output = self.signature.validate(fields)
        except SignatureError as exc:
            return str(exc)
        return output.model_dump(mode="json"), output

    async def _execute(self, code: str, iteration: int, index: int) -> BlockResult:
        sandbox = await self._ready()
        started = time.monotonic()
        result = await sandbox.execute(code, self._serve)
        self.run_.emitter.emit(
            BlockExecuted(
                rlm=self.id,
                depth=self.depth,
                iteration=iteration,
                index=index,
                code=code,
                output=_join_output(result),
                error=result.error,
                new_vars=result.new_vars,
                restarted=result.restarted,
                elapsed_s=round(time.monotonic() - started, 6),
            )
        )
        return result

    async def _answer_ready(self) -> dict[str, Any] | None:
        """The official dialect's end: the block left `answer["ready"]` True."""
        ready, content = dialect.ready_answer(await self._value_of(dialect.ANSWER_VARIABLE))
        return {"kind": "answer", "json": content} if ready else None

    def _render(self, index: int, result: BlockResult, code: str) -> str:
        body = _join_output(result)
        limit = self.cfg.max_output_chars
        if len(body) > limit:
            total = result.stdout_len + result.stderr_len
            half = limit // 2
            body = (
                body[:half]
                + f"\n... [output cut: {total:,} characters in all] ...\n"
                + body[-half:]
            )
        if result.restarted:
            body += "\n" + prompts.RESTARTED.format(note=result.restarted)
        if self.official:
            return dialect.OBSERVATION.format(
                code=code.rstrip("\n"), output=body or dialect.NO_OUTPUT
            )
        return prompts.OBSERVATION_BLOCK.format(index=index, body=body or prompts.NO_OUTPUT)

    async def _value_of(self, name: str) -> Any:
        reply = await (await self._ready()).get_value(name)
        if reply is None:
            return None
        return reply["json"] if "json" in reply else reply.get("text")

    async def _variable_names(self) -> str:
        sandbox = await self._ready()
        result = await sandbox.execute("print(', '.join(SHOW_VARS()))", self._serve)
        return result.stdout.strip()

    # ---- calls from the sandbox ------------------------------------------------------------
    async def _serve(self, fn: str, args: dict[str, Any]) -> Any:
        if fn == "tool":
            return await self._tool(args)
        model = args.get("model")
        if model is not None and not isinstance(model, str):
            raise TypeError("model must be a 'PROVIDER/MODEL' string")
        if model is not None:
            try:
                self.run_.pool.check(model)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            if self.cfg.limits.max_cost is not None and self.cfg.prices.lookup(model) is None:
                raise ValueError(
                    f"max_cost is set and the price of {model} is unknown: it cannot be used "
                    "here unless a price is given (--price MODEL=INPUT,OUTPUT)"
                )
        if fn == "llm_query":
            prompt = _text(args, "prompt")
            images = self._images(args.get("images"))
            self._asked(1)
            return await self._sub_query(prompt, model, images=images)
        if fn == "llm_query_batched":
            streamed = args.get("prompts")
            count = len(streamed) if isinstance(streamed, StreamedTexts) else None
            per_prompt = self._batch_images(args.get("images"), count, args)
            if isinstance(streamed, StreamedTexts):
                self._asked(len(streamed))
                return await _batched(self._streamed_sub_queries(streamed, model, per_prompt))
            prompts_ = _texts(args, "prompts")
            self._asked(len(prompts_))
            return await _batched(
                [
                    self._sub_query(p, model, images=per_prompt[i] if per_prompt else [])
                    for i, p in enumerate(prompts_)
                ]
            )
        if fn == "rlm_query":
            return await self._child(_text(args, "prompt"), args.get("context"), model)
        if fn == "rlm_query_batched":
            prompts_ = _texts(args, "prompts")
            contexts = args.get("contexts") or [None] * len(prompts_)
            return await _batched(
                [self._child(p, c, model) for p, c in zip(prompts_, contexts, strict=True)]
            )
        raise ValueError(f"unknown function {fn!r}")

    def _images(self, names: Any) -> list[ContentPart]:
        """The image parts a sub-query names (None: none), read only from this loop's
        contexts (the run's own, at the root)."""
        return [] if names is None else load_images(names, self.contexts)

    def _batch_images(
        self, names: Any, count: int | None, args: dict[str, Any]
    ) -> list[list[ContentPart]] | None:
        """One list of image parts per prompt of a batch, or None when it sends none."""
        if names is None:
            return None
        total = count if count is not None else len(_texts(args, "prompts"))
        if not isinstance(names, list) or len(names) != total:
            raise ValueError(f"images must be a list of {total} lists: one per prompt")
        return [self._images(each) for each in names]

    def _asked(self, count: int) -> None:
        self.run_.emitter.emit(SubQueriesAsked(rlm=self.id, depth=self.depth, count=count))

    async def _tool(self, args: dict[str, Any]) -> Any:
        name = str(args.get("name"))
        tool = self.run_.tools.get(name)
        if tool is None or self.depth != 0:
            raise ValueError(f"no tool named {name!r}")
        call_args = list(args.get("args") or [])
        call_kwargs = dict(args.get("kwargs") or {})
        try:
            self.run_.ledger.charge_tool(name, tool.cost_usd or 0.0)
        except BudgetExceeded as exc:
            self.run_.emitter.emit(
                BudgetRefused(
                    rlm=self.id,
                    depth=self.depth,
                    limit=exc.limit,
                    model=f"tool:{name}",
                    purpose="tool",
                    message=str(exc),
                )
            )
            raise
        started = time.monotonic()
        error = None
        value: Any = None
        try:
            value = await tool.call(call_args, call_kwargs)
            return value
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.run_.emitter.emit(
                ToolCalled(
                    rlm=self.id,
                    depth=self.depth,
                    name=name,
                    arguments=short(json.dumps({"args": call_args, "kwargs": call_kwargs})),
                    result=None if error else short(value),
                    error=error,
                    cost_usd=tool.cost_usd or 0.0,
                    elapsed_s=round(time.monotonic() - started, 6),
                )
            )

    async def _sub_query(
        self,
        prompt: str,
        model: str | None,
        purpose: str = "sub",
        images: list[ContentPart] | None = None,
    ) -> str:
        """A plain sub-query: the prompt alone as the user message, no system prompt; with
        images, the message's content is the prompt's text part and then its images."""
        target = model or self.cfg.sub_model or self.cfg.model
        content: str | list[ContentPart] = (
            [{"type": "text", "text": prompt}, *images] if images else prompt
        )
        completion = await self.run_.gateway.complete(
            [{"role": "user", "content": content}],
            model=target,
            depth=self.depth,
            rlm=self.id,
            purpose=purpose,
            prompt_for_trace=prompt,
        )
        return completion.text

    def _streamed_sub_queries(
        self,
        prompts_: StreamedTexts,
        model: str | None,
        images: list[list[ContentPart]] | None = None,
    ) -> list[Any]:
        """Sub-queries whose prompts are read off the channel as each one's turn comes: at
        most `concurrency` of a large batch's prompts are held here at once."""
        window = asyncio.Semaphore(self.cfg.concurrency)

        async def one(index: int) -> str:
            async with window:
                prompt = await prompts_.take(index)
                return await self._sub_query(prompt, model, images=images[index] if images else [])

        return [one(index) for index in range(len(prompts_))]

    async def _child(self, prompt: str, context: Any, model: str | None) -> str:
        """A child RLM at depth + 1, or a plain sub-query once the depth limit is reached."""
        if self.depth + 1 >= self.cfg.max_depth:
            full = prompt if context is None else f"{prompt}\n\n{from_value(context).as_text()}"
            return await self._sub_query(full, model or self.cfg.sub_model, purpose="leaf")
        ctx = from_text(prompt, "<prompt>") if context is None else from_value(context, "<arg>")
        child = Loop(self.run_, self.run_.child_id(self.id), self.depth + 1, model or self.model)
        async with self.run_.slots(child.depth):
            outcome = await child.run(prompt, [ctx])
        if outcome.answer is None:
            raise RuntimeError(
                f"child RLM {child.id} ended with status {outcome.status} and no answer"
                + (f": {outcome.error}" if outcome.error else "")
            )
        answer = outcome.answer
        return answer if isinstance(answer, str) else json.dumps(answer)


async def _batched(calls: list[Any]) -> list[str]:
    """Run calls concurrently; never lose an answer: a failed item becomes '[error] ...'."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    out: list[str] = []
    refused = 0
    for result in results:
        if isinstance(result, BudgetExceeded):
            refused += 1
            out.append(f"[error] budget: {result}")
        elif isinstance(result, asyncio.CancelledError):
            raise result
        elif isinstance(result, BaseException):
            out.append(f"[error] {type(result).__name__}: {result}")
        else:
            out.append(result)
    if results and refused == len(results):
        first = next(r for r in results if isinstance(r, BudgetExceeded))
        raise BudgetExceeded(first.limit, f"every item of the batch was refused: {first}")
    return out


def _final_value(final: dict[str, Any]) -> Any:
    return final["json"] if "json" in final else final.get("text")


def _join_output(result: BlockResult) -> str:
    parts = [result.stdout.rstrip("\n")] if result.stdout else []
    if result.stderr:
        parts.append("[stderr]\n" + result.stderr.rstrip("\n"))
    if result.error:
        parts.append("[error]\n" + result.error.rstrip("\n"))
    return "\n".join(parts)


def _text(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _texts(args: dict[str, Any], key: str) -> list[str]:
    value = args.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings")
    return value
