"""Images for vision sub-models: `llm_query(prompt, images=[path])` names an image file of a
directory context; the host reads it (only inside the run's contexts), charges it to the
budget and sends it in the provider's image format. A scripted sub-model behind a
FakeLMServer on 127.0.0.1 answers from the image bytes it received."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from unittest import mock

import pytest

from e2e_helpers import one_json_object, repl, root_requests, run_cli, sub_requests
from image_helpers import png, vision
from recursa import RLM
from recursa.context import from_path
from recursa.core.gateway import input_token_bound, messages_sha256
from recursa.images import IMAGE_TOKEN_BOUND
from recursa.testing import Reply, ScriptedLM


def folder_with_image(tmp_path: Path) -> tuple[Path, bytes]:
    folder = tmp_path / "folder"
    (folder / "scans").mkdir(parents=True)
    (folder / "notes.txt").write_text("The meter reading is in the scan.")
    image = png("Meter reads 5812")
    (folder / "scans" / "meter.png").write_bytes(image)
    return folder, image


def run_code(serve, code: str, context_dir: Path, model: str = "openai/x", **opts):
    server = serve(ScriptedLM(root=[repl(code)], sub=vision))
    base = server.url if model.startswith("openai") else server.url.removesuffix("/v1")
    rlm = RLM(model, base_url=base, env={"ANTHROPIC_API_KEY": "k"}, **opts)
    return rlm.run("What does the meter read?", context=from_path(str(context_dir))), server


def test_run_over_a_folder_sends_the_png_the_trace_names_it_and_replays(
    serve, tmp_path: Path
) -> None:
    folder, image = folder_with_image(tmp_path)
    code = "FINAL(llm_query('What does the meter read?', images=['scans/meter.png']))"
    server = serve(ScriptedLM(root=[repl(code)], sub=vision))
    trace = tmp_path / "run.jsonl"

    run = run_cli(
        ["run", "What does the meter read?", "--context", str(folder), "--model", "openai/x",
         "--base-url", server.url, "--json", "--quiet", "--no-store", "--trace", str(trace)]
    )  # fmt: skip

    assert run.rc == 0, run.err
    assert one_json_object(run.out)["answer"] == "Meter reads 5812"
    first = root_requests(server)[0].messages[1]["content"]
    assert "  scans/meter.png: a PNG image: not text" in first
    assert "llm_query(prompt, images=[path])" in first
    [sub] = sub_requests(server)
    assert sub.images == [("image/png", image)]
    assert sub.last_user == "What does the meter read?"
    part = sub.body["messages"][0]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    starts = [e for e in events if e["type"] == "lm_call_start" and e["purpose"] == "sub"]
    assert [e["images"] for e in starts] == [
        [{"path": "scans/meter.png", "sha256": hashlib.sha256(image).hexdigest()}]
    ]
    assert all(e["images"] is None for e in events if e["type"] == "lm_call_start"
               and e["purpose"] == "root")  # fmt: skip
    replayed = run_cli(["replay", str(trace), "--context", str(folder), "--json", "--quiet"])
    assert replayed.rc == 0, replayed.err
    out = json.loads(replayed.out)
    assert out["answer"] == "Meter reads 5812" and out["diverged"] is False


def test_anthropic_gets_base64_image_blocks_and_batches_take_one_list_per_prompt(
    serve, tmp_path: Path
) -> None:
    folder, image = folder_with_image(tmp_path)
    (folder / "b.gif").write_bytes(b"GIF89a" + b"\0" * 20)
    code = (
        "FINAL(llm_query_batched(['first', 'second', 'third'], "
        "images=[['scans/meter.png'], [], ['scans/meter.png']]))"
    )
    result, server = run_code(serve, code, folder, model="anthropic/claude-x")

    assert result.status == "ok", result.error
    assert sorted(result.answer) == ["I see no image.", "Meter reads 5812", "Meter reads 5812"]
    subs = {r.last_user: r for r in sub_requests(server)}
    assert subs["first"].wire == "anthropic" and subs["first"].images == [("image/png", image)]
    block = subs["first"].body["messages"][0]["content"][0]
    assert block["type"] == "image" and block["source"]["media_type"] == "image/png"
    assert subs["second"].body["messages"][0]["content"] == "second"  # text stays a string


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../secret.png", "is not a file inside this run's contexts"),
        ("/etc/passwd", "is not a file inside this run's contexts"),
        ("notes.txt", "is not a PNG, JPEG, GIF or WebP image"),
        ("link.png", "is not a file inside this run's contexts"),
        ("big.png", "bytes: the limit is 64 bytes an image"),
    ],
)
def test_a_path_outside_the_context_or_not_an_image_is_refused_in_the_repl(
    serve, tmp_path: Path, name: str, why: str
) -> None:
    folder, _ = folder_with_image(tmp_path)
    (tmp_path / "secret.png").write_bytes(png("outside"))
    (folder / "link.png").symlink_to(tmp_path / "secret.png")  # a way out of the folder
    (folder / "big.png").write_bytes(png("x" * 64))
    code = f"""
try:
    llm_query('look', images=[{name!r}])
except ValueError as exc:
    FINAL(str(exc))
"""
    with mock.patch("recursa.images.MAX_IMAGE_BYTES", 64):
        result, server = run_code(serve, code, folder)

    assert result.status == "ok", result.error
    assert why in result.answer
    assert sub_requests(server) == []  # nothing was sent


def test_an_image_is_charged_at_its_bound_and_hashed_into_the_request_digest() -> None:
    text = [{"role": "user", "content": "look"}]
    part = {"type": "image", "media_type": "image/png", "data": "", "path": "a.png"}
    with_a = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, {**part, "sha256": "a"}]}
    ]
    with_b = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, {**part, "sha256": "b"}]}
    ]

    assert input_token_bound(with_a) == input_token_bound(text) + IMAGE_TOKEN_BOUND
    assert messages_sha256(with_a) != messages_sha256(with_b) != messages_sha256(text)


def test_a_client_that_sends_text_only_refuses_images_before_sending(tmp_path: Path) -> None:
    folder, _ = folder_with_image(tmp_path)
    code = """
try:
    llm_query('look', images=['scans/meter.png'])
except ValueError as exc:
    FINAL(str(exc))
"""
    script = ScriptedLM(root=[repl(code)], sub=vision)  # in process: text only
    result = RLM("gemini/g", client=script, env={}).run("q", context=from_path(str(folder)))

    assert result.status == "ok", result.error
    assert result.answer.startswith("gemini/g cannot be sent images here")
    assert [r for r in script.requests if not r.is_root] == []


def test_a_model_without_vision_gets_a_plain_error(serve, tmp_path: Path) -> None:
    folder, _ = folder_with_image(tmp_path)
    server = serve(
        ScriptedLM(
            root=[
                repl("""
try:
    llm_query('look', images=['scans/meter.png'])
except Exception as exc:
    FINAL(str(exc))
""")
            ],
            sub=lambda r: Reply(status=400, error_body="image input is not supported"),
        )
    )
    rlm = RLM("openai/x", base_url=server.url, env={})
    result = rlm.run("q", context=from_path(str(folder)))

    assert result.status == "ok", result.error
    assert "openai/x refused a request with images (it may not take images" in result.answer
