"""Action mode (RLM-lite): the root model sends JSON actions that a kernel runs; no code runs.

`RLM(mode="actions")` / `recursa run --mode actions` selects it. The protocol is in
`schema` (one pydantic model per action), the kernel in `kernel`, the turn loop in `loop`
and the words in `prompts`.
"""

from .events import ActionExecuted
from .kernel import ActionResult, Kernel, render, search_value
from .loop import ActionLoop
from .schema import ACTIONS, parse_reply, usage

__all__ = [
    "ACTIONS",
    "ActionExecuted",
    "ActionLoop",
    "ActionResult",
    "Kernel",
    "parse_reply",
    "render",
    "search_value",
    "usage",
]
