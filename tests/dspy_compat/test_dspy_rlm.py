"""`recursa.dspy.RLM`, a drop-in for `dspy.RLM`: DSPy's own test LM double drives recursa's
engine and a real sandbox worker; every request goes through the DSPy LM objects, and a
small program holding it compiles with one of DSPy's optimizers, offline."""

from __future__ import annotations

import asyncio
import warnings

from extras import import_extra

dspy = import_extra("dspy", "dspy")
from dspy.utils import DummyLM  # noqa: E402

from recursa.dspy import RLM  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

CONTEXT = "\n".join(f"row {i}: nothing" for i in range(500)).replace(
    "row 321: nothing", "row 321: 7 apples"
)


def fence(code: str) -> dict[str, str]:
    return {"reply": f"I look first.\n```repl\n{code}\n```"}


def test_inputs_are_variables_submit_is_typed_and_retried(tmp_path) -> None:
    root = DummyLM(
        [
            fence("hits = [l for l in context.splitlines() if 'apples' in l]\nprint(hits)"),
            fence(
                # DSPy's double answers in its adapter's format: the value is the last line
                "n = llm_query('How many apples? ' + hits[0]).splitlines()[-1]\n"
                "SUBMIT(count=n + ' apples')"
            ),
            fence("SUBMIT(count=int(n))"),
        ]
    )
    sub = DummyLM({"How many apples?": {"reply": "7"}})
    dspy.configure(lm=root)
    rlm = RLM("context, query -> count: int", max_iters=5, sub_lm=sub)
    prediction = rlm(context=CONTEXT, query="How many apples?")
    assert prediction.count == 7
    assert len(prediction.trajectory) == 3
    assert "row 321: 7 apples" in prediction.trajectory[0]["output"]
    assert "count" in prediction.trajectory[1]["output"]  # the type error went back
    assert prediction.final_reasoning.endswith("I look first.")
    assert len(root.history) == 3 and len(sub.history) == 1  # DSPy saw every request


def test_after_max_iters_the_fields_are_extracted(tmp_path) -> None:
    root = DummyLM([fence("print(len(context))"), {"reply": '{"count": 500}'}])
    dspy.configure(lm=root)
    prediction = RLM("context -> count: int", max_iters=1)(context=CONTEXT)
    assert prediction.count == 500
    assert len(root.history) == 2


def shout(text: str) -> str:
    return text.upper()


def test_aforward_runs_it_async_with_a_dspy_tool() -> None:
    dspy.configure(lm=DummyLM([fence("SUBMIT(answer=loud(query))")]))
    rlm = RLM("query -> answer", tools=[dspy.Tool(shout, name="loud")])
    prediction = asyncio.run(rlm.aforward(query="ok"))
    assert prediction.answer == "OK"


class Program(dspy.Module):  # type: ignore[misc]
    """A DSPy program composing the RLM with a plain predictor an optimizer can tune."""

    def __init__(self) -> None:
        super().__init__()
        self.rlm = RLM("context -> count: int", max_iters=2)
        self.say = dspy.Predict("count -> sentence")

    def forward(self, context: str) -> dspy.Prediction:
        count = self.rlm(context=context).count
        return self.say(count=str(count))


def test_an_optimizer_compiles_a_program_holding_it() -> None:
    answers = []
    for _ in range(4):
        answers += [fence("SUBMIT(count=context.count('x'))"), {"sentence": "there are some"}]
    dspy.configure(lm=DummyLM(answers))
    trainset = [
        dspy.Example(context="x x", sentence="there are some").with_inputs("context"),
        dspy.Example(context="x", sentence="there are some").with_inputs("context"),
    ]
    optimizer = dspy.BootstrapFewShot(
        metric=lambda example, pred, trace=None: pred.sentence == example.sentence,
        max_bootstrapped_demos=2,
        max_labeled_demos=0,
    )
    compiled = optimizer.compile(Program(), trainset=trainset)
    assert compiled._compiled
    assert len(compiled.say.demos) == 2
    assert compiled.say.demos[0]["count"] in ("2", "1")
