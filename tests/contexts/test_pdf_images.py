"""Images inside a PDF of the context: `context.page_images(n)` names them (listed in the
worker without decoding), and `llm_query(prompt, images=[name])` sends one, extracted by
the host from inside the run's contexts only. A scripted sub-model behind a FakeLMServer on
127.0.0.1 answers with what it received."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from e2e_helpers import repl, root_requests, sub_requests
from recursa import RLM
from recursa.context import from_path
from recursa.testing import LMRequest, ScriptedLM

Image = pytest.importorskip("PIL.Image")
pypdf = pytest.importorskip("pypdf")


def received(request: LMRequest) -> str:
    """A sub-model that answers with the type and hash of each image it was sent."""
    return ",".join(f"{kind} {hashlib.sha256(data).hexdigest()}" for kind, data in request.images)


def pdf_with_images(path: Path) -> list[bytes]:
    """A two-page PDF, one picture a page (Pillow embeds each as a JPEG); each page's image
    bytes as pypdf extracts them."""
    red, blue = Image.new("RGB", (8, 8), (200, 10, 10)), Image.new("RGB", (8, 8), (10, 10, 200))
    red.save(path, save_all=True, append_images=[blue])
    return [page.images[0].data for page in pypdf.PdfReader(path).pages]


def run_code(serve, code: str, context: Path):
    server = serve(ScriptedLM(root=[repl(code)], sub=received))
    result = RLM("openai/x", base_url=server.url, env={}).run("q", context=from_path(str(context)))
    assert result.status == "ok", result.error
    return result.answer, server


def test_a_page_image_of_a_pdf_in_a_folder_is_named_and_sent(serve, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "docs").mkdir(parents=True)
    images = pdf_with_images(folder / "docs" / "manual.pdf")
    code = (
        "names = context['docs/manual.pdf'].page_images(2)\n"
        "FINAL([names, llm_query('what colour?', images=names)])"
    )
    answer, server = run_code(serve, code, folder)
    assert answer == [
        ["docs/manual.pdf#page=2/image0"],
        f"image/jpeg {hashlib.sha256(images[1]).hexdigest()}",
    ]
    [sub] = sub_requests(server)
    assert sub.images == [("image/jpeg", images[1])]
    first = root_requests(server)[0].messages[1]["content"]
    assert ".page_images(n) names page n's images for llm_query(prompt, images=[...])" in first


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("manual.pdf#page=3/image0", "the PDF has 2 pages"),
        ("manual.pdf#page=1/image4", "page 1 has 1 images"),
        ("../other.pdf#page=1/image0", "is not a file inside this run's contexts"),
    ],
)
def test_a_pdf_image_that_is_not_there_is_refused_in_the_repl(
    serve, tmp_path: Path, name: str, why: str
) -> None:
    pdf_with_images(tmp_path / "other.pdf")
    (tmp_path / "one").mkdir()
    pdf_with_images(tmp_path / "one" / "manual.pdf")
    code = (
        f"try:\n    llm_query('look', images=[{name!r}])\n"
        "except ValueError as e:\n    FINAL(str(e))"
    )
    answer, server = run_code(serve, code, tmp_path / "one" / "manual.pdf")
    assert why in answer
    assert sub_requests(server) == []
