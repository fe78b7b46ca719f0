"""Controller profiles: the knobs a profile file holds reach the root model, the run says
which profile produced it (run_start, run store, viewer), and bad files are one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e_helpers import one_json_object, repl, run_cli
from recursa import RLM, Auto, ConfigError
from recursa.core.profile import BUILTIN, Profile
from recursa.events import RunStarted
from recursa.testing import ScriptedLM
from recursa.trace.store import RunStore

TUNED = Profile(
    system_prompt="Tuned controller. Chunks of {sub_window} characters. Context: {context_kind}.",
    first_turn="Batch every sub-query in ONE llm_query_batched call.",
    chunk_chars=20_000,
    max_iterations=4,
    guards={
        "repeated_block": 0,
        "repeated_error": 3,
        "idle_turns": 2,
        "cycle": True,
        "print_context_chars": 4000,
    },
    name="tuned",
)


def _write(tmp_path: Path, profile: Profile, name: str = "p.json") -> Path:
    path = tmp_path / name
    path.write_text(profile.dumps(), encoding="utf-8")
    return path


def test_the_builtin_profile_holds_todays_defaults_and_every_run_names_it() -> None:
    script = ScriptedLM(root=[repl("FINAL(len(context))")])
    events: list = []

    result = RLM("openai/x", client=script, env={}).run("q", "abc", on_event=events.append)

    assert result.answer == 3
    start = next(e for e in events if isinstance(e, RunStarted))
    assert start.profile == BUILTIN.id
    system, first = script.requests[0].messages[:2]
    assert "roughly 100,000 characters" in system["content"]
    assert first["content"].endswith("Do not answer before you have looked.")


def test_a_profile_file_steers_prompts_turns_and_guards(tmp_path: Path) -> None:
    script = ScriptedLM(root=[repl("x = 1")])  # never finishes: runs out of turns
    events: list = []

    rlm = RLM("openai/x", client=script, env={}, profile=_write(tmp_path, TUNED))
    result = rlm.run("q", "abc", on_event=events.append)

    assert rlm.profile == TUNED and rlm.max_iterations == 4
    assert rlm.guards is not None and rlm.guards.idle_turns == 2
    assert result.iterations <= 4
    system, first = script.requests[0].messages[:2]
    assert system["content"] == "Tuned controller. Chunks of 20,000 characters. Context: str of 3."
    assert first["content"].endswith("Batch every sub-query in ONE llm_query_batched call.")
    assert next(e for e in events if isinstance(e, RunStarted)).profile == TUNED.id


def test_an_argument_wins_over_the_profile_and_the_id_says_so(tmp_path: Path) -> None:
    rlm = RLM("openai/x", client=ScriptedLM(), env={}, profile=TUNED, max_iterations=9)

    assert rlm.max_iterations == 9
    assert rlm.profile == TUNED.replace(max_iterations=9)
    assert rlm.profile.id != TUNED.id


def test_the_id_is_the_hash_of_the_content_and_toml_reads_the_same(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text(
        'version = 1\nname = "tuned"\nsystem_prompt = "S"\nmax_iterations = 4\n', encoding="utf-8"
    )
    as_json = _write(tmp_path, Profile(name="tuned", system_prompt="S", max_iterations=4))

    assert Profile.load(toml).id == Profile.load(as_json).id
    assert Profile.load(toml).id != Profile(name="tuned", system_prompt="T").id


def test_auto_takes_its_threshold_from_the_profile() -> None:
    profile = BUILTIN.replace(direct_below_chars=123, strategy="auto")

    auto = Auto("openai/x", client=ScriptedLM(), env={}, profile=profile)

    assert auto.direct_below_chars == 123 and auto.profile == profile


BAD = {
    "unknown_key": ({"version": 1, "max_iteration": 3}, "max_iteration"),
    "wrong_version": ({"version": 7}, "version"),
    "bad_turns": ({"version": 1, "max_iterations": 0}, "max_iterations"),
    "bad_guard": ({"version": 1, "guards": {"idle": 2}}, "idle"),
    "bad_strategy": ({"version": 1, "strategy": "fast"}, "strategy"),
}


@pytest.mark.parametrize("data, word", BAD.values(), ids=BAD.keys())
def test_a_bad_profile_is_a_config_error_naming_the_setting(tmp_path, data, word) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(ConfigError, match=word):
        RLM("openai/x", client=ScriptedLM(), env={}, profile=path)


def test_the_run_store_keeps_the_profile_id(tmp_path: Path) -> None:
    events: list = []
    RLM("openai/x", client=ScriptedLM(root=[repl("FINAL(1)")]), env={}, profile=TUNED).run(
        "q", "abc", on_event=events.append
    )
    store = RunStore(tmp_path / "runs.db")

    run_id = store.save(events)

    assert store.get(run_id).profile == TUNED.id
    assert store.get(run_id).to_dict()["profile"] == TUNED.id


def test_cli_run_with_profile_reports_it_in_the_trace_and_the_viewer(serve, tmp_path) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('done')")]))
    trace = tmp_path / "run.jsonl"
    page = tmp_path / "run.html"
    args = ["run", "q", "--context", "-", "--model", "openai/x", "--base-url", server.url]

    run = run_cli(
        [*args, "--profile", str(_write(tmp_path, TUNED)), "--json", "--trace", str(trace)],
        stdin=b"some text",
    )
    view = run_cli(["view", str(trace), "--out", str(page)])

    assert run.rc == 0, run.err
    assert one_json_object(run.out)["answer"] == "done"
    start = json.loads(trace.read_text().splitlines()[0])
    assert start["type"] == "run_start" and start["profile"] == TUNED.id
    assert start["system_prompt"] == TUNED.system_prompt
    assert view.rc == 0, view.err
    assert TUNED.id in page.read_text(encoding="utf-8")


def test_cli_refuses_a_missing_profile_with_exit_2_and_one_line(tmp_path: Path) -> None:
    run = run_cli(["run", "q", "--model", "openai/x", "--profile", str(tmp_path / "no.json")])

    assert run.rc == 2
    assert "Traceback" not in run.err
    assert len(run.err_lines) == 1 and "no.json" in run.err_lines[0]


def test_a_run_with_a_profile_replays_with_its_prompts(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=[repl("n = len(context)"), repl("FINAL(n * 2)")]))
    trace = tmp_path / "run.jsonl"
    args = ["run", "q", "--context", "-", "--model", "openai/x", "--base-url", server.url]
    profile = ["--profile", str(_write(tmp_path, TUNED))]
    run = run_cli(
        [*args, *profile, "--json", "--trace", str(trace), "--trace-context"], stdin=b"some text"
    )

    replayed = run_cli(["replay", str(trace), "--json"])

    assert run.rc == 0, run.err
    assert replayed.rc == 0, replayed.err
    assert one_json_object(replayed.out)["answer"] == 18
