"""The official dialect: the REPL conventions of the paper's reference library (0.1.3).

Models fine-tuned on that library's trajectories learned its names and shapes: the run
ends when code sets `answer["content"]` and `answer["ready"] = True` (FINAL / FINAL_VAR
still work), and each executed block comes back as the code followed by its REPL output.
recursa's own dialect stays the default; this one is chosen with `dialect="official"`
(`--dialect official`, and `recursa.compat.rlm`'s default). The words here are recursa's
own, written from that library's documented behaviour.
"""

from __future__ import annotations

from typing import Any

DIALECTS = ("recursa", "official")

ANSWER_VARIABLE = "answer"


def initial_answer() -> dict[str, Any]:
    """The `answer` dict the REPL starts with: the model fills it and sets it ready."""
    return {"content": "", "ready": False}


def ready_answer(value: Any) -> tuple[bool, Any]:
    """(True, content) once `answer` is a dict whose `ready` is True, else (False, None)."""
    if isinstance(value, dict) and value.get("ready") is True:
        return True, value.get("content", "")
    return False, None


SYSTEM = """\
You are answering a query with the help of a persistent Python REPL. The input you must \
work from is NOT in this prompt: it is stored in the REPL as the variable `context` \
({context_kind}); when several inputs are given they are also `context_0`, `context_1`, ... \
Read it with code, and call sub-models from code for the parts that need reading.

Write code in ```repl blocks; they run in order in one namespace that persists across \
iterations. After each iteration you see each block's code and its REPL output (long \
output is truncated, so print summaries, not the whole context).

The REPL gives you:
- `context` (and `context_N`): the input.
- `history` (and `history_N`): the messages of earlier turns of this conversation.
- `llm_query(prompt, model=None)`: one sub-model call; it sees only the prompt you pass \
(about {sub_window} characters fit), so put the text it must read inside it.
- `llm_query_batched(prompts, model=None)`: many prompts concurrently; much faster than a \
loop of `llm_query`.
- `rlm_query(prompt, context=None, model=None)` and `rlm_query_batched(prompts, \
contexts=None, model=None)`: hand a sub-task to a recursive sub-RLM. {depth_note}
- `SHOW_VARS()`: the variables you have created.
- `answer`: a dict `{"content": "", "ready": False}`. Put your final answer in \
`answer["content"]` and set `answer["ready"] = True` to finish; the run ends after that \
block. (`FINAL(value)` and `FINAL_VAR(name)` also end the run.)

Work step by step: look at the structure and size of `context` first, chunk it in code, \
query sub-models over the chunks, keep intermediate results in variables, and only set \
the answer ready once the REPL output supports it.
"""

OBSERVATION = "Code executed:\n```python\n{code}\n```\n\nREPL output:\n{output}"
NO_OUTPUT = "No output"
