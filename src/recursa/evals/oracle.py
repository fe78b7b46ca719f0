"""Scripted stand-ins for a model, labelled as such everywhere they are used.

`oracle_model(family)` is a `ScriptedLM` that plays both roles, reading only what a model
would read (its prompt):

- as the **root** (a request with a system prompt) it writes the family's program from
  `recursa.evals.programs` as real RLM code: a first turn that looks at `context`, then a
  turn that chunks it, fans out ONE `llm_query_batched`, merges and ends with `FINAL_VAR`.
  It reads the question from its first message; when the system prompt says children can
  explore (`max_depth` 2) it hands parts of the context to child RLMs with
  `rlm_query_batched` instead, and each child does the fan-out on its part; when the
  question says sub-queries are disabled (the `rlm-nosub` strategy) it runs `map_chunk` in
  the REPL itself, code alone;
- as the **sub-model** (a request without one) it runs the family's `map_chunk` on the chunk
  text inside the prompt: it computes, it does not know the answer;
- asked **directly** (the Direct strategy's prompt, the whole context inside) it runs the
  program on that context and answers.

So the whole pipeline (sandbox, fan-out, child RLMs, budget, usage) runs for real, and the
oracle scores 1.0 on every generated task: anything less is a bug in the harness.
`wrong_model()` answers "0" to everything, for tests that a wrong model scores lower.
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

from ..core import prompts
from ..testing.scripted import LMRequest, ScriptedLM
from .programs import INSTRUCTIONS, PROGRAMS, TEXT_MARK, source, version

ORACLE_MODEL = "openai/recursa-oracle"
"""The name the RLM sees; results and reports say `oracle` instead."""
ORACLE_LABEL = "ORACLE (scripted, not a model)"
ORACLE_WINDOW = 272_000
"""Tokens the oracle accepts in one request (the paper's GPT-5 input limit): the Direct
strategy overflows above it, as it would with that model."""
NOSUB_NOTE = (
    "\n\n(In this run llm_query, llm_query_batched, rlm_query and rlm_query_batched are "
    "disabled: answer with code alone.)"
)
CHILD_MARK = "[part of a larger task]"
FAILED = "The program did not produce an answer; I stop here.\nFINAL(NONE)"

_EXPLORE = """\
I will look at the input before deciding how to split it.
```repl
print(type(context).__name__, len(context))
print(context[:300] if isinstance(context, str) else list(context)[:10])
```"""


def oracle_version() -> str:
    return version()


def _question(request: LMRequest) -> str:
    """The question, from the first user message (prompts.FIRST_USER's layout)."""
    first = next((m["content"] for m in request.messages if m.get("role") == "user"), "")
    head, tail = prompts.FIRST_USER.split("{question}")
    marker = head.rsplit("}", 1)[-1]
    start = first.rfind(marker)
    if start < 0:
        return first
    start += len(marker)
    if tail in first:
        end = first.rfind(tail)
    else:  # a profile's own first-turn instruction: it follows the question's blank line
        end = first.rfind("\n\n") if first.rfind("\n\n") > start else len(first)
    return first[start:end] if end >= start else first[start:]


def _program(family: str, question: str, mode: str) -> str:
    instruction = INSTRUCTIONS[family]
    setup = f"QUESTION = {question!r}\nINSTRUCTION = {instruction!r}\n"
    if mode == "nosub":
        code = (
            source(family, "map", "merge", "finish")
            + setup
            + "chunks = make_chunks(context, chunk_size(context))\n"
            "answer = finish(merge([map_chunk(c) for c in chunks]), QUESTION)\n"
            'print(len(chunks), "chunks read in code; answer:", answer[:200])\n'
            'FINAL_VAR("answer")\n'
        )
        prose = "Sub-queries are disabled, so I will extract what I need with code alone."
    elif mode == "children":
        task = (
            f"{CHILD_MARK} {instruction} Work through your context in chunks and end with "
            "FINAL_VAR of that JSON text."
        )
        code = (
            source(family, "merge", "finish") + setup + f"TASK = {task!r}\n"
            "parts = split_parts(context, 3)\n"
            "results = rlm_query_batched([TASK] * len(parts), parts)\n"
            "partials = [parse_json(r) for r in results]\n"
            'print(len(parts), "parts;", sum(p is None for p in partials), "unreadable")\n'
            "answer = finish(merge(partials), QUESTION)\n"
            'print("answer:", answer[:200])\n'
            'FINAL_VAR("answer")\n'
        )
        prose = "The input is large: I will hand one part of it to each child RLM at once."
    elif mode == "child":
        code = (
            source(family, "merge") + f"INSTRUCTION = {instruction!r}\n"
            "chunks = make_chunks(context, chunk_size(context))\n"
            f"replies = llm_query_batched([INSTRUCTION + {TEXT_MARK!r} + c for c in chunks])\n"
            "result = json.dumps(merge([parse_json(r) for r in replies]))\n"
            'print(len(chunks), "chunks; result of", len(result), "characters")\n'
            'FINAL_VAR("result")\n'
        )
        prose = "I will split my part into chunks and ask about all of them in one batch."
    else:
        code = (
            source(family, "merge", "finish")
            + setup
            + "chunks = make_chunks(context, chunk_size(context))\n"
            f"replies = llm_query_batched([INSTRUCTION + {TEXT_MARK!r} + c for c in chunks])\n"
            "partials = [parse_json(r) for r in replies]\n"
            'print(len(chunks), "chunks;", sum(p is None for p in partials), "unreadable")\n'
            "answer = finish(merge(partials), QUESTION)\n"
            'print("answer:", answer[:200])\n'
            'FINAL_VAR("answer")\n'
        )
        prose = (
            "The input is too large to read at once: I will split it into chunks, ask a "
            "sub-model about every chunk in one batch and combine the answers in code."
        )
    return f"{prose}\n```repl\n{code}```"


@functools.cache
def _host_program(family: str) -> dict[str, Any]:
    """The family's functions, compiled once on the host for the scripted sub-model."""
    namespace: dict[str, Any] = {"__name__": f"recursa_eval_{family}"}
    exec(
        compile(source(family, "map", "merge", "finish"), f"<{family} program>", "exec"), namespace
    )
    return namespace


def _direct_parts(prompt: str) -> tuple[str, str] | None:
    """(question, context) of a Direct-strategy prompt (prompts.DIRECT's layout), or None."""
    head, rest = prompts.DIRECT.split("{question}")
    middle, tail = rest.split("{context}")
    middle = middle.replace("{inputs}", "")
    tail = tail.replace("{format}", "")
    if not prompt.startswith(head):
        return None
    end = prompt.find(middle, len(head))
    if end < 0:
        return None
    stop = prompt.rfind(tail) if tail else len(prompt)
    return prompt[len(head) : end], prompt[end + len(middle) : stop]


class Oracle(ScriptedLM):
    """The scripted oracle of one family (see the module's docstring)."""

    def __init__(self, family: str) -> None:
        if family not in PROGRAMS:
            raise ValueError(f"no oracle for family {family!r}")
        self.family = family
        self.sub_queries = 0
        self._count_lock = threading.Lock()
        super().__init__(root=self._root, sub=self._sub, model="recursa-oracle")

    def _root(self, request: LMRequest) -> str:
        question = _question(request)
        if request.turn == 0:
            return _EXPLORE
        if request.turn > 1:
            return FAILED
        if CHILD_MARK in question:
            return _program(self.family, question, "child")
        if NOSUB_NOTE.strip() in question:
            return _program(self.family, question, "nosub")
        if prompts.DEPTH_CHILD in request.system:
            return _program(self.family, question, "children")
        return _program(self.family, question, "rlm")

    def _sub(self, request: LMRequest) -> str:
        with self._count_lock:
            self.sub_queries += 1
        text = request.last_user
        program = _host_program(self.family)
        instruction = INSTRUCTIONS[self.family] + TEXT_MARK
        if text.startswith(instruction):
            return json.dumps(program["map_chunk"](text[len(instruction) :]))
        direct = _direct_parts(text)
        if direct is not None:
            question, context = direct
            return str(
                program["finish"](program["merge"]([program["map_chunk"](context)]), question)
            )
        return "I can only answer the oracle's own chunk questions."

    # The base class keeps every request it answers; an eval sends whole contexts through
    # the Direct strategy, so this one keeps none.
    def __call__(self, request: LMRequest) -> Any:
        if request.is_root:
            return self._root(request)
        return self._sub(request)


def oracle_model(family: str) -> Oracle:
    return Oracle(family)


def wrong_model() -> ScriptedLM:
    """Answers "0" to everything: the root at once, without looking; sub-queries and Direct
    prompts alike."""
    return ScriptedLM(root=["FINAL(0)"], sub=lambda request: "0", model="recursa-wrong")


__all__ = [
    "NOSUB_NOTE",
    "ORACLE_LABEL",
    "ORACLE_MODEL",
    "ORACLE_WINDOW",
    "Oracle",
    "oracle_model",
    "oracle_version",
    "wrong_model",
]
