"""Action mode (RLM-lite): the root model sends JSON actions that a kernel runs; no code runs.

`RLM(mode="actions")` / `recursa run --mode actions` selects it. The protocol is in
`schema` (one pydantic model per action), the kernel's dispatcher in `kernel`, its search
engine in `search` and its values and their rendering in `values`, the turn loop in `loop`
and the words in `prompts`.
"""

from .events import ActionExecuted
from .kernel import Kernel
from .loop import ActionLoop
from .schema import ACTIONS, parse_reply, usage
from .search import search_value
from .values import ActionResult, render

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
