"""A real headless Chromium clicks through a round and votes, as a person would: with the keyboard,
and logged in with a mouse click."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from playground.core.access import load_access
from playground.models.roles import ModelsConfig
from service.state import AppState, build_state
from ui.app import build_demo, launch_kwargs

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@contextmanager
def browser_page(state: AppState) -> Iterator:  # yields (playwright Page, the app's URL)
    from playwright.sync_api import sync_playwright

    demo = build_demo(state)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs(state))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            yield browser.new_page(viewport={"width": 1280, "height": 1400}), demo.local_url
            browser.close()
    finally:
        demo.close()
        state.store.close()


def generate(page) -> None:
    page.locator("#prompt textarea").fill("Say hi.")
    assert page.locator("#vote-a").is_disabled()  # no voting before responses exist
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("() => !document.querySelector('#vote-b').disabled", timeout=60_000)


def test_click_through_a_vote(tiny_model_dir: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                              ) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home)
    with browser_page(state) as (page, url):
        page.goto(url)
        page.locator("#voter input, #voter textarea").first.fill("carol")
        generate(page)
        page.locator("body").press("2")  # keyboard shortcut: B is better
        page.get_by_text("stored as b by carol").wait_for(timeout=30_000)
        assert page.locator("#vote-a").is_disabled()  # locked until the next round
        page.screenshot(path=str(tmp_path / "vote.png"), full_page=True)
        [vote] = state.store.votes()
    assert (vote.voter, vote.outcome) == ("carol", "b")
    assert (tmp_path / "vote.png").stat().st_size > 10_000


def test_a_logged_in_voter_votes_under_the_login(tiny_model_dir: Path, home: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home,
                        access=load_access(["dana:dana-secret-1"], None, "admin-secret-1"))
    with browser_page(state) as (page, url):
        page.goto(url)
        page.get_by_label("username").fill("dana")
        page.get_by_label("password").fill("dana-secret-1")
        page.get_by_role("button", name="Login").click()
        voter = page.locator("#voter input, #voter textarea").first
        page.wait_for_function("() => document.querySelector('#voter input, #voter textarea')?.value === 'dana'",
                               timeout=30_000)
        assert not voter.is_editable()
        generate(page)
        page.locator("#vote-a").click()  # a mouse click: the button's handler must see the login
        page.get_by_text("stored as a by dana").wait_for(timeout=30_000)
        [vote] = state.store.votes()
    assert (vote.voter, vote.outcome) == ("dana", "a")
