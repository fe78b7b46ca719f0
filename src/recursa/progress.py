"""Progress on standard error.

When stderr is not a terminal (CI, pipes, tests): plain lines, one per turn, block error,
refusal and child RLM. When it is: a live view (rich `Live`) of the RLM tree with what each
worker is doing (asking the model, running a block, waiting on N sub-queries or on child
RLMs), calls, tokens, cost and elapsed time; errors still print as lines above it.

The listener never raises into the run: a failure turns the display off with one line. Each
event only updates counters; the live view is redrawn by rich's refresh thread a few times
a second, so a run of 10,000 events costs 10,000 dictionary updates, not 10,000 redraws.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .events import (
    BlockExecuted,
    BudgetRefused,
    ControllerNote,
    Event,
    LMCallEnded,
    LMCallStarted,
    RLMEnded,
    RLMStarted,
    RunEnded,
    RunStarted,
    SubQueriesAsked,
    ToolCalled,
    TurnEnded,
    TurnStarted,
)

LIVE_ROWS = 16
"""RLMs shown in the live view at most: the running ones first, the rest counted."""


def _tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def _who(event: Event) -> str:
    return f" of child {event.rlm}" if event.depth else ""


def _sandbox_line(name: str) -> str:
    """Which sandbox runs the model's code, and what that means, in one line."""
    if name == "local":
        return (
            "[bold red]sandbox: local: WARNING: model code runs INSIDE this process, with "
            "your API keys, files and network in reach; nothing is blocked (debugging only)[/]"
        )
    if name == "subprocess":
        from .sandbox import bwrap_problem

        problem = bwrap_problem()
        why = f"; bubblewrap is not usable here ({escape(problem)})" if problem else ""
        return (
            f"sandbox: subprocess (clean environment and resource limits; files and network "
            f"are not isolated{why})"
        )
    if name == "bwrap":
        return "sandbox: bwrap (bubblewrap: no network, read-only system, own pid namespace)"
    if name == "landlock":
        from .sandbox.landlock import landlock_summary

        return (
            f"sandbox: landlock ({escape(landlock_summary())}; reads only the system, Python "
            "and the contexts, writes only its temporary folder)"
        )
    if name == "docker":
        return "sandbox: docker (no network, read-only root, memory, CPU and pids limits)"
    return f"sandbox: {escape(name)}"


def _id_key(rlm_id: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in rlm_id.split("."))


@dataclass
class _Worker:
    """One RLM of the tree, as the progress view sees it."""

    id: str
    depth: int
    question: str = ""
    turn: int = 0
    status: str | None = None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    turn_calls: int = 0
    asking: int = 0
    extracting: bool = False
    attempt: int = 1
    subs: int = 0
    """Sub-queries in flight (sent, not answered)."""
    subs_done: int = 0
    subs_asked: int = 0
    """Sub-queries the block's code asked for so far (a batch counts its size at once)."""
    """Sub-queries answered during the current block."""
    children: int = 0
    in_code: bool = False
    blocks_done: int = 0
    retrying: bool = False
    tools: int = 0

    def doing(self) -> str:
        if self.status is not None:
            return f"ended: {self.status}"
        if self.asking:
            what = "asking for an answer (extraction)" if self.extracting else "asking the model"
            return what + (f", attempt {self.attempt}" if self.attempt > 1 else "")
        waits = []
        if self.children:
            waits.append(f"{self.children} child RLM{'s' if self.children != 1 else ''}")
        if self.subs:
            # answered of those the block asked for (`sub_queries` events), beside those
            # in flight; retries are calls too, so "done" never shows past the total
            done = (
                f"{min(self.subs_done, self.subs_asked)}/{self.subs_asked}"
                if self.subs_asked
                else str(self.subs_done)
            )
            waits.append(f"sub-queries ({done} done, {self.subs} in flight)")
        if waits:
            return f"block {self.blocks_done + 1}: waiting on " + " and ".join(waits)
        if self.in_code:
            return f"running block {self.blocks_done + 1}"
        if self.retrying:
            return "waiting to retry"
        return "starting" if self.turn == 0 else "between turns"


class Progress:
    """An event listener that shows a run's progress: live on a terminal, plain lines
    otherwise (`live` forces one or the other)."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        live: bool | None = None,
        refresh_per_second: float = 4.0,
        auto_refresh: bool = True,
    ) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        if live is None:
            live = self.console.is_terminal and not self.console.is_dumb_terminal
        self.live = live
        self.refresh_per_second = refresh_per_second
        self.auto_refresh = auto_refresh
        self.renders = 0
        """How many times the live view was built (for tests: events alone never build it)."""
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._atexit = False
        self._broken = False
        self._reset()

    def _reset(self) -> None:
        self.run_id = ""
        self.model = ""
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.started = time.monotonic()
        self.ended: float | None = None
        self.status: str | None = None
        self.workers: dict[str, _Worker] = {}
        self.running: set[str] = set()

    # ---- the listener ----------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        if self._broken:
            return
        try:
            with self._lock:
                lines = self._update(event)
            if isinstance(event, RunStarted) and self.live:
                self._print(lines)
                self._start_live()
                return
            if isinstance(event, RunEnded):
                self._stop_live()
            self._print(lines)
        except Exception as exc:  # the display must never break the run
            self._broken = True
            self._stop_live()
            with contextlib.suppress(Exception):
                self.console.print(f"recursa: progress display stopped: {exc!r}", markup=False)

    def _print(self, lines: list[tuple[int, str]]) -> None:
        for depth, text in lines:
            self.console.print("  " * depth + text)

    def _worker(self, event: Event) -> _Worker:
        worker = self.workers.get(event.rlm)
        if worker is None:
            worker = self.workers[event.rlm] = _Worker(event.rlm, event.depth)
            self.running.add(event.rlm)
        return worker

    def _update(self, event: Event) -> list[tuple[int, str]]:
        """Apply one event to the counters; return the plain lines it prints (depth, text)."""
        lines: list[tuple[int, str]] = []
        plain = not self.live
        if isinstance(event, RunStarted):
            self._reset()
            self.run_id, self.model = event.run_id, event.model
            sizes = ", ".join(f"{c['kind']} of {c['size']:,}" for c in event.contexts) or "none"
            sub = f", sub-model {escape(event.sub_model)}" if event.sub_model else ""
            lines.append(
                (
                    0,
                    f"[bold]recursa[/] run {escape(event.run_id)}: {escape(event.model)}{sub}; "
                    f"context: {escape(sizes)}",
                )
            )
            if event.settings.get("sandbox"):
                lines.append((0, _sandbox_line(str(event.settings["sandbox"]))))
        elif isinstance(event, RLMStarted):
            worker = self._worker(event)
            worker.question = event.question
            if "." in event.rlm:
                parent = self.workers.get(event.rlm.rsplit(".", 1)[0])
                if parent is not None:
                    parent.children += 1
            if event.depth > 0 and plain:
                question = escape(repr(event.question[:80]))
                lines.append((event.depth, f"[cyan]child {event.rlm}[/] started: {question}"))
        elif isinstance(event, TurnStarted):
            worker = self._worker(event)
            worker.turn = event.iteration
            worker.in_code = False
            worker.blocks_done = worker.subs_done = worker.subs_asked = 0
        elif isinstance(event, LMCallStarted):
            worker = self._worker(event)
            if event.purpose in ("root", "extract"):
                worker.asking += 1
                worker.extracting = event.purpose == "extract"
                worker.attempt = event.attempt
                worker.retrying = False
            else:
                worker.subs += 1
        elif isinstance(event, LMCallEnded):
            worker = self._worker(event)
            self.calls += 1
            self.input_tokens += event.input_tokens
            self.output_tokens += event.output_tokens
            self.cost += event.cost_usd
            worker.calls += 1
            worker.turn_calls += 1
            worker.input_tokens += event.input_tokens
            worker.output_tokens += event.output_tokens
            worker.cost += event.cost_usd
            if event.purpose in ("root", "extract"):
                worker.asking = max(0, worker.asking - 1)
                worker.retrying = event.error is not None
                worker.in_code = event.error is None and event.purpose == "root"
            else:
                worker.subs = max(0, worker.subs - 1)
                worker.subs_done += 1
            if event.error:
                lines.append((event.depth, f"[yellow]LM call failed[/]: {escape(event.error)}"))
        elif isinstance(event, BlockExecuted):
            worker = self._worker(event)
            worker.blocks_done += 1
            worker.subs_done = worker.subs_asked = 0
            if event.error or event.restarted:
                first = (event.error or "").strip().splitlines()[-1:] or [""]
                lines.append(
                    (
                        event.depth,
                        f"[red]block {event.iteration}.{event.index} error[/]: "
                        f"{escape(first[0][:200])}",
                    )
                )
        elif isinstance(event, SubQueriesAsked):
            self._worker(event).subs_asked += event.count
        elif isinstance(event, ToolCalled):
            self._worker(event).tools += 1
            self.cost += event.cost_usd
        elif isinstance(event, ControllerNote):
            lines.append((event.depth, f"[yellow]note[/]: {escape(event.message)}"))
        elif isinstance(event, BudgetRefused):
            lines.append((event.depth, f"[yellow]budget[/]: {escape(event.message)}"))
        elif isinstance(event, TurnEnded):
            worker = self._worker(event)
            worker.in_code = False
            if plain:
                lines.append(
                    (
                        event.depth,
                        f"turn {event.iteration}{_who(event)}: {event.blocks} block(s), "
                        f"{worker.turn_calls} call(s) · total {self.calls} calls, "
                        f"{_tokens(self.input_tokens)} in / {_tokens(self.output_tokens)} out, "
                        f"${self.cost:.4f}, {self._elapsed():.1f}s",
                    )
                )
            worker.turn_calls = 0
        elif isinstance(event, RLMEnded):
            worker = self._worker(event)
            worker.status = event.status
            worker.asking = worker.subs = 0
            self.running.discard(event.rlm)
            if "." in event.rlm:
                parent = self.workers.get(event.rlm.rsplit(".", 1)[0])
                if parent is not None:
                    parent.children = max(0, parent.children - 1)
            if event.depth > 0 and plain:
                lines.append(
                    (event.depth, f"[cyan]child {event.rlm}[/] ended: {escape(event.status)}")
                )
        elif isinstance(event, RunEnded):
            self.ended = time.monotonic()
            self.status = event.status
            usage: dict[str, Any] = event.usage or {}
            style = "green" if event.status == "ok" else "yellow"
            by_model = usage.get("by_model")
            cached = sum(
                m["cache_read_tokens"]
                for m in (by_model.values() if isinstance(by_model, dict) else ())
                if isinstance(m, dict) and isinstance(m.get("cache_read_tokens"), int)
            )
            cached_note = f" ({_tokens(cached)} cached)" if cached else ""
            lines.append(
                (
                    0,
                    f"[{style}]{escape(event.status)}[/] after {event.iterations} turn(s): "
                    f"{usage.get('llm_calls', self.calls)} calls, "
                    f"{_tokens(usage.get('input_tokens', self.input_tokens))} in{cached_note} / "
                    f"{_tokens(usage.get('output_tokens', self.output_tokens))} out, "
                    f"${usage.get('cost_usd', self.cost):.4f}, {self._elapsed():.1f}s",
                )
            )
        return lines

    def _elapsed(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    # ---- the live view -----------------------------------------------------------------
    def _start_live(self) -> None:
        self._stop_live()
        self._live = Live(
            get_renderable=self._render,
            console=self.console,
            auto_refresh=self.auto_refresh,
            refresh_per_second=self.refresh_per_second,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()
        if not self._atexit:  # a run that dies without run_end still gives the terminal back
            self._atexit = True
            atexit.register(self._stop_live)

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            with contextlib.suppress(Exception):
                live.stop()

    def _render(self) -> RenderableType:
        with self._lock:
            return self.renderable()

    def renderable(self) -> RenderableType:
        """The live view as it stands: a summary line and a table of RLMs."""
        self.renders += 1
        status = self.status or "running"
        style = "green" if status == "ok" else "cyan" if status == "running" else "yellow"
        head = Text.assemble(
            ("recursa ", "bold"),
            (f"run {self.run_id} ", ""),
            (status, style),
            (
                f" · {self._elapsed():.1f}s · {self.calls} calls · "
                f"{_tokens(self.input_tokens)} in / {_tokens(self.output_tokens)} out · "
                f"${self.cost:.4f} · {len(self.workers)} RLM"
                f"{'s' if len(self.workers) != 1 else ''} ({len(self.running)} running)",
                "",
            ),
        )
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="dim")
        table.add_column("RLM", no_wrap=True)
        table.add_column("turn", justify="right")
        table.add_column("doing", overflow="ellipsis", no_wrap=True, ratio=1)
        table.add_column("calls", justify="right")
        table.add_column("tokens in/out", justify="right", no_wrap=True)
        table.add_column("cost", justify="right")
        shown = self._rows()
        for worker in shown:
            ended = worker.status is not None
            doing_style = (
                "green"
                if worker.status == "ok"
                else "yellow"
                if ended
                else "magenta"
                if worker.asking
                else "cyan"
            )
            table.add_row(
                Text("  " * worker.depth + worker.id, style="dim" if ended else "bold"),
                str(worker.turn),
                Text(worker.doing(), style=doing_style),
                str(worker.calls),
                f"{_tokens(worker.input_tokens)} / {_tokens(worker.output_tokens)}",
                f"${worker.cost:.4f}",
            )
        hidden = len(self.workers) - len(shown)
        parts: list[RenderableType] = [head, table]
        if hidden:
            running = len(self.running) - sum(1 for w in shown if w.status is None)
            parts.append(Text(f"… and {hidden} more RLMs ({running} running)", style="dim"))
        return Group(*parts)

    def _rows(self) -> list[_Worker]:
        """The root, the running RLMs (as many as fit), then the latest ended ones."""
        picked: dict[str, _Worker] = {}
        root = self.workers.get("0")
        if root is not None:
            picked["0"] = root
        for rlm_id in sorted(self.running, key=_id_key):
            if len(picked) >= LIVE_ROWS:
                break
            picked[rlm_id] = self.workers[rlm_id]
        if len(picked) < LIVE_ROWS:
            for worker in reversed(list(self.workers.values())):
                if len(picked) >= LIVE_ROWS:
                    break
                picked.setdefault(worker.id, worker)
        return sorted(picked.values(), key=lambda w: _id_key(w.id))
