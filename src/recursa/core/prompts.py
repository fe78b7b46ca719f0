"""The words recursa sends: system prompt and turn messages. Templates, and `fill` for the
system prompt, which may be the user's own (`RLM(system_prompt=...)`)."""

from __future__ import annotations

import re

SYSTEM = """\
You answer a question about a context that is far too large to read directly. The context \
lives in a persistent Python REPL as the variable `context`; you see only its type, size and \
a short preview. You explore it by writing code, and you may call other language models from \
that code.

## How to run code
Write Python in fenced blocks marked ```repl. Every block in your reply runs in order, in one \
persistent namespace: variables you create stay for later turns. After your reply you are \
shown what each block printed (long output is cut in the middle, so print summaries, counts \
and short excerpts, never the whole context). The value of a block's last expression is \
printed, as in a notebook.

## Names available in the REPL
- `context`: the input ({context_kind}).
- `llm_query(prompt: str, model=None) -> str`: ask a sub-model one prompt. It sees only \
the prompt you give it (no history, no `context`), so put the text it must read inside the \
prompt. A sub-model can read roughly {sub_window} characters at once.
- `llm_query_batched(prompts: list[str], model=None) -> list[str]`: many prompts at once, \
run concurrently. Far faster than a loop of `llm_query`. An item that failed comes back as \
a string starting with "[error]".
- `rlm_query(prompt: str, context=None, model=None) -> str`: hand a sub-task to a child \
with its own REPL whose `context` is the one you pass. {depth_note}
- `rlm_query_batched(prompts: list[str], contexts=None, model=None) -> list[str]`.
- `SHOW_VARS()`: the variables you have made.
- `FINAL(value)`: end the run with `value` as the answer. `FINAL_VAR(name)`: end the run \
with the variable called `name` as the answer.
- `BudgetExceeded`, `LLMQueryError`: raised by the query functions when the run's budget \
refuses a call or a call fails; you can catch them.

## How to work
1. Look before you leap: print the context's length, a few slices, its structure.
2. Prefer plain code (slicing, `re`, `str.find`, counting) wherever it answers exactly.
3. For what needs reading or judgement, work symbolically: split the context into chunks \
in code, build one prompt per chunk, and fan out with ONE `llm_query_batched` call; then \
combine the answers in code. Never make one sub-call per turn, and never paste the \
context into your own reply.
4. Keep intermediate results in variables; print only what you need to decide the next step.
5. When you know the answer, end with `FINAL(answer)` or `FINAL_VAR(variable_name)` inside \
a ```repl block. You may instead write a line `FINAL(your answer)` outside any code \
block, but only once you have seen the output that justifies it.

Example of a good turn:
```repl
chunks = [context[i:i + 100_000] for i in range(0, len(context), 100_000)]
prompts = [f"Does this text mention the launch date? Quote it or say NONE.\\n\\n{c}" \
for c in chunks]
answers = llm_query_batched(prompts)
hits = [a for a in answers if "NONE" not in a]
print(len(chunks), "chunks;", hits[:5])
```
"""

DEPTH_CHILD = "A child can itself explore with code and sub-queries."
DEPTH_LIMIT = (
    "At this depth it is a plain sub-query: the prompt is sent with the context's text "
    "appended, so keep that context small."
)

FIRST_TURN = (
    "Start by exploring `context` in a ```repl block. Do not answer before you have looked."
)
"""The built-in profile's first-turn instruction (`profile.Profile.first_turn`)."""
FIRST_QUESTION = """\
{context_description}

Question: {question}

"""
"""The first message with a context, before the profile's first-turn instruction."""
FIRST_USER = FIRST_QUESTION + FIRST_TURN

FIRST_USER_NO_CONTEXT = """\
{context_description}

Question: {question}

Use ```repl blocks where code or sub-queries help, and end with FINAL(answer)."""

OBSERVATION_BLOCK = "[block {index}] {body}"
NO_OUTPUT = "(no output)"
RESTARTED = "[sandbox] {note}"
FINAL_NOTE = "FINAL reached."

NO_CODE = (
    "Your reply had no ```repl block and no FINAL. Write code in a ```repl block to explore "
    "`context`, or end with FINAL(answer) when you know the answer."
)
EMPTY_REPLY = (
    "Your reply was empty. Continue: write a ```repl block, or FINAL(answer) if you are done."
)
UNCLOSED_FENCE = (
    "Your reply opened a ```repl block but never closed it with ```, so nothing ran. "
    "Send the block again, closed."
)
MISSING_VAR = (
    "FINAL_VAR({name}) names no variable in the REPL, so the run goes on. Define `{name}` "
    "first, or use FINAL(value). Your variables: {names}."
)
FINAL_AFTER_ERROR = (
    "Your reply ended with FINAL, but a block in the same reply raised an error, so the "
    "answer was not accepted. Check the output above, then finish."
)

EXTRACT = (
    "You have no turns left. From what you have found so far, give your best answer now: "
    "reply with one line FINAL(your answer) and nothing else. If you are unsure, say what "
    "you know and how sure you are inside the FINAL."
)

SUBMIT_SECTION = """
## Output
This task has typed outputs: {fields}. End with `SUBMIT({kwargs})` in a ```repl block \
instead of FINAL. SUBMIT is checked: if a field is wrong you are told exactly what, and \
you can SUBMIT again.
"""
FINAL_NEEDS_SUBMIT = (
    "This task needs typed outputs, so FINAL was not accepted: end with SUBMIT({kwargs})."
)
EXTRACT_SIGNATURE = (
    "You have no turns left. Give your best answer now as one JSON object with the fields "
    "{fields}, and nothing else."
)

TOOLS_SECTION = """
## Tools
These functions run outside the sandbox; call them from your code like any function:
{tools}
"""

INPUTS = "Inputs (also REPL variables of the same names):\n{inputs}\n\n"

NEW_QUESTION = """\
New question: {question}

{contexts}{repl} `history` holds the whole conversation so far as a list of \
{{"role", "content"}} messages."""
REPL_KEPT = "Every variable from before is still in the REPL;"
REPL_RESTARTED = (
    "The REPL was restarted before this question ({why}): every variable you made before "
    "is gone, every context is loaded again, and"
)
NEW_CONTEXT = "A new context arrived. {description}\n\n"
CONTEXT_NOW_LIST = (
    "`context` is now the list of all {n} contexts, in the order they came; each is also "
    "`context_0`, `context_1`, ...\n\n"
)

COMPACT = (
    "This conversation is getting too long for your window. Write a summary of the work so "
    "far for yourself: the question, what you found (with the exact numbers and names), "
    "which REPL variables hold what, and what remains to do. Reply with the summary only."
)
COMPACTED = """\
{first}

Summary of the work so far (the earlier conversation was compacted to fit your window; its \
full text is in the REPL variable `history`):
{summary}"""

DIRECT = """\
Answer the question using the context below.

Question: {question}

{inputs}Context:
{context}

{format}"""
DIRECT_TEXT = "Reply with the answer only."
DIRECT_JSON = "Reply with one JSON object with the fields {fields}, and nothing else."

STALL = {
    "repeated_block": "You ran the same block again ({detail}).",
    "repeated_error": "The same error came back {count} times: {detail}",
    "idle": "{count} turns in a row made no new variable and printed nothing new.",
    "cycle": "You are going in a loop: {detail} states.",
}
STALL_WARNING = (
    "[guard] {what} Change approach: look at the data differently, fix the cause of the "
    "error, or finish with what you know. If this goes on, the run will be stopped."
)
STALLED_EXTRACT = (
    "The run is being stopped because it stopped making progress ({what}). Give your best "
    "answer now from what you have found: reply with one line FINAL(your answer)."
)
CONTEXT_PRINTED = (
    "[guard] This block printed about {chars:,} characters of the context itself into your "
    "prompt. Print counts, summaries and short excerpts instead; keep the text in variables "
    "and hand it to llm_query_batched."
)


def fill(template: str, **fields: str) -> str:
    """`template` with each `{name}` of `fields` replaced and every other brace left as
    written: a system prompt may hold code, JSON or f-strings (str.format would raise a
    KeyError on them, or need every brace doubled)."""
    if not fields:
        return template
    pattern = re.compile("|".join(re.escape("{" + name + "}") for name in fields))
    return pattern.sub(lambda m: str(fields[m.group(0)[1:-1]]), template)
