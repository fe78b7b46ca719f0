"""The serving rules as plain functions: limits capped by the operator's maxima, model names,
server-side paths (no traversal, no escaping symlink), and chat messages turned into a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from recursa.errors import ConfigError
from recursa.events import RunEnded, TurnEnded, TurnStarted
from recursa.server.openai_api import LONG_MESSAGE_CHARS, chat_spec, completion, progress_line
from recursa.server.runs import stored_dict
from recursa.server.settings import RequestError, ServeSettings, is_loopback
from recursa.trace.store import StoredRun


def settings(**kw) -> ServeSettings:
    return ServeSettings(models=["openai/m"], **kw)


def test_request_limits_are_capped_by_the_maxima_and_default_to_them() -> None:
    limits = {"max_iterations": 10, "max_llm_calls": 50, "timeout": None, "cell_timeout": 60.0}
    s = settings(limits=limits)
    got = s.limits_for({"max_iterations": 99, "max_llm_calls": 7, "timeout": 30, "max_depth": 3})
    assert got["max_iterations"] == 10  # capped
    assert got["max_llm_calls"] == 7  # lowered
    assert got["timeout"] == 30  # no server cap
    assert got["max_depth"] == 3 and got["cell_timeout"] == 60.0
    assert s.limits_for(None)["max_llm_calls"] == 50


@pytest.mark.parametrize(
    "limits",
    [
        {"max_iterations": 0},
        {"max_llm_calls": 2.5},
        {"timeout": -1},
        {"max_cost": True},
        {"max_depth": "2"},
        {"bogus": 1},
        {"bogus": None},
        ["max_iterations"],
    ],
)
def test_bad_request_limits_are_refused(limits: object) -> None:
    with pytest.raises(RequestError):
        settings().limits_for(limits)


def test_bad_server_maxima_are_a_configuration_error() -> None:
    with pytest.raises(ConfigError):
        ServeSettings(limits={"max_iterations": 0})


def test_models_are_addressed_as_recursa_provider_model() -> None:
    s = settings()
    assert s.model_for("recursa/openai/m") == "openai/m"
    assert s.model_for(None) == "openai/m"
    assert s.listed_models() == ["recursa/openai/m"]
    for bad in ("openai/m", "recursa/openai", "recursa/openai/other", "gpt-4o"):
        with pytest.raises(RequestError) as caught:
            s.model_for(bad)
        assert caught.value.status == 404
    assert ServeSettings().model_for("recursa/anthropic/x") == "anthropic/x"  # any, when open


def test_server_side_paths_stay_under_the_allowed_directories(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "a.txt").write_text("inside")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    (allowed / "link.txt").symlink_to(outside)
    (allowed / "sub" / "leak.txt").symlink_to(outside)
    s = settings(allow_paths=[allowed])
    assert s.resolve_path("sub/a.txt") == (allowed / "sub" / "a.txt").resolve()
    assert s.resolve_path(str(allowed / "sub")) == (allowed / "sub").resolve()
    for bad in ("../outside.txt", str(outside), "link.txt", "sub/../../outside.txt", "", "x\0y"):
        with pytest.raises(RequestError) as caught:
            s.resolve_path(bad)
        assert caught.value.status in (400, 403)
    ctx = s.load_path("sub")  # a directory: the symlink that escapes is left out
    assert [rel for rel, _ in ctx.files] == ["a.txt"]
    with pytest.raises(RequestError) as caught:
        settings().resolve_path("sub/a.txt")  # no --allow-path: no server-side paths at all
    assert caught.value.status == 403


def test_only_loopback_hosts_count_as_loopback() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.4", "example.com", ""]))


def test_chat_last_user_message_is_the_question_and_long_earlier_ones_are_contexts() -> None:
    long_text = "x" * LONG_MESSAGE_CHARS
    body = {
        "model": "recursa/openai/m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": long_text}]},
            {"role": "assistant", "content": "Read it."},
            {"role": "user", "content": "What is in it?"},
        ],
        "context": {"k": 1},
        "limits": {"max_iterations": 3},
    }
    spec, model = chat_spec(body, settings())
    assert model == "recursa/openai/m" and spec.model == "openai/m"
    assert spec.question.endswith("Question: What is in it?")
    assert "[system] Be brief." in spec.question and "[assistant] Read it." in spec.question
    assert [(s.kind, s.value) for s in spec.sources] == [("value", {"k": 1}), ("text", long_text)]
    assert spec.limits["max_iterations"] == 3


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "assistant", "content": "hi"}],
        [{"role": "user", "content": "  "}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        "hi",
    ],
)
def test_chat_requests_without_a_usable_question_are_refused(messages: object) -> None:
    with pytest.raises(RequestError):
        chat_spec({"model": "recursa/openai/m", "messages": messages}, settings())


def test_completion_reports_limit_statuses_as_length_and_json_answers_as_text() -> None:
    run = {
        "id": "r1",
        "created": 1.0,
        "answer": {"n": 3},
        "status": "max_iterations",
        "iterations": 30,
        "usage": {"input_tokens": 10, "output_tokens": 2},
        "error": None,
    }
    body = completion(run, "recursa/openai/m")
    assert body["choices"][0]["message"]["content"] == '{"n": 3}'
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert body["recursa"]["run_id"] == "r1"


def test_progress_lines_tell_turns_and_the_end_but_not_every_event() -> None:
    assert progress_line(TurnEnded(iteration=2, blocks=1, observation="")) == "turn 2: 1 block(s)"
    assert progress_line(TurnStarted(iteration=2)) is None
    end = RunEnded(status="ok", answer="a", iterations=2, usage={"llm_calls": 3})
    assert progress_line(end).startswith("ok after 2 turn(s): 3 LM calls")


def test_stored_runs_read_back_cancelled_and_unfinished_as_such() -> None:
    def stored(status: str | None, error: str | None) -> StoredRun:
        return StoredRun("r1", 1.0, "q", "openai/m", status, None, 0, {}, error, "serve", None)

    assert stored_dict(stored("error", "the run was cancelled"))["status"] == "cancelled"
    assert stored_dict(stored("max_iterations", None))["status"] == "max_iterations"
    unfinished = stored_dict(stored(None, None))  # the server stopped before the run ended
    assert unfinished["status"] == "error" and "server stopped" in unfinished["error"]


def test_a_served_run_uses_the_profile_the_server_was_started_with(tmp_path: Path) -> None:
    from recursa.core.profile import Profile

    profile = Profile(first_turn="Look first.", max_iterations=7, name="served")
    path = tmp_path / "served.json"
    path.write_text(profile.dumps(), encoding="utf-8")
    served = ServeSettings(models=["openai/m"], base_url="http://127.0.0.1:9/v1", profile=str(path))

    rlm = served.make_rlm("openai/m", {"max_iterations": 7})

    assert rlm.profile.id == profile.id and rlm.profile.first_turn == "Look first."
