"""The viewer's page in a real browser: Debian's chromium driven by Playwright.

Only the system chromium is used (`executable_path`), never a browser Playwright downloads;
the test is skipped, saying why, when /usr/bin/chromium or the playwright package is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recursa.cli import dispatch
from run_samples import ANSWER, CHILD_QUESTION, FAN_OUT, SUB_REPLY, record_run, scripted_model

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(
        sync_playwright is None,
        reason="the playwright Python package is not installed (pip install -e '.[dev]')",
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is missing (apt-get install chromium)",
    ),
]


def test_viewer_page_in_chromium_shows_answer_and_turns_and_expands_a_sub_query(
    serve, tmp_path: Path
) -> None:
    trace, out = tmp_path / "run.jsonl", tmp_path / "run.html"
    record_run(serve(scripted_model()), trace)
    assert dispatch(["view", str(trace), "--out", str(out)]) == 0

    requests: list[str] = []
    problems: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(10_000)
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(out.as_uri())

            # The answer, hostile markup and all, is shown as text; nothing ran from it.
            expect(page.locator("#answer")).to_have_text(ANSWER)
            expect(page.locator('[data-stat="Status"] dd')).to_have_text("ok")
            # The root's three turns and the child's two, as counted and as drawn.
            expect(page.locator('[data-stat="Turns (root)"] dd')).to_have_text("3")
            expect(page.locator('details.turn[data-rlm="0"]')).to_have_count(3)
            expect(page.locator('details.turn[data-rlm="0.0"]')).to_have_count(2)
            expect(page.locator("#rlm-0\\.0")).to_contain_text(CHILD_QUESTION)

            # A sub-query is folded: its prompt and reply show once its summary is clicked.
            subs = page.locator('details.turn[data-rlm="0"][data-turn="1"] details.sub')
            expect(subs).to_have_count(FAN_OUT)
            first = subs.first
            prompt, reply = first.locator("pre.prompt"), first.locator("pre.reply")
            expect(prompt).to_be_hidden()
            expect(reply).to_be_hidden()
            first.locator("summary").click()
            expect(prompt).to_be_visible()
            expect(prompt).to_contain_text("Summarise: the door is painted blue")
            expect(reply).to_be_visible()
            expect(reply).to_contain_text(SUB_REPLY)

            # The page's own script runs under its policy: fold and unfold every turn.
            page.get_by_role("button", name="Fold turns").click()
            expect(page.locator("details.turn[open]")).to_have_count(0)
            page.get_by_role("button", name="Open turns").click()
            expect(page.locator("details.turn[open]")).to_have_count(5)

            page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
        finally:
            browser.close()

    assert dialogs == []
    assert problems == []
    assert requests and all(url.startswith(("file://", "data:")) for url in requests), requests
    assert (tmp_path / "viewer.png").stat().st_size > 10_000
