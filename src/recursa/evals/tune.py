"""`recursa tune`: search controller profiles with gepa, scored by `recursa eval`.

gepa (extra `tune`) proposes new texts for the profile's prompts by reflecting on failed
traces; each candidate profile is scored by the eval harness (its scorers, executors, SQLite
response cache and resumable results), on the train tasks while searching and on the
held-out tasks to pick the winner. One budget (`max_llm_calls`, `max_cost`) holds over the
whole tuning: evaluations and reflection calls alike. Everything lands under `out`, so a
tuning stopped by Ctrl-C goes on where it was when run again with the same settings.
"""

from __future__ import annotations

import difflib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.profile import BUILTIN, Profile
from ..errors import ConfigError
from ..lm.pricing import PriceTable
from ..trace.reader import read_events
from .harness import EvalConfig, run_eval
from .tasks import Task

COMPONENTS = ("system_prompt", "first_turn")
"""The profile texts gepa may rewrite."""
STEP_CHARS = 600
"""How much of one block's code or output the reflection sees."""
FEEDBACK_CHARS = 4_000


class Interrupted(Exception):
    """The tuning was stopped (Ctrl-C); what finished is kept under `out`."""


class BudgetSpent(Exception):
    """The tuning budget cannot pay for the next step."""


@dataclass
class Budget:
    """The limits of the whole tuning and what has been spent against them."""

    max_llm_calls: int | None = None
    max_cost: float | None = None
    calls: int = 0
    cost: float = 0.0

    def share(self, n: int) -> tuple[int | None, float | None]:
        """Per-job caps for `n` jobs that together cannot pass what is left."""
        calls = cost = None
        if self.max_llm_calls is not None:
            calls = (self.max_llm_calls - self.calls) // n
            if calls < 1:
                raise BudgetSpent(f"the tuning budget is spent ({self})")
        if self.max_cost is not None:
            cost = (self.max_cost - self.cost) / n
            if cost <= 0:
                raise BudgetSpent(f"the tuning budget is spent ({self})")
        return calls, cost

    def __str__(self) -> str:
        limits = [
            *([f"--max-llm-calls {self.max_llm_calls}"] if self.max_llm_calls is not None else []),
            *([f"--max-cost {self.max_cost:g}"] if self.max_cost is not None else []),
        ]
        return ", ".join(limits)

    def spent(self) -> bool:
        """True when not even one more call fits."""
        try:
            self.share(1)
        except BudgetSpent:
            return True
        return False

    def charge(self, calls: int, cost: float, path: Path) -> None:
        """Count a step's spending, and keep the total in `path` for a resumed tuning."""
        self.calls += calls
        self.cost += cost
        path.write_text(json.dumps({"llm_calls": self.calls, "cost_usd": self.cost}) + "\n")

    def resume(self, path: Path) -> None:
        """Start from what an earlier (interrupted) tuning in the same folder spent."""
        if path.is_file():
            try:
                spent = json.loads(path.read_text(encoding="utf-8"))
                self.calls, self.cost = int(spent["llm_calls"]), float(spent["cost_usd"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}: not a tuning's spending ({exc})") from None


@dataclass
class TuneConfig:
    out: Path
    train: Sequence[Task]
    held_out: Sequence[Task]
    model: str
    sub_model: str | None = None
    base_url: str | None = None
    reflection_model: str | None = None
    """The model that proposes new texts (default: `model`)."""
    base: Profile = BUILTIN
    components: Sequence[str] = COMPONENTS
    max_llm_calls: int | None = None
    max_cost: float | None = None
    max_rollouts: int = 60
    """gepa's bound on task runs (its `max_metric_calls`)."""
    minibatch: int = 3
    max_iterations: int | None = None
    timeout: float | None = None
    sandbox: str = "auto"
    jobs: int = 2
    executor: str = "local"
    ray_address: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if not self.train or not self.held_out:
            raise ConfigError("tune needs at least one train task and one held-out task")
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown:
            raise ConfigError(f"unknown component {unknown[0]!r}: choose {', '.join(COMPONENTS)}")
        if self.max_cost is not None:
            for model in filter(None, (self.model, self.sub_model, self.reflection_model)):
                if PriceTable.default().lookup(model) is None:
                    raise ConfigError(f"--max-cost needs the price of {model}, which is unknown")


@dataclass
class Scored:
    """A candidate profile's results on one set: each task's eval record."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def score(self) -> float:
        rows = self.records.values()
        return sum(r["score"] for r in rows) / len(rows) if rows else 0.0

    def cost(self) -> float:
        return sum(r["cost_usd"] for r in self.records.values())

    def calls(self) -> int:
        return sum(r["llm_calls"] for r in self.records.values())


@dataclass
class Candidate:
    profile: Profile
    train: Scored = field(default_factory=Scored)
    held_out: Scored = field(default_factory=Scored)


def split(tasks: Sequence[Task], held_out: float, seed: int) -> tuple[list[Task], list[Task]]:
    """A seeded shuffle into train and held-out, at least one task in each."""
    if len(tasks) < 2:
        raise ConfigError("tune needs at least two tasks (one to train on, one held out)")
    order = list(tasks)
    random.Random(seed).shuffle(order)
    n = min(max(1, round(len(order) * held_out)), len(order) - 1)
    return order[n:], order[:n]


def _key(task: Task) -> str:
    return f"{task.family}/{task.length}/{task.seed}"


class Tuner:
    """gepa's adapter: runs candidates through the eval harness and feeds back traces."""

    propose_new_texts = None
    """gepa's own reflection proposes the texts (through `_reflect`)."""

    def __init__(self, config: TuneConfig) -> None:
        self.config = config
        self.budget = Budget(config.max_llm_calls, config.max_cost)
        self.spent_path = config.out / "spent.json"
        self.budget.resume(self.spent_path)
        self.candidates: dict[str, Candidate] = {}
        self.held = {id(t) for t in config.held_out}
        """gepa hands back the task objects it was given: a set's tasks are known by id."""

    def profile_of(self, texts: dict[str, str]) -> Profile:
        return self.config.base.replace(**texts)

    def run_tasks(self, profile: Profile, tasks: Sequence[Task]) -> list[dict[str, Any]]:
        """Each task's eval record for `profile`: from earlier runs where they exist (its
        results file), else run now under a share of the tuning budget. gepa asks for
        train tasks or held-out ones, never both at once; each set has its own folder."""
        cfg = self.config
        cand = self.candidates.setdefault(profile.id, Candidate(profile))
        held = any(id(t) in self.held for t in tasks)
        scored = cand.held_out if held else cand.train
        where = cfg.out / "candidates" / profile.id / ("held-out" if held else "train")
        todo = [t for t in tasks if _key(t) not in scored.records]
        if todo:
            calls, cost = self.budget.share(len(todo))
            summary = run_eval(
                EvalConfig(
                    out=where,
                    families=[],
                    strategies=["rlm"],
                    model=cfg.model,
                    sub_model=cfg.sub_model,
                    base_url=cfg.base_url,
                    extra_tasks=todo,
                    concurrency=cfg.jobs,
                    cache_path=cfg.out / "cache.sqlite",
                    max_iterations=cfg.max_iterations,
                    max_llm_calls=calls,
                    max_cost=cost,
                    timeout=cfg.timeout,
                    sandbox=cfg.sandbox,
                    plots=False,
                    progress=False,
                    executor=cfg.executor,
                    ray_address=cfg.ray_address,
                    resume=True,
                    profile=profile,
                    trace_dir=where / "traces",
                )
            )
            for r in summary.ran:
                self.budget.charge(r["llm_calls"], r["cost_usd"], self.spent_path)
            if summary.interrupted:
                raise Interrupted(f"interrupted: results so far are kept in {cfg.out}")
            starved = [r for r in summary.ran if r["status"] == "budget_exhausted"]
            if starved:
                _forget(summary.results, starved)
                why = "a task run needed more than was left"
                raise BudgetSpent(f"the tuning budget is spent ({self.budget}): {why}")
            for r in summary.records:
                scored.records[f"{r['family']}/{r['length']}/{r['seed']}"] = r
        return [scored.records[_key(t)] for t in tasks]

    # ---- the gepa adapter ---------------------------------------------------------------
    def evaluate(
        self, batch: list[Task], candidate: dict[str, str], capture_traces: bool = False
    ) -> Any:
        from gepa import EvaluationBatch

        profile = self.profile_of(candidate)
        records = self.run_tasks(profile, batch)
        scores = [float(r["score"]) for r in records]
        traces = [self._feedback(profile, r) for r in records] if capture_traces else None
        return EvaluationBatch(outputs=records, scores=scores, trajectories=traces)

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        rows = [
            {"Inputs": r["question"], "Generated Outputs": str(r["answer"]), "Feedback": trace}
            for r, trace in zip(eval_batch.outputs, eval_batch.trajectories, strict=True)
        ]
        return {name: rows for name in components_to_update}

    def _feedback(self, profile: Profile, record: dict[str, Any]) -> str:
        """What the reflection reads about one task: the score, the expected answer, how
        the run ended, and each turn's code, output and error from its trace."""
        head = (
            f"score {record['score']:.2f}; expected {record['expected']!r}; status "
            f"{record['status']}"
            + (f" ({record['error']})" if record.get("error") else "")
            + f"; {record['iterations']} turns, {record['llm_calls']} model calls."
        )
        where = self.config.out / "candidates" / profile.id
        name = f"{record['run_id']}.jsonl"
        path = next((p for p in where.glob(f"*/traces/{name}")), where / name)
        steps = []
        if record.get("run_id") and path.is_file():
            events, _ = read_events(path, tolerant=True)
            for e in events:
                if e.get("type") == "block":
                    body = str(e.get("error") or e.get("output") or "")[:STEP_CHARS]
                    code = str(e.get("code") or "")[:STEP_CHARS]
                    steps.append(f"turn {e.get('iteration')}:\n{code}\n-> {body}")
                elif e.get("type") == "stall":
                    steps.append(f"guard: {e.get('kind')} {e.get('detail')}")
        return (head + "\n" + "\n".join(steps))[:FEEDBACK_CHARS]


def _forget(results: Path, records: list[dict[str, Any]]) -> None:
    """Drop runs the tuning budget cut short from a results file, so that a resumed
    tuning with more budget runs them again instead of keeping their scores."""
    gone = {r["run_id"] for r in records}
    kept = [
        line
        for line in results.read_text(encoding="utf-8").splitlines(keepends=True)
        if json.loads(line).get("run_id") not in gone
    ]
    results.write_text("".join(kept), encoding="utf-8")


def _reflect(config: TuneConfig, tuner: Tuner) -> Any:
    """gepa's reflection model: one direct call per proposal, charged to the tuning budget
    and kept in the tuning's response cache (a resumed tuning asks nothing twice)."""
    from ..core.gateway import ClientPool
    from ..options import make_program
    from .cache import CachedClient, ResponseCache

    model = config.reflection_model or config.model
    client, _ = ClientPool(base_url=config.base_url, base_url_for=config.model).get(model)
    cache = ResponseCache(config.out / "cache.sqlite")
    cached = CachedClient(client, cache, f"tune-reflect:{model}")

    def reflect(prompt: str | list[dict[str, Any]]) -> str:
        calls, cost = tuner.budget.share(1)
        opts = {"model": model, "strategy": "direct", "max_llm_calls": calls, "max_cost": cost}
        text = prompt if isinstance(prompt, str) else json.dumps(prompt)
        result = make_program(opts, client=cached).run(text)
        usage = result.usage
        tuner.budget.charge(usage["llm_calls"], usage["cost_usd"], tuner.spent_path)
        answer = str(result.answer or "")
        return answer if "```" in answer else f"```\n{answer}\n```"

    return reflect


class _Log:
    """gepa's log lines go to a file under `out`, not to the command's output."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def log(self, message: str) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(message + "\n")


@dataclass
class TuneResult:
    base: Candidate
    winner: Candidate
    candidates: list[Candidate]
    budget: Budget
    stopped: str | None
    profile_path: Path
    report_path: Path

    @property
    def gain(self) -> float:
        return self.winner.held_out.score() - self.base.held_out.score()


def tune(config: TuneConfig) -> TuneResult:
    """Search profiles from `config.base`; write the winner (by held-out score, then by
    held-out cost) to `out/profile.json` and the report to `out/report.md`."""
    try:
        import gepa
    except ImportError:
        raise ConfigError(
            "recursa tune needs the 'tune' extra: pip install 'recursa[tune]'"
        ) from None
    config.out.mkdir(parents=True, exist_ok=True)
    tuner = Tuner(config)
    seed = {name: getattr(config.base, name) for name in config.components}
    stopped = None
    try:
        gepa.optimize(
            seed_candidate=seed,
            trainset=list(config.train),
            valset=list(config.held_out),
            adapter=tuner,  # type: ignore[arg-type]  # gepa infers its Protocol's type vars as Never
            reflection_lm=_reflect(config, tuner),
            reflection_minibatch_size=min(config.minibatch, len(config.train)),
            max_metric_calls=config.max_rollouts,
            seed=config.seed,
            display_progress_bar=False,
            logger=_Log(config.out / "gepa.log"),
            stop_callbacks=lambda state: tuner.budget.spent(),
        )
    except BudgetSpent as exc:
        stopped = str(exc)
    base = tuner.candidates.get(config.base.id) or Candidate(config.base)
    full = len(config.held_out)
    eligible = [c for c in tuner.candidates.values() if len(c.held_out.records) == full]
    if len(base.held_out.records) != full:
        raise BudgetSpent(
            f"the budget did not cover the built-in profile's held-out run: {stopped}"
        )
    winner = max(eligible, key=lambda c: (c.held_out.score(), -c.held_out.cost(), c is base))
    profile_path = config.out / "profile.json"
    profile_path.write_text(winner.profile.replace(name="tuned").dumps(), encoding="utf-8")
    result = TuneResult(
        base, winner, list(tuner.candidates.values()), tuner.budget, stopped, profile_path,
        config.out / "report.md",
    )  # fmt: skip
    result.report_path.write_text(report(result, config), encoding="utf-8")
    return result


def pareto(candidates: Sequence[Candidate], full: int) -> list[Candidate]:
    """The candidates no other beats on held-out score without costing more."""
    rated = [c for c in candidates if len(c.held_out.records) == full]

    def beaten(c: Candidate) -> bool:
        s, k = c.held_out.score(), c.held_out.cost()
        return any(
            (o.held_out.score() >= s and o.held_out.cost() <= k)
            and (o.held_out.score() > s or o.held_out.cost() < k)
            for o in rated
        )

    return [c for c in rated if not beaten(c)]


def report(result: TuneResult, config: TuneConfig) -> str:
    """The markdown report: every candidate on both sets, the Pareto front, the diff."""
    full = len(config.held_out)
    front = {c.profile.id for c in pareto(result.candidates, full)}
    lines = [
        "# recursa tune",
        "",
        f"Model {config.model}, sub-model {config.sub_model or '(same)'}; "
        f"{len(config.train)} train and {full} held-out tasks.",
        f"Held-out score: built-in {result.base.held_out.score():.3f}, tuned "
        f"{result.winner.held_out.score():.3f} ({result.gain:+.3f}); winner "
        f"{result.winner.profile.id}, written as {result.profile_path.name} "
        f"(id {result.winner.profile.replace(name='tuned').id}).",
        f"Spent {result.budget.calls} model calls, ${result.budget.cost:.4f}"
        + (f"; stopped: {result.stopped}" if result.stopped else "."),
        "",
        "| profile | train score | train tasks | train cost | held-out score | held-out cost "
        "| held-out calls | Pareto |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result.candidates:
        tag = " (built-in)" if c is result.base else (" (winner)" if c is result.winner else "")
        held = len(c.held_out.records) == full
        lines.append(
            f"| {c.profile.id}{tag} | {c.train.score():.3f} | {len(c.train.records)} "
            f"| ${c.train.cost():.4f} | {c.held_out.score():.3f}{'' if held else ' (partial)'} "
            f"| ${c.held_out.cost():.4f} | {c.held_out.calls()} "
            f"| {'yes' if c.profile.id in front else ''} |"
        )
    lines += ["", "## The winner against the built-in profile", ""]
    changed = False
    for name in COMPONENTS:
        old, new = getattr(result.base.profile, name), getattr(result.winner.profile, name)
        if old != new:
            changed = True
            diff = difflib.unified_diff(
                old.splitlines(), new.splitlines(), f"built-in {name}", f"tuned {name}", lineterm=""
            )
            lines += ["```diff", *diff, "```", ""]
    if not changed:
        lines.append("No candidate beat the built-in profile on the held-out tasks.")
    return "\n".join(lines) + "\n"
