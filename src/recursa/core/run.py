"""The run: the services one call of a program shares across every depth of its tree.

A `Run` owns the ledger (limits and usage), the client pool and gateway (every model
request), the emitter (the event stream), the tools, the REPL seed and the per-depth slots
for child RLMs. The code loop, the action loop, sessions and the direct strategy all take
one; none reaches past its public names. It reads its settings from a `Program`, the
protocol `programs.RLM` satisfies, so this module never imports the programs above it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from ..budget import Ledger, Limits
from ..context import Context
from ..events import ControllerNote, Emitter, Event, Listener, RunEnded, RunStarted
from ..lm.base import LMClient
from ..lm.pricing import PriceTable
from ..lm.retry import RetryPolicy
from .controllers import known_controller
from .gateway import ClientPool, Gateway
from .guards import GuardSettings
from .profile import Profile
from .render import jsonable
from .signature import Signature
from .status import Status
from .tools import Tool


class Program(Protocol):
    """What a run and its loops read from the program that started it (`programs.RLM`)."""

    strategy: ClassVar[str]
    mode: str
    dialect: str
    model: str
    sub_model: str | None
    signature: Signature | None
    tools: dict[str, Tool]
    limits: Limits
    prices: PriceTable
    retry: RetryPolicy
    max_depth: int
    max_iterations: int
    timeout: float | None
    cell_timeout: float
    concurrency: int
    max_output_chars: int
    sandbox: str
    sandbox_options: dict[str, Any]
    context_window: int | None
    compact_at: float
    guards: GuardSettings | None
    system_prompt: str
    profile: Profile
    seed: int | None
    listeners: list[Listener]
    client: LMClient | None
    base_url: str | None
    base_url_for: str
    env: dict[str, str] | None
    request_timeout: float
    request_deadline: float
    max_response_bytes: int
    record_full_prompts: bool

    def settings(self) -> dict[str, Any]: ...

    def choose(self, contexts: list[Context]) -> str: ...

    def load(self, value: Any, name: str = "<value>") -> Context: ...


@dataclass(slots=True)
class Outcome:
    """How one loop (or the direct call) ended, before the run turns it into a result."""

    status: str
    """A `Status` value."""
    answer: Any = None
    iterations: int = 0
    error: str | None = None
    output: BaseModel | None = None


@dataclass(slots=True)
class RunResult:
    """What a run returns: the contract's JSON object, as Python, plus the typed output."""

    answer: Any
    status: str
    iterations: int
    usage: dict[str, Any]
    run_id: str
    trace: str | None = None
    error: str | None = None
    output: BaseModel | None = None
    """The validated outputs when the program has a signature."""
    strategy: str = "rlm"
    events: list[Event] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def to_dict(self) -> dict[str, Any]:
        data = {
            "answer": jsonable(self.answer),
            "status": self.status,
            "iterations": self.iterations,
            "usage": self.usage,
            "run_id": self.run_id,
            "trace": self.trace,
        }
        if self.error:
            data["error"] = self.error
        return data


class Run:
    """One call: ledger, gateway and events shared by every depth of the tree."""

    def __init__(self, cfg: Program, listeners: list[Listener], run_id: str | None = None) -> None:
        self.cfg = cfg
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.events: list[Event] = []
        self.emitter = Emitter(self.run_id, [self.events.append, *listeners])
        self.ledger = Ledger(limits=cfg.limits, pricer=cfg.prices)
        self.pool = ClientPool(
            base_url=cfg.base_url,
            base_url_for=cfg.base_url_for,
            client=cfg.client,
            env=cfg.env,
            timeout=cfg.request_timeout,
            max_connections=max(cfg.concurrency, 8),
            deadline=cfg.request_deadline,
            max_response_bytes=cfg.max_response_bytes,
        )
        self.gateway = Gateway(
            self.ledger,
            self.pool,
            self.emitter,
            concurrency=cfg.concurrency,
            retry=cfg.retry,
            full_prompts=cfg.record_full_prompts,
        )
        self.tools = cfg.tools
        self.system_prompt = cfg.system_prompt
        self.seed = cfg.seed if cfg.seed is not None else secrets.randbits(32)
        self.child_count: dict[str, int] = {}
        self.child_slots: dict[int, asyncio.Semaphore] = {}

    def start(self, question: str, contexts: list[Context], strategy: str) -> None:
        self.emitter.emit(
            RunStarted(
                question=question,
                model=self.cfg.model,
                sub_model=self.cfg.sub_model,
                settings={**self.cfg.settings(), "strategy": strategy, "seed": self.seed},
                contexts=[c.reference() for c in contexts],
                system_prompt=self.system_prompt,
                profile=self.cfg.profile.id,
            )
        )
        if strategy != "direct" and not known_controller(self.cfg.model):
            note = (
                f"{self.cfg.model} is not in the table of models known to drive RLMs well; "
                "smaller models often write poor REPL code (see --strategy auto)"
            )
            self.emitter.emit(ControllerNote(model=self.cfg.model, message=note))

    def finish(
        self, outcome: Outcome, strategy: str = "rlm", *, cancelled: bool = False
    ) -> RunResult:
        breach = self.ledger.breach
        if breach is not None and outcome.status not in (Status.ERROR, Status.BUDGET_EXHAUSTED):
            # Model code may have caught the BudgetExceeded of a sub-query and gone on to
            # FINAL: a run whose limit no longer holds is never reported `ok`.
            why = f"{breach}: the run stopped, as {self.ledger.breach_limit} can no longer hold"
            outcome = dataclasses.replace(outcome, status=Status.BUDGET_EXHAUSTED, error=why)
        status = Status(outcome.status).value  # a plain str in events and results
        usage = self.ledger.usage()
        self.emitter.emit(
            RunEnded(
                status=status,
                answer=jsonable(outcome.answer),
                iterations=outcome.iterations,
                usage=usage,
                error=outcome.error,
                cancelled=cancelled,
            )
        )
        return RunResult(
            answer=outcome.answer,
            status=status,
            iterations=outcome.iterations,
            usage=usage,
            run_id=self.run_id,
            error=outcome.error,
            output=outcome.output,
            strategy=strategy,
            events=self.events,
        )

    def slots(self, depth: int) -> asyncio.Semaphore:
        """How many child RLMs (each a worker process) may run at once at `depth`. One
        limit per depth, so parents waiting on their children never starve them."""
        slots = self.child_slots.get(depth)
        if slots is None:
            slots = self.child_slots[depth] = asyncio.Semaphore(self.cfg.concurrency)
        return slots

    def child_id(self, parent: str) -> str:
        n = self.child_count.get(parent, 0)
        self.child_count[parent] = n + 1
        return f"{parent}.{n}"
