"""A real headless Chromium clicks through a round and votes with the keyboard, as a person would."""

from pathlib import Path

import pytest

from playground.app_state import build_state
from playground.models import ModelsConfig
from ui.app import build_demo, launch_kwargs

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def test_click_through_a_vote(tiny_model_dir: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                              ) -> None:
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home)
    demo = build_demo(state)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs(state))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(demo.local_url)
            page.locator("#voter input, #voter textarea").first.fill("carol")
            page.locator("#prompt textarea").fill("Say hi.")
            assert page.locator("#vote-a").is_disabled()  # no voting before responses exist
            page.get_by_role("button", name="Generate", exact=True).click()
            page.wait_for_function("() => !document.querySelector('#vote-b').disabled", timeout=60_000)
            page.locator("body").press("2")  # keyboard shortcut: B is better
            page.get_by_text("stored as b by carol").wait_for(timeout=30_000)
            assert page.locator("#vote-a").is_disabled()  # locked until the next round
            page.screenshot(path=str(tmp_path / "vote.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    [vote] = state.store.votes()
    assert (vote.voter, vote.outcome) == ("carol", "b")
    assert (tmp_path / "vote.png").stat().st_size > 10_000
    state.store.close()
