"""The HTML page of a run (`recursa view TRACE --out run.html`), drawn from its `RunModel`.

`render_html(events)` is a pure function from events (the dicts of a trace file, or `Event`
objects) to one page: inline CSS and a few lines of inline JS, no network, no external
files. Everything taken from the trace is escaped, since model output is untrusted, and a
Content-Security-Policy lets only the page's own script run, so a reply holding markup
would stay text even if an escape were ever missed.

The page shows the question, the answer, status and usage; a timeline of LM calls and
blocks against time; the run tree; and for each RLM its turns (code, output, sub-queries
folded with prompt and reply, child RLMs), with tokens and cost per RLM and per turn.
Large runs stay usable: sub-queries are folded and only so many are written inline (see
`Limits`); each cut says what was left out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from typing import Any

from .run_model import Block, Call, Node, RunModel, Turn, Usage, as_float, as_int, as_str

__all__ = ["Limits", "render_html"]


SUBS_UNFOLDED = 8
"""A turn with more sub-queries than this shows them in a folded list (a fan-out of 60
would otherwise push the turn's code off the screen)."""


@dataclass(frozen=True)
class Limits:
    """How much of a large run is written into the page; the rest is counted in a note."""

    text_chars: int = 10_000
    """Per prompt, reply, code or output shown inline."""
    subs_per_turn: int = 100
    subs_total: int = 2_000
    rlm_sections: int = 300
    tree_rows: int = 500
    timeline_rlms: int = 60
    timeline_bars: int = 4_000
    timeline_sub_lanes: int = 4
    open_turns_up_to: int = 40
    """Turns start unfolded when the page holds at most this many."""


# ---- formatting ----------------------------------------------------------------------------


def _e(value: Any) -> str:
    return escape(as_str(value), quote=True)


def _num(n: int) -> str:
    return f"{n:,}"


def _short(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def _cost(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 10 else f"${usd:.4f}"


def _secs(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    minutes, rest = divmod(round(s), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{_num(n)} {word if n == 1 else (many or word + 's')}"


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)
    except (TypeError, ValueError):
        return str(value)


def _pre(text: str, limits: Limits, cls: str = "", empty: str = "(empty)") -> str:
    """Escaped text in a <pre>, cut to the inline limit with a note of what was left out."""
    klass = f' class="{cls}"' if cls else ""
    if not text:
        return f'<pre{klass}><span class="dim">{_e(empty)}</span></pre>'
    note = ""
    if len(text) > limits.text_chars:
        left = len(text) - limits.text_chars
        note = f'<p class="note">{_num(left)} more characters not shown (of {_num(len(text))}).</p>'
        text = text[: limits.text_chars]
    return f"<pre{klass}>{_e(text)}</pre>{note}"


def _reached(reply: str | None, answer: str) -> bool:
    """Whether a sub-query's reply is what the answer was made of: the same text, or (for
    texts long enough not to match by chance) one holding the other."""
    text = (reply or "").strip()
    if not text or not answer:
        return False
    if text == answer:
        return True
    return (len(text) >= 8 and text in answer) or (len(answer) >= 8 and answer in text)


def _preview(text: str | None, n: int = 90) -> str:
    flat = " ".join(as_str(text).split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _status_badge(status: str | None) -> str:
    label = status or "incomplete"
    kind = "ok" if label == "ok" else "bad" if label in ("error", "incomplete") else "warn"
    return f'<span class="badge {kind}">{_e(label)}</span>'


def _data(u: Usage, prefix: str = "") -> str:
    """The usage as data attributes, exact, for scripts and tests reading the page."""
    return (
        f'data-{prefix}calls="{u.calls}" data-{prefix}in="{u.input_tokens}" '
        f'data-{prefix}out="{u.output_tokens}" data-{prefix}cost="{u.cost:.10g}"'
    )


def _usage_text(u: Usage) -> str:
    failed = f", {u.failed} failed" if u.failed else ""
    return (
        f"{_plural(u.calls, 'call')}{failed} · {_short(u.input_tokens)} in / "
        f"{_short(u.output_tokens)} out · {_cost(u.cost)}"
    )


# ---- the page ------------------------------------------------------------------------------

_CSS = """
:root{--bg:#f6f7f9;--panel:#fff;--ink:#1d2330;--dim:#6b7385;--line:#dde1e8;--code:#f3f5f8;
--accent:#3056d3;--root:#3056d3;--extract:#7a4fd0;--sub:#2e9d6a;--leaf:#c27c12;--block:#e0922f;
--fail:#d23b3b;--ok:#1d8a4e;--warn:#b7791f;--bad:#c53030}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:20px 24px 60px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px}h4{font-size:13px;margin:12px 0 4px;color:var(--dim)}
code,pre{font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--code);border:1px solid var(--line);border-radius:6px;padding:8px 10px;
margin:4px 0;white-space:pre-wrap;overflow-wrap:anywhere;max-height:420px;overflow:auto}
pre.answer{font-size:14px;background:#eef7f1;border-color:#bfe3cc;max-height:none}
pre.answer.none{background:var(--code);border-color:var(--line)}
pre.output{background:#fbfbf4}pre.error{background:#fdf0f0;border-color:#f1c4c4;color:#8a1f1f}
pre.code{background:#f1f4fb;border-color:#d3dbef}
section.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;
padding:16px 18px;margin:14px 0;box-shadow:0 1px 2px rgba(20,30,60,.04)}
.dim{color:var(--dim)}.note{color:var(--warn);font-size:12.5px;margin:6px 0}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:600;
vertical-align:middle;color:#fff;background:var(--dim)}
.badge.ok{background:var(--ok)}.badge.warn{background:var(--warn)}.badge.bad{background:var(--bad)}
.tag{display:inline-block;padding:0 6px;border-radius:4px;font-size:11.5px;margin-left:4px;
background:#eef1f6;color:var(--dim);border:1px solid var(--line)}
.tag.final{background:#e6f5ec;color:var(--ok);border-color:#bfe3cc}
.tag.err{background:#fdecec;color:var(--fail);border-color:#f1c4c4}
dl.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;
margin:12px 0 0}
dl.stats div{background:var(--code);border-radius:8px;padding:8px 10px}
dl.stats dt{font-size:11.5px;color:var(--dim);text-transform:uppercase;letter-spacing:.04em}
dl.stats dd{margin:2px 0 0;font-size:15px;font-weight:600;overflow-wrap:anywhere}
details>summary{cursor:pointer}
details.fold>summary{color:var(--dim);font-size:12.5px;margin:6px 0}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.toolbar{float:right}.toolbar button{font:inherit;font-size:12px;padding:3px 10px;margin-left:6px;
border:1px solid var(--line);border-radius:6px;background:var(--panel);cursor:pointer}
ul.tree{list-style:none;margin:0;padding:0}
ul.tree ul{list-style:none;margin:0;padding-left:20px;border-left:1px dashed var(--line)}
ul.tree li{margin:3px 0}
ul.tree .q{color:var(--dim)}
section.rlm{border-left:4px solid var(--accent);margin-left:calc(var(--depth,0)*22px)}
section.rlm.d1{border-left-color:var(--extract)}section.rlm.d2{border-left-color:var(--sub)}
section.rlm.d3{border-left-color:var(--leaf)}
.rlmhead{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:baseline}
.rlmhead h2{margin:0}
details.turn{border:1px solid var(--line);border-radius:8px;margin:8px 0;background:#fcfcfd}
details.turn>summary{padding:7px 10px;font-weight:600;list-style-position:inside}
details.turn>summary .meta{font-weight:400;color:var(--dim);margin-left:8px}
details.turn>.body{padding:0 12px 10px}
details.turn.extract{border-style:dashed}
.block{margin:8px 0 12px}.block .label{font-size:12px;color:var(--dim)}
details.sub{border:1px solid var(--line);border-radius:6px;margin:4px 0;background:var(--panel)}
details.sub>summary{padding:4px 8px;font-size:12.5px;white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}
details.sub>summary .preview{color:var(--dim)}
details.sub[open]>summary{white-space:normal}
details.sub>.body{padding:0 10px 8px}
details.sub.failed>summary{color:var(--fail)}
h5{font-size:11.5px;text-transform:uppercase;letter-spacing:.04em;color:var(--dim);margin:8px 0 2px}
.timeline{position:relative}
.tl-row{display:grid;grid-template-columns:150px 1fr;align-items:center;min-height:16px}
.tl-label{font-size:11.5px;color:var(--dim);white-space:nowrap;overflow:hidden;
text-overflow:ellipsis;padding-right:8px}
.tl-label b{color:var(--ink);font-weight:600}
.tl-track{position:relative;height:12px;border-bottom:1px solid #eef0f4}
.tl-track.sub{height:7px;border-bottom:none}
.bar{position:absolute;top:1px;bottom:1px;min-width:2px;border-radius:2px;opacity:.9}
.bar.root{background:var(--root)}.bar.extract{background:var(--extract)}
.bar.sub{background:var(--sub);opacity:.55}.bar.leaf{background:var(--leaf);opacity:.6}
.bar.exec{background:var(--block)}.bar.failed{background:var(--fail)}
.bar.rlm{background:#dfe5f3;top:3px;bottom:3px}
.tl-axis{position:relative;height:18px;font-size:11px;color:var(--dim)}
.tl-axis span{position:absolute;transform:translateX(-50%);white-space:nowrap}
.tl-axis span.end{transform:translateX(-100%)}
.legend{font-size:12px;color:var(--dim);margin-top:8px}
.legend i{display:inline-block;width:12px;height:9px;border-radius:2px;margin:0 4px 0 12px;
vertical-align:middle}
"""

_JS = """
document.addEventListener('click', function (ev) {
  var b = ev.target.closest('button[data-fold]');
  if (b) {
    var open = b.getAttribute('data-fold') === 'open';
    var sel = b.getAttribute('data-sel');
    document.querySelectorAll(sel).forEach(function (d) { d.open = open; });
    return;
  }
  var a = ev.target.closest('a[href^="#rlm-"]');
  if (a) {
    var el = document.getElementById(a.getAttribute('href').slice(1));
    if (el) { el.querySelectorAll('details.turn').forEach(function (d) { d.open = true; }); }
  }
});
"""

_JS_HASH = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src 'sha256-{_JS_HASH}'; base-uri 'none'; form-action 'none'"
)


class _Page:
    def __init__(self, run: RunModel, limits: Limits) -> None:
        self.m = run
        self.limits = limits
        self.subs_written = 0
        self.subs_skipped = 0
        self.order = run.order()
        turns = sum(len(n.turns) for n in self.order[: limits.rlm_sections])
        self.open_turns = turns <= limits.open_turns_up_to

    # -- header --------------------------------------------------------------------------
    def header(self) -> str:
        m = self.m
        run, end = m.run, m.end or {}
        root = m.nodes.get("0")
        question = as_str(run.get("question")) or (root.question if root else "")
        status = as_str(end.get("status")) if m.end else None
        answer = end.get("answer") if m.end else (root.answer if root else None)
        run_id = as_str(run.get("run_id") or end.get("run_id"))
        usage = end.get("usage") if isinstance(end.get("usage"), dict) else None
        totals = Usage()
        for node in m.nodes.values():
            totals.add(node.own)
        calls = as_int(usage.get("llm_calls")) if usage else totals.calls
        inp = as_int(usage.get("input_tokens")) if usage else totals.input_tokens
        out = as_int(usage.get("output_tokens")) if usage else totals.output_tokens
        cost = as_float(usage.get("cost_usd")) if usage else totals.cost
        iterations = as_int(end.get("iterations")) if m.end else (root.iterations if root else 0)
        subs = sum(1 for c in m.calls if c.purpose in ("sub", "leaf"))
        contexts = listed if isinstance(listed := run.get("contexts"), list) else []
        ctx = ", ".join(
            f"{as_str(c.get('kind'))} of {_num(as_int(c.get('size')))}"
            for c in contexts
            if isinstance(c, dict)
        )
        stats = [
            ("Status", _status_badge(status)),
            ("Turns (root)", _e(_num(iterations))),
            ("LM calls", _e(_num(calls))),
            ("Sub-queries", _e(_num(subs))),
            ("RLMs", _e(_num(len(m.nodes)))),
            ("Input tokens", _e(_num(inp))),
            ("Output tokens", _e(_num(out))),
            ("Cost", _e(_cost(cost))),
            ("Duration", _e(_secs(m.t_end))),
            ("Model", f"<code>{_e(run.get('model'))}</code>"),
        ]
        if run.get("sub_model"):
            stats.append(("Sub-model", f"<code>{_e(run.get('sub_model'))}</code>"))
        if run.get("profile"):
            stats.append(("Profile", f"<code>{_e(as_str(run.get('profile')))}</code>"))
        if ctx:
            stats.append(("Context", _e(ctx)))
        stat_html = "".join(
            f'<div data-stat="{_e(k)}"><dt>{_e(k)}</dt><dd>{v}</dd></div>' for k, v in stats
        )
        error = ""
        if m.end and end.get("error"):
            error = f"<h3>Error</h3>{_pre(as_str(end.get('error')), self.limits, 'error')}"
        elif not m.end:
            error = (
                '<p class="note">The trace has no run_end event: the run was cut short or is '
                "still going; this page shows what was recorded.</p>"
            )
        extra = []
        if run.get("settings"):
            extra.append(
                '<details class="fold"><summary>Settings</summary>'
                f"{_pre(_value_text(run.get('settings')), self.limits)}</details>"
            )
        if usage:
            extra.append(
                '<details class="fold"><summary>Usage as reported by the run</summary>'
                f"{_pre(_value_text(usage), self.limits)}</details>"
            )
        if run.get("system_prompt"):
            extra.append(
                '<details class="fold"><summary>System prompt (template)</summary>'
                f"{_pre(as_str(run.get('system_prompt')), self.limits)}</details>"
            )
        notes = "".join(
            f'<p class="note" data-note="{_e(kind)}">{_e(message)}</p>'
            for kind, message in m.notes[:50]
        )
        if m.context_data:
            extra.append(
                '<p class="dim">The trace holds the full text of '
                f"{_plural(m.context_data, 'context')} (not shown here).</p>"
            )
        if m.unknown_types:
            names = ", ".join(sorted(m.unknown_types))
            extra.append(f'<p class="dim">Events of types not shown: {_e(names)}.</p>')
        return (
            '<section class="panel" id="summary">'
            f"<h1>recursa run <code>{_e(run_id or '?')}</code></h1>"
            f'<p class="dim">{_num(m.event_count)} events</p>'
            f'<h3>Question</h3><pre id="question">{_e(question) or "(none)"}</pre>'
            f"<h3>Answer</h3>{self._answer(answer)}"
            f"{error}{notes}"
            f'<dl class="stats">{stat_html}</dl>'
            f"{''.join(extra)}</section>"
        )

    def _answer(self, answer: Any) -> str:
        if answer is None:
            return '<pre id="answer" class="answer none"><span class="dim">(no answer)</span></pre>'
        text = _value_text(answer)
        limit = max(self.limits.text_chars, 100_000)
        note = ""
        if len(text) > limit:
            note = f'<p class="note">{_num(len(text) - limit)} more characters not shown.</p>'
            text = text[:limit]
        return f'<pre id="answer" class="answer">{_e(text)}</pre>{note}'

    # -- timeline ------------------------------------------------------------------------
    def timeline(self) -> str:
        m, lim = self.m, self.limits
        span = max(m.t_end, 1e-6)

        def pos(t0: float, t1: float) -> str:
            left = min(max(t0 / span, 0.0), 1.0) * 100
            width = max(min(t1, span) - t0, 0.0) / span * 100
            return f"left:{left:.3f}%;width:{width:.3f}%"

        by_rlm: dict[str, list[Call]] = {}
        for call in m.calls:
            by_rlm.setdefault(call.rlm, []).append(call)
        blocks: dict[str, list[Block]] = {}
        for rlm_id, block in m.blocks:
            blocks.setdefault(rlm_id, []).append(block)
        shown = self.order[: lim.timeline_rlms]
        # Turn calls and blocks are drawn first; sub-queries share what the cap leaves,
        # one in every `stride` when there are too many, so the whole run stays covered.
        mains = sum(
            1 for n in shown for c in by_rlm.get(n.id, []) if c.purpose in ("root", "extract")
        ) + sum(len(blocks.get(n.id, [])) for n in shown)
        sub_total = sum(
            1 for n in shown for c in by_rlm.get(n.id, []) if c.purpose not in ("root", "extract")
        )
        room = max(0, lim.timeline_bars - mains)
        stride = 0 if room == 0 else max(1, math.ceil(sub_total / room)) if sub_total else 1
        rows: list[str] = []
        bars = 0
        dropped_main = 0
        dropped_subs = 0
        for node in shown:
            own = by_rlm.get(node.id, [])
            main_bars = [f'<span class="bar rlm" style="{pos(node.t0, node.t1 or span)}"></span>']
            for call in own:
                if call.purpose not in ("root", "extract"):
                    continue
                if bars >= lim.timeline_bars:
                    dropped_main += 1
                    continue
                bars += 1
                main_bars.append(self._bar(call, pos(call.t0, call.t1 or span)))
            for block in blocks.get(node.id, []):
                if bars >= lim.timeline_bars:
                    dropped_main += 1
                    continue
                bars += 1
                title = f"block {block.iteration}.{block.index} · {_secs(block.t1 - block.t0)}"
                if block.error:
                    title += " · error"
                main_bars.append(
                    f'<span class="bar exec" style="{pos(block.t0, block.t1)}" '
                    f'title="{_e(title)}"></span>'
                )
            label = (
                f'<a href="#rlm-{_e(node.id)}"><b>{_e(node.id)}</b></a>'
                f" {'root' if node.id == '0' else 'depth ' + str(node.depth)}"
            )
            rows.append(
                f'<div class="tl-row" data-rlm="{_e(node.id)}"><div class="tl-label">{label}</div>'
                f'<div class="tl-track">{"".join(main_bars)}</div></div>'
            )
            subs = [c for c in own if c.purpose not in ("root", "extract")]
            lanes: list[list[str]] = []
            ends: list[float] = []
            for index, call in enumerate(subs):
                if stride == 0 or index % stride or bars >= lim.timeline_bars:
                    dropped_subs += 1
                    continue
                bars += 1
                t1 = call.t1 if call.t1 is not None else span
                lane = next((i for i, end in enumerate(ends) if end <= call.t0), None)
                if lane is None and len(lanes) < lim.timeline_sub_lanes:
                    lanes.append([])
                    ends.append(t1)
                    lane = len(lanes) - 1
                elif lane is None:
                    lane = min(range(len(ends)), key=ends.__getitem__)
                ends[lane] = max(ends[lane], t1)
                lanes[lane].append(self._bar(call, pos(call.t0, t1)))
            for i, lane_bars in enumerate(lanes):
                label = f"sub-queries: {_num(len(subs))}" if i == 0 else ""
                rows.append(
                    f'<div class="tl-row"><div class="tl-label">{_e(label)}</div>'
                    f'<div class="tl-track sub">{"".join(lane_bars)}</div></div>'
                )
        ticks = []
        step = _nice_step(span / 6)
        k = 0
        while k * step <= span * 1.0001 and k < 50:
            t = k * step
            edge = ' class="end"' if t / span > 0.97 else ""
            ticks.append(f'<span{edge} style="left:{t / span * 100:.3f}%">{_e(_tick(t))}</span>')
            k += 1
        notes = []
        if len(self.order) > len(shown):
            notes.append(f"{_num(len(self.order) - len(shown))} more RLMs not drawn.")
        if dropped_subs:
            notes.append(
                f"Sub-queries drawn: {_num(sub_total - dropped_subs)} of {_num(sub_total)}"
                + (f" (one in every {stride})." if stride > 1 else ".")
            )
        if dropped_main:
            notes.append(f"{_num(dropped_main)} more turn calls and blocks not drawn.")
        note = f'<p class="note">{" ".join(notes)}</p>' if notes else ""
        legend = (
            '<div class="legend">'
            '<i style="background:var(--root)"></i>root turn call'
            '<i style="background:var(--extract)"></i>extraction'
            '<i style="background:var(--block)"></i>code block'
            '<i style="background:var(--sub)"></i>sub-query'
            '<i style="background:var(--leaf)"></i>leaf rlm_query'
            '<i style="background:var(--fail)"></i>failed attempt'
            '<i style="background:#dfe5f3"></i>RLM alive</div>'
        )
        return (
            '<section class="panel" id="timeline"><h2>Timeline</h2>'
            f'<div class="timeline">{"".join(rows)}'
            f'<div class="tl-row"><div></div><div class="tl-axis">{"".join(ticks)}</div></div>'
            f"</div>{legend}{note}</section>"
        )

    def _bar(self, call: Call, style: str) -> str:
        kind = "failed" if call.error else call.purpose
        took = _secs(call.t1 - call.t0) if call.t1 is not None else "unfinished"
        title = f"#{as_str(call.call_id)} {call.purpose} · {call.model} · {took}"
        if call.t1 is not None and not call.error:
            title += f" · {_num(call.input_tokens)} in / {_num(call.output_tokens)} out"
        if call.error:
            title += f" · {_preview(call.error, 120)}"
        return f'<span class="bar {_e(kind)}" style="{style}" title="{_e(title)}"></span>'

    # -- the tree overview ----------------------------------------------------------------
    def tree(self) -> str:
        lim = self.limits
        items: list[str] = []
        before = -1
        shown = self.order[: lim.tree_rows]
        for node in shown:
            level = self.m.level.get(node.id, 0)
            if before < 0:
                items.append("<li>")
            elif level > before:  # depth first: one level down at most
                items.append("<ul><li>")
            else:
                items.append("</li>" + "</ul></li>" * (before - level) + "<li>")
            before = level
            items.append(
                f'<a href="#rlm-{_e(node.id)}"><b>{_e(node.id)}</b></a> '
                f"{_status_badge(node.status)} "
                f'<span class="q">{_e(_preview(node.question, 100))}</span> '
                f'<span class="dim">· {_plural(len(node.turns), "turn")} · '
                f"{_e(_usage_text(node.tree))}"
                f"{' (with children)' if node.children else ''}</span>"
            )
        if before >= 0:
            items.append("</li>" + "</ul></li>" * before)
        note = ""
        if len(self.order) > len(shown):
            note = f'<p class="note">{_num(len(self.order) - len(shown))} more RLMs not listed.</p>'
        return (
            f'<section class="panel" id="tree"><h2>Run tree · {_plural(len(self.order), "RLM")}'
            f'</h2><ul class="tree">{"".join(items)}</ul>{note}</section>'
        )

    # -- one RLM -------------------------------------------------------------------------
    def rlm(self, node: Node) -> str:
        parent = ""
        if node.parent:
            parent = f'child of <a href="#rlm-{_e(node.parent)}">{_e(node.parent)}</a> · '
        took = _secs((node.t1 if node.t1 is not None else self.m.t_end) - node.t0)
        real_turns = [t for t in node.turns if not t.extract]
        head = (
            f'<div class="rlmhead"><h2>RLM {_e(node.id)}</h2>{_status_badge(node.status)}'
            f'<span class="dim">{parent}depth {node.depth} · <code>{_e(node.model)}</code> · '
            f"{_plural(len(real_turns), 'turn')} · {_e(took)}</span></div>"
            f'<p class="dim">Own: {_e(_usage_text(node.own))}'
        )
        if node.children:
            head += f" · with {_plural(len(node.children), 'child', 'children')}: "
            head += _e(_usage_text(node.tree))
        head += "</p>"
        question = (
            f'<details class="fold" open><summary>Question</summary>'
            f"{_pre(node.question, self.limits)}</details>"
            if node.id != "0" or not self.m.run.get("question")
            else ""
        )
        turns = [self.turn(node, turn) for turn in node.turns]
        if node.loose is not None:
            turns.append(self.turn(node, node.loose, loose=True))
        answer = ""
        if node.answer is not None or node.error:
            source = f" (from {_e(node.final_source)})" if node.final_source else ""
            answer = f"<h3>Answer{source}</h3>"
            if node.answer is not None:
                answer += _pre(_value_text(node.answer), self.limits, "answer")
            if node.error:
                answer += _pre(node.error, self.limits, "error")
        depth_cls = f" d{min(node.depth, 3)}" if node.depth else ""
        return (
            f'<section class="panel rlm{depth_cls}" id="rlm-{_e(node.id)}" '
            f'data-rlm="{_e(node.id)}" {_data(node.own, "own-")} {_data(node.tree, "tree-")} '
            f'style="--depth:{min(max(node.depth, 0), 8)}">'
            f'{head}{question}<div class="turns">{"".join(turns)}</div>{answer}</section>'
        )

    def turn(self, node: Node, turn: Turn, loose: bool = False) -> str:
        lim = self.limits
        usage = Usage()
        for call in turn.all_calls():
            usage.add_call(call)
        for tool in turn.tools:
            usage.add_tool(tool)
        end = turn.t1
        if end is None:
            ends = [c.t1 for c in turn.all_calls() if c.t1 is not None]
            ends += [b.t1 for b in turn.blocks]
            end = max(ends, default=None)
        took = _secs(end - turn.t0) if end is not None else "unfinished"
        tags = []
        if turn.final:
            tags.append('<span class="tag final">FINAL</span>')
        if any(b.error for b in turn.blocks):
            tags.append('<span class="tag err">error</span>')
        if turn.refusals:
            tags.append('<span class="tag err">budget</span>')
        if turn.subs:
            tags.append(
                f'<span class="tag">{_plural(len(turn.subs), "sub-query", "sub-queries")}</span>'
            )
        if turn.tools:
            tags.append(f'<span class="tag">{_plural(len(turn.tools), "tool call")}</span>')
        if turn.children:
            tags.append(f'<span class="tag">{_plural(len(turn.children), "child RLM")}</span>')
        if loose:
            title, cls = "Outside any turn", "turn loose"
        elif turn.extract:
            title, cls = "Extraction (out of turns: last request for an answer)", "extract"
        else:
            title, cls = f"Turn {turn.iteration}", "turn"
        meta = f"{_plural(len(turn.blocks), 'block')} · {_e(_usage_text(usage))} · {_e(took)}"
        parts: list[str] = []
        for call in turn.calls:
            label = "Model reply" if call.purpose == "root" else "Extraction reply"
            attempt = f" (attempt {call.attempt})" if call.attempt > 1 else ""
            if call.error:
                parts.append(f"<h4>{label}{attempt}: failed</h4>{_pre(call.error, lim, 'error')}")
            elif call.t1 is None:
                parts.append(f"<h4>{label}{attempt}: no reply recorded</h4>")
            else:
                fold_open = " open" if not turn.blocks else ""
                parts.append(
                    f'<details class="fold reply"{fold_open}><summary>{label}{attempt} · '
                    f"{_num(call.input_tokens)} in / {_num(call.output_tokens)} out · "
                    f"{_e(_cost(call.cost))}</summary>{_pre(call.text or '', lim)}</details>"
                )
        for block in turn.blocks:
            new = f" · new: {', '.join(block.new_vars)}" if block.new_vars else ""
            parts.append(
                f'<div class="block"><div class="label">block {block.iteration}.{block.index}'
                f" · {_e(_secs(block.t1 - block.t0))}{_e(new)}</div>"
                f"{_pre(block.code, lim, 'code')}"
                f"{_pre(block.output, lim, 'output', '(no output)')}"
                + (_pre(block.error, lim, "error") if block.error else "")
                + (f'<p class="note">{_e(block.restarted)}</p>' if block.restarted else "")
                + "</div>"
            )
        if turn.subs:
            parts.append(self.subs(turn, node))
        if turn.children:
            links = []
            for child_id in turn.children:
                child = self.m.nodes.get(child_id)
                status = _status_badge(child.status if child else None)
                ans = _preview(_value_text(child.answer) if child else "", 80)
                links.append(
                    f'<li><a href="#rlm-{_e(child_id)}">RLM {_e(child_id)}</a> {status} '
                    f'<span class="dim">{_e(ans)}</span></li>'
                )
            parts.append(f"<h4>Child RLMs</h4><ul>{''.join(links)}</ul>")
        if turn.tools:
            parts.append(self.tools(turn))
        for c in turn.compactions:
            parts.append(
                f'<p class="note">Older turns compacted into a summary: '
                f"{_num(as_int(c.get('tokens_before')))} → {_num(as_int(c.get('tokens_after')))} "
                f"tokens (window {_num(as_int(c.get('window')))}).</p>"
            )
        for refusal in turn.refusals:
            parts.append(
                f'<p class="note">Budget refused a {_e(refusal.get("purpose"))} call: '
                f"{_e(refusal.get('message'))}</p>"
            )
        if turn.observation:
            parts.append(
                '<details class="fold"><summary>What the model was told next</summary>'
                f"{_pre(turn.observation, lim)}</details>"
            )
        fold = " open" if self.open_turns else ""
        return (
            f'<details class="{cls}" data-rlm="{_e(node.id)}" data-turn="{turn.iteration}" '
            f"{_data(usage)}{fold}><summary>{_e(title)}{''.join(tags)}"
            f'<span class="meta">{meta}</span></summary>'
            f'<div class="body">{"".join(parts)}</div></details>'
        )

    def tools(self, turn: Turn) -> str:
        lim = self.limits
        items = []
        for tool in turn.tools[: lim.subs_per_turn]:
            error = tool.get("error")
            meta = f"{_secs(as_float(tool.get('elapsed_s')))}"
            if as_float(tool.get("cost_usd")):
                meta += f" · {_cost(as_float(tool.get('cost_usd')))}"
            result = (
                _pre(as_str(error), lim, "error")
                if error
                else _pre(as_str(tool.get("result")), lim, "reply", "(no result)")
            )
            items.append(
                f'<details class="sub{" failed" if error else ""}"><summary><b>'
                f"{_e(tool.get('name'))}</b> · {_e(meta)} · "
                f'<span class="preview">{_e(_preview(as_str(tool.get("arguments"))))}</span>'
                f'</summary><div class="body"><h5>Arguments</h5>'
                f"{_pre(as_str(tool.get('arguments')), lim)}"
                f"<h5>{'Error' if error else 'Result'}</h5>{result}</div></details>"
            )
        left = len(turn.tools) - len(items)
        note = f'<p class="note">{_num(left)} more tool calls not shown.</p>' if left else ""
        return f"<h4>Tool calls ({_num(len(turn.tools))})</h4>{''.join(items)}{note}"

    def subs(self, turn: Turn, node: Node) -> str:
        """A turn's sub-queries, each folded; the list itself folded beyond a handful. The
        one whose reply became the RLM's answer is tagged, so the path to FINAL shows."""
        lim = self.limits
        answer = _value_text(node.answer).strip() if node.answer is not None else ""
        room = max(0, min(lim.subs_per_turn, lim.subs_total - self.subs_written))
        shown = turn.subs[:room]
        self.subs_written += len(shown)
        left = len(turn.subs) - len(shown)
        self.subs_skipped += left
        items = []
        finals = 0
        for call in shown:
            failed = " failed" if call.error else ""
            attempt = f" · attempt {call.attempt}" if call.attempt > 1 else ""
            if call.t1 is None:
                meta = "unfinished"
            else:
                meta = (
                    f"{_num(call.input_tokens)} in / {_num(call.output_tokens)} out · "
                    f"{_cost(call.cost)} · "
                    f"{_secs(call.latency if call.latency is not None else call.t1 - call.t0)}"
                )
            reply = (
                _pre(call.error, lim, "error")
                if call.error
                else _pre(call.text or "", lim, "reply")
            )
            final = ""
            if not call.error and _reached(call.text, answer):
                final = '<span class="tag final">reached FINAL</span> '
                finals += 1
            items.append(
                f'<details class="sub{failed}" data-call="{_e(call.call_id)}">'
                f"<summary>{final}<b>#{_e(call.call_id)}</b> {_e(call.purpose)}{_e(attempt)} · "
                f"<code>{_e(call.model)}</code> · {_e(meta)} · "
                f'<span class="preview">{_e(_preview(call.prompt))}</span></summary>'
                f'<div class="body"><h5>Prompt</h5>'
                f"{_pre(call.prompt or '', lim, 'prompt', '(prompt not recorded)')}"
                f"<h5>{'Error' if call.error else 'Reply'}</h5>{reply}</div></details>"
            )
        note = ""
        if left:
            rest = Usage()
            for call in turn.subs[len(shown) :]:
                rest.add_call(call)
            note = (
                f'<p class="note">{_plural(left, "more sub-query", "more sub-queries")} '
                f"not shown ({_e(_usage_text(rest))}); the trace file holds them all.</p>"
            )
        listed = f'<div class="subs">{"".join(items)}</div>{note}'
        title = f"Sub-queries ({_num(len(turn.subs))})"
        if len(turn.subs) <= SUBS_UNFOLDED:
            return f"<h4>{title}</h4>{listed}"
        reached = f" · {_num(finals)} reached FINAL" if finals else ""
        return (
            f'<details class="fold subs-list"><summary>{title}{reached}</summary>{listed}</details>'
        )

    def page(self) -> str:
        lim = self.limits
        sections = [self.rlm(node) for node in self.order[: lim.rlm_sections]]
        more = ""
        if len(self.order) > lim.rlm_sections:
            more = (
                f'<p class="note">{_num(len(self.order) - lim.rlm_sections)} more RLMs not '
                "shown in detail (they are in the run tree above).</p>"
            )
        run_id = as_str(self.m.run.get("run_id") or (self.m.end or {}).get("run_id"))
        question = _preview(as_str(self.m.run.get("question")), 80)
        toolbar = (
            '<div class="toolbar">'
            '<button type="button" data-fold="open" data-sel="details.turn">Open turns</button>'
            '<button type="button" data-fold="close" data-sel="details.turn">Fold turns'
            "</button>"
            '<button type="button" data-fold="close" data-sel="details.sub">Fold sub-queries'
            "</button></div>"
        )
        body = (
            self.header()
            + self.timeline()
            + self.tree()
            + f'<div id="rlms">{toolbar}<h2 style="margin-top:22px">RLMs</h2>'
            + "".join(sections)
            + more
            + "</div>"
        )
        if self.subs_skipped:
            body += (
                f'<p class="note">In all, {_num(self.subs_skipped)} sub-queries were left out '
                f"of this page to keep it usable ({_num(self.subs_written)} shown).</p>"
            )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>recursa run {_e(run_id)}: {_e(question)}</title>"
            f"<style>{_CSS}</style></head><body><main>{body}</main>"
            f"<script>{_JS}</script></body></html>\n"
        )


def _tick(t: float) -> str:
    """A compact time for the timeline's axis (a trace's times are untrusted: any float)."""
    if not math.isfinite(t):
        return "?"
    if t < 10 or t >= 1e9:
        return f"{t:.3g}s"
    if t < 60:
        return f"{t:.0f}s"
    minutes, rest = divmod(round(t), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    exp = math.floor(math.log10(raw))
    base = raw / 10**exp
    nice = 1 if base <= 1 else 2 if base <= 2 else 5 if base <= 5 else 10
    return float(nice * 10**exp)


def render_html(events: Iterable[Any], *, limits: Limits | None = None) -> str:
    """One self-contained HTML page showing the run recorded by `events`."""
    return _Page(RunModel(events), limits or Limits()).page()
