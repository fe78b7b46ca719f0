"""The HTML viewer: `render_html(events)` and `recursa view TRACE --out FILE`."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e_helpers import run_cli
from recursa.cli import dispatch
from recursa.testing import FakeLMServer
from recursa.trace.page import _tick
from recursa.trace.reader import read_trace
from recursa.trace.viewer import Limits, load_trace, render_html
from run_samples import (
    ANSWER,
    CHILD_QUESTION,
    FAN_OUT,
    HOSTILE,
    QUESTION,
    SUB_REPLY,
    record_run,
    scripted_model,
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One real scripted run (fan-out and a child RLM), its trace file and its result."""
    trace = tmp_path_factory.mktemp("viewer") / "run.jsonl"
    with FakeLMServer(scripted_model()) as server:
        result = record_run(server, trace)
    assert server.errors == []
    return trace, result


@pytest.fixture(scope="module")
def page(recorded: tuple[Path, Any]) -> str:
    return render_html(load_trace(recorded[0]))


class _Tags(HTMLParser):
    """Collects start tags and the page's text, the way a browser tokenises it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def with_attr(tags: _Tags, tag: str, **attrs: str) -> list[dict[str, str | None]]:
    return [
        a
        for t, a in tags.tags
        if t == tag and all(a.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())
    ]


# ---- events built by hand ----------------------------------------------------------------


class Trace:
    """Builds a plausible event list with a moving clock."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.t = 0.0
        self.call_id = 0

    def add(self, type_: str, rlm: str = "0", **fields: Any) -> dict[str, Any]:
        self.t += 0.01
        event = {"type": type_, "run_id": "r1", "t": round(self.t, 6), "rlm": rlm}
        event["depth"] = rlm.count(".")
        event.update(fields)
        self.events.append(event)
        return event

    def call(self, rlm: str, purpose: str, prompt: str | None = None, **end: Any) -> None:
        self.call_id += 1
        self.add("lm_call_start", rlm, call_id=self.call_id, model="m", purpose=purpose,
                 prompt=prompt)  # fmt: skip
        fields = {"text": "ok", "input_tokens": 10, "output_tokens": 2, "cost_usd": 0.001}
        fields.update(end)
        self.add("lm_call_end", rlm, call_id=self.call_id, model="m", purpose=purpose, **fields)

    def start(self, question: str = "q?") -> None:
        self.add("run_start", question=question, model="m", sub_model=None, settings={},
                 contexts=[], system_prompt="sys")  # fmt: skip
        self.add("rlm_start", question=question, model="m", first_message="first")

    def end(self, answer: Any = "done", status: str = "ok", iterations: int = 1) -> None:
        self.add("rlm_end", status=status, answer=answer, iterations=iterations)
        usage = {"llm_calls": self.call_id, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0}
        self.add("run_end", status=status, answer=answer, iterations=iterations, usage=usage)


# ---- a real run -----------------------------------------------------------------------------


def test_page_shows_question_answer_status_and_usage_of_the_run(
    page: str, recorded: tuple[Path, Any]
) -> None:
    _, result = recorded
    tags = parse(page)
    text = "".join(tags.text)

    assert QUESTION in text
    assert ANSWER in text
    stats = re.findall(r'data-stat="([^"]+)"><dt>[^<]*</dt><dd>(.*?)</dd>', page)
    shown = {k: re.sub(r"<[^>]+>", "", v) for k, v in stats}
    assert shown["Status"] == "ok"
    assert shown["Turns (root)"] == "3"
    assert shown["LM calls"] == f"{result.usage['llm_calls']:,}"
    assert shown["Input tokens"] == f"{result.usage['input_tokens']:,}"
    assert shown["Output tokens"] == f"{result.usage['output_tokens']:,}"
    assert shown["Cost"] == f"${result.usage['cost_usd']:.4f}"
    assert shown["Sub-queries"] == str(FAN_OUT + 1)
    assert shown["RLMs"] == "2"


def test_page_lists_each_rlm_with_its_turns_and_links_the_child_from_its_parent_turn(
    page: str,
) -> None:
    tags = parse(page)

    assert len(with_attr(tags, "details", class_="turn", data_rlm="0")) == 3
    assert len(with_attr(tags, "details", class_="turn", data_rlm="0.0")) == 2
    assert [a["data-rlm"] for a in with_attr(tags, "section") if a.get("data-rlm")] == [
        "0",
        "0.0",
    ]
    turn_2 = page.split('data-rlm="0" data-turn="2"')[1].split('data-turn="3"')[0]
    assert 'href="#rlm-0.0"' in turn_2
    assert CHILD_QUESTION in "".join(tags.text)


def test_sub_queries_are_folded_with_prompt_and_reply_under_the_turn_that_made_them(
    page: str,
) -> None:
    tags = parse(page)
    subs = with_attr(tags, "details", class_="sub")

    assert len(subs) == FAN_OUT + 1
    assert all("open" not in a for a in subs)
    turn_1 = page.split('data-rlm="0" data-turn="1"')[1].split('data-turn="2"')[0]
    assert turn_1.count('<details class="sub"') == FAN_OUT
    assert html.escape("Summarise: the door is painted blue") in turn_1
    assert html.escape(SUB_REPLY) in turn_1


def test_tokens_and_cost_per_rlm_and_turn_add_up_to_the_run_usage(
    page: str, recorded: tuple[Path, Any]
) -> None:
    trace, result = recorded
    tags = parse(page)
    ends = [e for e in read_trace(trace) if e["type"] == "lm_call_end"]
    turns = with_attr(tags, "details", class_="turn")
    root, child = (
        with_attr(tags, "section", class_="panel rlm"),
        with_attr(tags, "section", class_="panel rlm d1"),
    )

    assert sum(int(t["data-in"] or 0) for t in turns) == result.usage["input_tokens"]
    assert sum(int(t["data-out"] or 0) for t in turns) == result.usage["output_tokens"]
    assert sum(float(t["data-cost"] or 0) for t in turns) == pytest.approx(result.usage["cost_usd"])
    child_in = sum(e["input_tokens"] for e in ends if e["rlm"] == "0.0")
    assert int(child[0]["data-own-in"] or 0) == child_in
    assert int(root[0]["data-tree-in"] or 0) == result.usage["input_tokens"]
    assert int(root[0]["data-own-in"] or 0) == result.usage["input_tokens"] - child_in
    assert result.usage["cost_usd"] > 0


def test_markup_in_model_output_stays_text_and_only_the_pages_own_script_exists(
    page: str,
) -> None:
    tags = parse(page)

    assert HOSTILE not in page
    assert html.escape(HOSTILE) in page
    assert [t for t, _ in tags.tags].count("script") == 1
    assert HOSTILE in "".join(tags.text)
    assert "<b>bold?</b>" in "".join(tags.text)  # a sub-query's markup is text too


def test_page_is_self_contained_and_its_policy_allows_no_network(page: str) -> None:
    tags = parse(page)

    for tag, attrs in tags.tags:
        assert tag not in ("link", "img", "iframe", "object", "embed"), tag
        assert "src" not in attrs, (tag, attrs)
    assert "@import" not in page
    assert "url(" not in page
    assert not re.search(r"https?://", page)
    policy = with_attr(tags, "meta", http_equiv="Content-Security-Policy")[0]["content"] or ""
    assert "default-src 'none'" in policy
    assert "script-src 'sha256-" in policy


def test_timeline_draws_each_lm_call_and_block_as_a_bar(page: str, recorded) -> None:
    trace, _ = recorded
    events = read_trace(trace)
    timeline = page.split('id="timeline"')[1].split("</section>")[0]
    calls = sum(1 for e in events if e["type"] == "lm_call_start")
    blocks = sum(1 for e in events if e["type"] == "block")

    bars = re.findall(r'class="bar (\w+)"', timeline)
    assert bars.count("root") + bars.count("sub") + bars.count("extract") == calls
    assert bars.count("exec") == blocks
    assert bars.count("rlm") == 2


# ---- odd and large traces --------------------------------------------------------------------


def test_ten_thousand_sub_queries_are_capped_inline_with_a_note_and_a_bounded_page() -> None:
    trace = Trace()
    trace.start()
    trace.add("turn_start", iteration=1)
    trace.call("0", "root", text="```repl\nllm_query_batched(...)\n```")
    for i in range(10_000):
        trace.call("0", "sub", prompt=f"prompt {i} " + "x" * 200, text="reply " + "y" * 200)
    trace.add("block", iteration=1, index=1, code="x", output="y", elapsed_s=0.5)
    trace.add("turn_end", iteration=1, blocks=1, observation="y", final=True)
    trace.end()

    page = render_html(trace.events)

    assert page.count('<details class="sub"') == Limits().subs_per_turn
    assert "9,900 more sub-queries not shown" in page
    assert page.count('class="bar sub"') == 3_334  # one in every 3, spread over the run
    assert "Sub-queries drawn: 3,334 of 10,000 (one in every 3)." in page
    assert len(page) < 2_000_000
    assert 'data-in="100010"' in page  # the turn's tokens still count every sub-query


def test_sub_queries_over_the_page_wide_cap_are_left_out_across_turns() -> None:
    trace = Trace()
    trace.start()
    for turn in range(1, 6):
        trace.add("turn_start", iteration=turn)
        trace.call("0", "root")
        for _ in range(30):
            trace.call("0", "sub", prompt="p")
        trace.add("turn_end", iteration=turn, blocks=0, observation="o")
    trace.end(iterations=5)

    page = render_html(trace.events, limits=Limits(subs_per_turn=25, subs_total=60))

    assert page.count('<details class="sub"') == 60
    assert "In all, 90 sub-queries were left out" in page


def test_long_texts_are_cut_with_a_note_of_what_was_left_out() -> None:
    trace = Trace()
    trace.start()
    trace.add("turn_start", iteration=1)
    trace.call("0", "root")
    trace.add("block", iteration=1, index=1, code="print(x)", output="z" * 50_000)
    trace.add("turn_end", iteration=1, blocks=1, observation="o")
    trace.end()

    page = render_html(trace.events, limits=Limits(text_chars=1_000))

    assert "z" * 1_000 in page
    assert "z" * 1_001 not in page
    assert "49,000 more characters not shown" in page


def test_a_trace_cut_before_the_run_ended_shows_what_was_recorded() -> None:
    trace = Trace()
    trace.start()
    trace.add("turn_start", iteration=1)
    trace.call("0", "root")
    trace.add("lm_call_start", call_id=99, model="m", purpose="sub", prompt="still going")

    page = render_html(trace.events)

    assert "incomplete" in page
    assert "no run_end event" in page
    assert "still going" in page


def test_failed_attempts_budget_refusals_and_the_extraction_turn_are_shown() -> None:
    trace = Trace()
    trace.start()
    trace.add("turn_start", iteration=1)
    trace.call("0", "root", text=None, error="HTTP 500: upstream broke", status=500)
    trace.call("0", "root")
    trace.add("budget_refused", limit="max_llm_calls", model="m", purpose="sub",
              message="max_llm_calls of 2 reached")  # fmt: skip
    trace.add("turn_end", iteration=1, blocks=0, observation="o")
    trace.call("0", "extract", text="FINAL(best guess)")
    trace.add("final", iteration=1, answer="best guess", source="extract")
    trace.end(answer="best guess", status="max_iterations")

    page = render_html(trace.events)
    tags = parse(page)

    assert "HTTP 500: upstream broke" in page
    assert "max_llm_calls of 2 reached" in page
    assert len(with_attr(tags, "details", class_="turn")) == 1
    assert len(with_attr(tags, "details", class_="extract")) == 1
    assert "max_iterations" in page


event_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
event_types = st.sampled_from(
    ["run_start", "rlm_start", "turn_start", "lm_call_start", "lm_call_end", "block",
     "turn_end", "final", "rlm_end", "run_end", "budget_refused", "tool_call", "compacted",
     "context_data", "something_new"]
)  # fmt: skip
field_names = st.sampled_from(
    ["t", "rlm", "depth", "call_id", "purpose", "prompt", "text", "input_tokens", "cost_usd",
     "iteration", "index", "code", "output", "error", "elapsed_s", "answer", "usage",
     "question", "contexts", "new_vars", "status", "settings", "name", "result"]
)  # fmt: skip
events_strategy = st.lists(
    st.builds(
        lambda kind, fields: {"type": kind, **fields},
        event_types,
        st.dictionaries(field_names, event_values | st.sampled_from(["0", "0.1", "0.1.2"])),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_strategy)
def test_any_event_dicts_render_a_page_without_raising(events: list[dict[str, Any]]) -> None:
    page = render_html(events)

    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<script>") == 1


def test_the_timeline_axis_labels_any_time_a_trace_holds() -> None:
    # a span near the float maximum steps its ticks past it: inf, once found by the test above
    assert [_tick(t) for t in (float("inf"), float("nan"), 1e300, 3725.0)] == [
        "?",
        "?",
        "1e+300s",
        "1h02m",
    ]


# ---- recursa view ----------------------------------------------------------------------------


def test_view_writes_the_page_to_out_and_prints_its_path(
    recorded: tuple[Path, Any], tmp_path: Path
) -> None:
    trace, _ = recorded
    out = tmp_path / "run.html"

    run = run_cli(["view", str(trace), "--out", str(out)])

    assert run.rc == 0, run.err
    assert run.out.strip() == str(out)
    assert run.err == ""
    assert out.read_text(encoding="utf-8") == render_html(load_trace(trace))


def test_view_without_out_writes_next_to_the_trace(
    recorded: tuple[Path, Any], tmp_path: Path, capsys
) -> None:
    trace = tmp_path / "copy.jsonl"
    trace.write_bytes(recorded[0].read_bytes())

    assert dispatch(["view", str(trace)]) == 0
    assert (tmp_path / "copy.html").is_file()
    assert capsys.readouterr().out.strip() == str(tmp_path / "copy.html")


def test_view_of_a_missing_trace_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "absent.jsonl"

    code = dispatch(["view", str(missing), "--out", str(tmp_path / "x.html")])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"recursa: error: trace file not found: {missing}"]
    assert not (tmp_path / "x.html").exists()


@pytest.mark.parametrize(
    "lines, number",
    [
        (['{"type": "run_start"}', "", "{not json"], 3),
        (['{"type": "run_start"}', "[1, 2]"], 2),
        (['{"no_type": 1}'], 1),
    ],
    ids=["not_json", "not_an_object", "no_type"],
)
def test_view_of_a_malformed_trace_line_exits_2_naming_the_line(
    tmp_path: Path, capsys, lines: list[str], number: int
) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text("\n".join(lines) + "\n", encoding="utf-8")

    code = dispatch(["view", str(trace), "--out", str(tmp_path / "x.html")])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith(f"recursa: error: {trace} line {number}: ")
    assert not (tmp_path / "x.html").exists()


def test_view_of_an_empty_trace_exits_2(tmp_path: Path, capsys) -> None:
    trace = tmp_path / "empty.jsonl"
    trace.write_text("\n", encoding="utf-8")

    assert dispatch(["view", str(trace)]) == 2
    assert "holds no events" in capsys.readouterr().err


def test_view_accepts_a_trace_written_by_recursa_run_trace(recorded, tmp_path: Path) -> None:
    # The same events, one per line as `--trace` writes them: every line is an event dict.
    trace, _ = recorded
    assert all(isinstance(json.loads(line), dict) for line in trace.read_text().splitlines())
    assert load_trace(trace) == read_trace(trace)


# ---- sub-queries: folded beyond a handful, the one that reached FINAL tagged ----------------


def _fan_out(n: int, answer: Any, replies: dict[int, str] | None = None) -> str:
    trace = Trace()
    trace.start()
    trace.add("turn_start", iteration=1)
    trace.call("0", "root", text="```repl\nllm_query_batched(...)\n```")
    for i in range(n):
        trace.call("0", "sub", prompt=f"chunk {i}", text=(replies or {}).get(i, "NONE"))
    trace.add("turn_end", iteration=1, blocks=1, observation="o", final=True)
    trace.end(answer=answer)
    return render_html(trace.events)


def test_a_turn_with_many_sub_queries_folds_their_list_and_tags_the_one_that_reached_final():
    page = _fan_out(62, "amber-falcon-7731", {41: "FOUND amber-falcon-7731"})

    folded = page.split('<details class="fold subs-list">')[1].split("</details></div>")[0]
    assert folded.startswith("<summary>Sub-queries (62) · 1 reached FINAL</summary>")
    assert folded.count('<details class="sub"') == 62
    assert page.count("reached FINAL</span>") == 1
    tagged = page.split('<span class="tag final">reached FINAL</span>')[1]
    assert tagged.startswith(" <b>#43</b> sub")  # root turn #1, then chunks 0.. as #2..
    assert "chunk 41" in tagged.split("</summary>")[0]


def test_a_handful_of_sub_queries_stays_listed_and_replies_like_none_are_not_tagged():
    page = _fan_out(3, "NONE found")

    assert "subs-list" not in page and "<h4>Sub-queries (3)</h4>" in page
    assert "reached FINAL" not in page  # "NONE" is too short to match by chance


def test_no_answer_is_shown_in_a_neutral_box_not_the_answers_green():
    page = _fan_out(1, None)

    assert '<pre id="answer" class="answer none"><span class="dim">(no answer)</span>' in page
    assert "pre.answer.none{background:var(--code)" in page
