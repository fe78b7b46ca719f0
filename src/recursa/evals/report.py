"""The eval's report: `report.md` (accuracy by family, length and strategy, with the
paper's figures beside the matching tasks; cost and calls per task; failures) and two PNG
plots (accuracy against context length per strategy; calls and cost per task).

Plots need matplotlib (`pip install 'recursa[eval]'`), imported only here and only when
plots are asked for, with the Agg backend (no display). Without it the report says so in
one line and the markdown is written all the same.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .oracle import ORACLE_LABEL
from .paper import PAPER, PAPER_SOURCE
from .tasks import format_length

REPORT = "report.md"
ACCURACY_PNG = "accuracy_vs_length.png"
COST_PNG = "cost_calls.png"
STRATEGY_ORDER = ("direct", "rlm", "rlm-d2", "rlm-nosub")


@dataclass(slots=True)
class Written:
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _strategies(records: Iterable[dict[str, Any]]) -> list[str]:
    seen = {r["strategy"] for r in records}
    return [s for s in STRATEGY_ORDER if s in seen] + sorted(seen - set(STRATEGY_ORDER))


def _models(records: list[dict[str, Any]]) -> list[str]:
    order: list[str] = []
    for r in records:
        if r["model"] not in order:
            order.append(r["model"])
    return order


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _cell(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    score = 100 * _mean([r["score"] for r in rows])
    overflow = sum(r["status"] == "overflow" for r in rows)
    mark = f", {overflow} overflow" if overflow else ""
    return f"{score:.1f} (n={len(rows)}{mark})"


def accuracy_table(records: list[dict[str, Any]]) -> str:
    """Mean score x 100 by (family, length) and strategy, with the paper's figures."""
    strategies = _strategies(records)
    groups: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in records:
        groups[(r["family"], r["length"])][r["strategy"]].append(r)
    head = ["family", "length", *strategies, "paper (GPT-5 + GPT-5-mini)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for (family, length), by in sorted(groups.items()):
        papers = {p for rows in by.values() for r in rows if (p := r.get("paper")) is not None}
        paper = "; ".join(PAPER[p].cell() for p in sorted(papers) if p in PAPER)
        if paper and not any(r.get("source") != "generated" for rs in by.values() for r in rs):
            paper += " (a similar task, not the same data)"
        cells = [family, format_length(length), *(_cell(by.get(s, [])) for s in strategies)]
        lines.append("| " + " | ".join([*cells, paper or "—"]) + " |")
    totals = [
        "**all**",
        "",
        *(_cell([r for r in records if r["strategy"] == s]) for s in strategies),
        "",
    ]
    lines.append("| " + " | ".join(totals) + " |")
    return "\n".join(lines)


def cost_table(records: list[dict[str, Any]]) -> str:
    """Per (family, strategy): runs, mean score, median cost, mean calls and tokens."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["family"], r["strategy"])].append(r)
    head = [
        "family", "strategy", "runs", "score", "median cost (USD)", "mean LM calls",
        "mean input tokens", "mean output tokens", "mean wall (s)", "statuses",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    order = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    for (family, strategy), rows in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][1])
    ):
        statuses: dict[str, int] = defaultdict(int)
        for r in rows:
            statuses[r["status"]] += 1
        cells = [
            family,
            strategy,
            str(len(rows)),
            f"{100 * _mean([r['score'] for r in rows]):.1f}",
            f"{statistics.median(r['cost_usd'] or 0.0 for r in rows):.4f}",
            f"{_mean([r['llm_calls'] for r in rows]):.1f}",
            f"{_mean([r['input_tokens'] for r in rows]):,.0f}",
            f"{_mean([r['output_tokens'] for r in rows]):,.0f}",
            f"{_mean([r['wall_s'] for r in rows]):.2f}",
            ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _failures(records: list[dict[str, Any]], limit: int = 20) -> list[str]:
    bad = [r for r in records if r["status"] not in ("ok",) or r["score"] < 1.0]
    out = []
    for r in bad[:limit]:
        why = r.get("error") or f"answer {str(r.get('answer'))[:80]!r}"
        out.append(
            f"- {r['task_id']} {r['strategy']}: score {r['score']:.2f}, status {r['status']}: "
            + " ".join(str(why).split())[:200]
        )
    if len(bad) > limit:
        out.append(f"- ... and {len(bad) - limit} more (see results.jsonl)")
    return out


def render_markdown(records: list[dict[str, Any]], plots: list[Path], notes: list[str]) -> str:
    parts = ["# recursa eval report", ""]
    for model in _models(records):
        rows = [r for r in records if r["model"] == model]
        oracle = any(r.get("oracle") for r in rows)
        title = f"{model}: {ORACLE_LABEL}" if oracle and model == "oracle" else model
        if model == "wrong" and oracle:
            title = "wrong: SCRIPTED WRONG MODEL (answers 0), not a model"
        sub = {m for r in rows if (m := r.get("sub_model")) is not None}
        parts += [f"## Model: {title}", ""]
        if oracle:
            parts += [
                "**These answers come from a scripted oracle, not a language model.** The "
                "oracle runs each family's program for real (sandbox, sub-queries, child RLMs, "
                "budget), so its scores check the harness, not a model.",
                "",
            ]
        if sub:
            parts += [f"Sub-model: {', '.join(sorted(sub))}", ""]
        hits = sum(r.get("cache_hits", 0) for r in rows)
        calls = sum(r.get("llm_calls", 0) for r in rows)
        refused = sum(r.get("refused_sub_queries", 0) for r in rows)
        parts += [
            f"{len(rows)} runs; {calls:,} LM calls, of which {hits:,} answered from the "
            f"response cache; {refused} sub-queries refused in rlm-nosub runs.",
            "",
            "### Accuracy (mean score x 100)",
            "",
            accuracy_table(rows),
            "",
            f'Paper: {PAPER_SOURCE}. Its base model is our `direct`, its "RLM, no sub-calls" '
            "our `rlm-nosub`; it ran no depth-2 RLM. `overflow`: the context did not fit the "
            "model's window, so nothing was sent and the score is 0 (the paper's \"context "
            'overflow").',
            "",
            "### Cost and calls per task",
            "",
            cost_table(rows),
            "",
        ]
        failures = _failures(rows)
        if failures:
            parts += ["### Runs below a full score", "", *failures, ""]
    if plots:
        parts += ["## Plots", ""]
        parts += [f"![{p.stem}]({p.name})" for p in plots]
        parts.append("")
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    parts.append(f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} from results.jsonl.")
    return "\n".join(parts) + "\n"


def plot(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """The two PNGs; raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    models = _models(records)
    strategies = _strategies(records)
    families = sorted({r["family"] for r in records})
    oracle = " (ORACLE: scripted, not a model)" if any(r.get("oracle") for r in records) else ""

    # 1. accuracy against context length, one panel per family, one line per model+strategy
    cols = min(3, len(families))
    rows_n = -(-len(families) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.6 * rows_n), squeeze=False)
    for ax, family in zip(axes.flat, families, strict=False):
        for model in models:
            for strategy in strategies:
                points: dict[int, list[float]] = defaultdict(list)
                for r in records:
                    if r["family"] == family and r["strategy"] == strategy and r["model"] == model:
                        points[r["length"]].append(100 * r["score"])
                if not points:
                    continue
                xs = sorted(points)
                label = strategy if len(models) == 1 else f"{model}: {strategy}"
                ax.plot(xs, [_mean(points[x]) for x in xs], marker="o", label=label)
        ax.set_title(family)
        ax.set_xscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("score (x 100)")
        ax.set_ylim(-5, 105)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(families) :]:
        ax.axis("off")
    fig.suptitle("Accuracy against context length" + oracle)
    fig.tight_layout()
    accuracy = out / ACCURACY_PNG
    fig.savefig(accuracy, dpi=100)
    plt.close(fig)

    # 2. LM calls and cost per task, by family and strategy
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(families) + 4), 4))
    width = 0.8 / max(1, len(strategies) * len(models))
    priced = any((r.get("cost_usd") or 0) > 0 for r in records)
    for i, (model, strategy) in enumerate((m, s) for m in models for s in strategies):
        calls, costs = [], []
        for family in families:
            rows = [
                r for r in records
                if r["family"] == family and r["strategy"] == strategy and r["model"] == model
            ]  # fmt: skip
            calls.append(_mean([r["llm_calls"] for r in rows]))
            if priced:
                costs.append(statistics.median([r["cost_usd"] or 0.0 for r in rows] or [0.0]))
            else:
                costs.append(_mean([r["input_tokens"] + r["output_tokens"] for r in rows]))
        bars = [j + i * width for j in range(len(families))]
        label = strategy if len(models) == 1 else f"{model}: {strategy}"
        left.bar(bars, calls, width, label=label)
        right.bar(bars, costs, width, label=label)
    ticks = [j + width * (len(strategies) * len(models) - 1) / 2 for j in range(len(families))]
    for ax, title in (
        (left, "mean LM calls per task"),
        (right, "median cost per task (USD)" if priced else "mean tokens per task (no prices)"),
    ):
        ax.set_xticks(ticks, families, rotation=20)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Cost and calls per task" + oracle)
    fig.tight_layout()
    cost = out / COST_PNG
    fig.savefig(cost, dpi=100)
    plt.close(fig)
    return [accuracy, cost]


def write_report(records: list[dict[str, Any]], out: Path, *, plots: bool = True) -> Written:
    out.mkdir(parents=True, exist_ok=True)
    written = Written(out / REPORT)
    if plots:
        try:
            written.plots = plot(records, out)
        except ImportError:
            written.notes.append(
                "plots skipped: matplotlib is not installed (pip install 'recursa[eval]')"
            )
    else:
        written.notes.append("plots not drawn (--no-plots)")
    written.markdown.write_text(render_markdown(records, written.plots, written.notes), "utf-8")
    return written
