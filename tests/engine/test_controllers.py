"""The table of root models known to drive RLMs: families, not exact names, and no note on
the demo's own scripted model or on the models the README itself suggests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from e2e_helpers import host_env, run_cli
from recursa.core import controllers

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def _fresh_table(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("RECURSA_CONTROLLERS", raising=False)
    controllers._table.cache_clear()
    yield
    controllers._table.cache_clear()


def test_every_model_the_readme_suggests_is_known() -> None:
    models = set(
        re.findall(r"--model ((?:openai|anthropic|ollama|vllm)/[\w.:/-]+)", README.read_text())
    )
    assert {"anthropic/claude-sonnet-4-5", "ollama/qwen3:32b"} <= models
    assert sorted(m for m in models if not controllers.known_controller(m)) == []


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4"),
        ("ollama/qwen3:32b", "qwen3"),
        ("vllm/Qwen/Qwen3-Coder-480B-A35B-Instruct", "qwen3-coder"),
        ("OpenAI/GPT-5.1", "gpt-5"),
        ("openai/gpt-50", None),  # a family ends at a separator
        ("openai/gpt-4o", None),
        ("openai/scripted-demo", None),
    ],
)
def test_a_model_matches_its_family_under_any_provider(model: str, family: str | None) -> None:
    assert controllers.family_of(model) == family


def test_a_user_file_adds_families_and_exact_names(tmp_path: Path, monkeypatch) -> None:
    extra = tmp_path / "mine.json"
    extra.write_text(
        json.dumps({"families": {"mistral-large": "ours"}, "controllers": {"x/y": ""}})
    )
    monkeypatch.setenv("RECURSA_CONTROLLERS", str(extra))
    assert controllers.known_controller("mistral/mistral-large-2411")
    assert controllers.known_controller("X/Y") and not controllers.known_controller("x/z")


def test_the_demo_never_gets_the_note_about_its_model(tmp_path: Path) -> None:
    done = run_cli(["demo", "--size-mb", "0.2", "--no-store"], env=host_env(), timeout=120)
    assert done.rc == 0, done.err
    assert "not in the table of models" not in done.err
    assert "The access code is" in done.out
