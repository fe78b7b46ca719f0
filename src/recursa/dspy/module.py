"""`recursa.dspy.RLM`: a `dspy.Module` with dspy.RLM's constructor and behaviour, run by
recursa's engine and sandbox, every LM request a call of a DSPy LM object.

Signature inputs become REPL variables; the model ends with `SUBMIT(field=...)`, checked
against the signature's output types (a type error goes back to the model, which tries
again); after `max_iters` turns one extraction request asks for the fields. The result is a
`dspy.Prediction` of the output fields plus `trajectory` (reasoning, code and output per
turn) and `final_reasoning`.
"""

from __future__ import annotations

from typing import Any

import dspy
from pydantic import create_model

from ..core.programs import RLM as Program
from ..core.protocol import parse_turn
from ..core.run import RunResult
from ..core.signature import Signature
from ..core.tools import tool
from ..events import LMCallEnded, TurnEnded, TurnStarted
from .client import ROOT, SUB, DSPyClient


class RLM(dspy.Module):  # type: ignore[misc]
    """dspy.RLM on recursa: `RLM("context, query -> answer: int")(context=..., query=...)`."""

    def __init__(
        self,
        signature: Any,
        max_iters: int = 20,
        max_llm_calls: int = 50,
        max_output_chars: int = 10_000,
        verbose: bool = False,
        tools: list[Any] | None = None,
        sub_lm: Any = None,
    ) -> None:
        super().__init__()
        self.signature = dspy.ensure_signature(signature)
        self.max_iters = max_iters
        self.max_llm_calls = max_llm_calls
        self.max_output_chars = max_output_chars
        self.verbose = verbose
        self.tools = [
            tool(t.func, name=t.name) if isinstance(t, dspy.Tool) else t for t in tools or []
        ]
        """Functions, and DSPy `Tool`s as the functions they wrap, under their names."""
        self.sub_lm = sub_lm

    def _program(self) -> Program:
        lm = dspy.settings.lm
        if lm is None:
            raise ValueError("no LM: dspy.configure(lm=...) first")
        outputs = {
            name: (field.annotation or str, ...)
            for name, field in self.signature.output_fields.items()
        }
        signature = Signature(
            tuple(self.signature.input_fields),
            create_model("Outputs", **outputs),  # type: ignore[call-overload]
            self.signature.instructions,
        )
        listeners = []
        if self.verbose:
            from ..progress import Progress

            listeners.append(Progress())
        return Program(
            ROOT,
            sub_model=SUB,
            client=DSPyClient(lm, self.sub_lm or lm),
            signature=signature,
            tools=self.tools,
            max_iterations=self.max_iters,
            # dspy counts sub-LM calls only; recursa's cap counts every request
            max_llm_calls=self.max_llm_calls + self.max_iters + 1,
            max_output_chars=self.max_output_chars,
            on_event=listeners[0] if listeners else None,
            env={},
        )

    def _question(self) -> str:
        return self.signature.instructions

    def forward(self, **inputs: Any) -> dspy.Prediction:
        result = self._program().run(self._question(), inputs=inputs)
        return _prediction(result)

    async def aforward(self, **inputs: Any) -> dspy.Prediction:
        result = await self._program().arun(self._question(), inputs=inputs)
        return _prediction(result)


def _prediction(result: RunResult) -> dspy.Prediction:
    if result.output is None:
        raise RuntimeError(
            f"the RLM ended {result.status} without the output fields"
            + (f": {result.error}" if result.error else "")
        )
    trajectory = _trajectory(result)
    final = trajectory[-1]["reasoning"] if trajectory else ""
    return dspy.Prediction(
        **result.output.model_dump(), trajectory=trajectory, final_reasoning=final
    )


def _trajectory(result: RunResult) -> list[dict[str, str]]:
    """Each root turn as dspy.RLM reports it: the reply's prose, its code, what came back."""
    steps: list[dict[str, str]] = []
    for event in result.events:
        if event.rlm != "0":
            continue
        if isinstance(event, TurnStarted):
            steps.append({"reasoning": "", "code": "", "output": ""})
        elif isinstance(event, LMCallEnded) and event.purpose == "root" and steps:
            turn = parse_turn(event.text or "")
            steps[-1].update(reasoning=turn.prose, code="\n\n".join(turn.blocks))
        elif isinstance(event, TurnEnded) and steps:
            steps[-1]["output"] = event.observation or ""
    return steps
