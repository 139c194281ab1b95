"""A real headless Chromium clicks through a round and votes, as a person would: with the keyboard,
and logged in with a mouse click; downloads every file the app offers from a data directory outside
the temp folder; and finds each tab's data on opening it, without a Refresh."""

import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from playground.core.access import load_access
from playground.models.roles import ModelsConfig
from service.state import AppState, build_state
from tests.test_downloads import outside_home, outside_state  # noqa: F401  (fixtures)
from ui.app import build_demo, launch_kwargs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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


VOTER_BOX = "#voter input, #voter textarea"
# Gradio's status tracker marks each output of an event that raised with <span class="error">Error</span>.
ERROR_BADGE = "span.error"


def guest_name(page) -> str:
    """The name the page gave this browser, once it has loaded."""
    page.wait_for_function(f"() => (document.querySelector('{VOTER_BOX}')?.value || '').startsWith('guest-')",
                           timeout=30_000)
    return page.locator(VOTER_BOX).first.input_value()


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
        guest_name(page)  # loaded: the name typed now is not replaced by the guest name
        page.locator(VOTER_BOX).first.fill("carol")
        generate(page)
        page.locator("body").press("2")  # keyboard shortcut: B is better
        page.get_by_text("stored as b by carol").wait_for(timeout=30_000)
        # Locked until the next round (by the event the vote chains, a moment after the status).
        page.wait_for_function("() => document.querySelector('#vote-a').disabled", timeout=5_000)
        page.screenshot(path=str(tmp_path / "vote.png"), full_page=True)
        [vote] = state.store.votes.list()
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
        voter = page.locator(VOTER_BOX).first
        page.wait_for_function(f"() => document.querySelector('{VOTER_BOX}')?.value === 'dana'", timeout=30_000)
        assert not voter.is_editable()
        generate(page)
        page.locator("#vote-a").click()  # a mouse click: the button's handler must see the login
        page.get_by_text("stored as a by dana").wait_for(timeout=30_000)
        [vote] = state.store.votes.list()
    assert (vote.voter, vote.outcome) == ("dana", "a")


def test_a_first_vote_needs_no_name(tiny_state: AppState, tmp_path: Path) -> None:
    """A new user types a prompt, generates and presses 1: the vote is stored under the guest name
    the page shows, which the browser keeps across a reload."""
    state = tiny_state
    with browser_page(state) as (page, url):
        page.goto(url)
        guest = guest_name(page)
        assert re.fullmatch(r"guest-[0-9a-f]{8}", guest) and page.locator(VOTER_BOX).first.is_editable()
        generate(page)
        page.locator("body").press("1")
        page.get_by_text(f"stored as a by {guest}: A policy (rated as sft), B reference (rated as sft).").wait_for(
            timeout=30_000)
        assert "policy" in page.locator("#header-0").inner_text()
        page.screenshot(path=str(tmp_path / "first-vote.png"), full_page=True)
        [vote] = state.store.votes.list()
        assert (vote.voter, vote.outcome) == (guest, "a")
        page.reload()
        assert guest_name(page) == guest
        assert page.locator(".toast-body").all_inner_texts() == []


def test_a_refused_action_leaves_the_round_on_screen(tiny_state: AppState) -> None:
    """A generate with no prompt and a vote with no name are refused: one warning each, and the
    responses, scores and status stay as they were, with no error badge over them."""
    state = tiny_state
    with browser_page(state) as (page, url):
        page.goto(url)
        guest_name(page)
        generate(page)

        def on_screen() -> tuple:
            return (tuple(page.locator(f"#response-{i} textarea").input_value() for i in range(2)),
                    tuple(page.locator(f"#scores-{i}").inner_text() for i in range(2)),
                    page.locator("#preferences").inner_text(), page.locator("#header-1").inner_text())

        before = on_screen()
        assert "implicit reward" in before[1][0] and "P(row ≻ column)" in before[2]
        page.locator("#prompt textarea").fill("")
        page.get_by_role("button", name="Generate", exact=True).click()
        page.locator(".toast-body").filter(has_text="the prompt is empty").wait_for(timeout=30_000)
        page.locator(VOTER_BOX).first.fill(" ")
        page.locator("#vote-a").click()
        page.locator(".toast-body").filter(has_text="the voter name is empty").wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # what the events chain after a refusal has run by now
        assert on_screen() == before
        assert page.get_by_text("Vote below.").is_visible() and not page.locator("#vote-a").is_disabled()
        assert page.locator(ERROR_BADGE).count() == 0
        toasts = "\n".join(page.locator(".toast-body").all_inner_texts())  # Gradio groups the two warnings
        assert toasts.count("the prompt is empty") == toasts.count("the voter name is empty") == 1
        assert "Warning" in toasts and "Error" not in toasts
        assert state.store.votes.list() == []


def download(page, button: str, link: str) -> Path:
    """Click `button` (a CSS selector), then the file link that appears under `link`; the saved path."""
    page.locator(button).click()
    anchor = page.locator(f"{link} a[download]").first
    anchor.wait_for(timeout=60_000)
    with page.expect_download(timeout=60_000) as info:
        anchor.click()
    return Path(info.value.path())


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_download_button_delivers_its_file(outside_state: AppState) -> None:  # noqa: F811 (fixture)
    """The Data tab's export, the Vote tab's merged export and the Dashboard's tables, served from a
    data directory under ~/.cache (not the temp folder, not the checkout), as by default."""
    with browser_page(outside_state) as (page, url):
        page.goto(url)
        page.get_by_role("tab", name="Data").click()
        trl = download(page, "#data-export", "#data-export-file")
        assert len(lines(trl)) == 3 and {"prompt", "chosen", "rejected"} <= set(lines(trl)[0])

        page.get_by_role("tab", name="Vote").click()
        page.get_by_text("Admin: prompt sets, pre-generation, progress, agreement").click()
        page.get_by_role("button", name="Export merged", exact=True).click()
        merged_link = page.locator("[role=tabpanel]:visible a[download]").first
        merged_link.wait_for(timeout=60_000)
        with page.expect_download(timeout=60_000) as info:
            merged_link.click()
        assert len(lines(Path(info.value.path()))) == 3

        page.get_by_role("tab", name="Dashboard").click()
        tables = download(page, "#dashboard-download", "#dashboard-download-file")
        with zipfile.ZipFile(tables) as z:
            assert "leaderboard.csv" in z.namelist()
            assert set(json.loads(z.read("ratings.json"))["models"]) == {"policy", "sft"}
        assert page.locator(".toast-body").all_inner_texts() == []  # no error was shown


def test_every_tab_shows_its_data_when_opened_without_refresh(tiny_state: AppState) -> None:
    """A database with votes, a prompt set and a checkpoint: each tab's data is there on opening it."""
    from gradio_client import Client

    from playground.data.prompt_sets import SetPrompt
    from playground.data.rows import parse_row
    from tests.test_downloads import add_votes
    from tests.test_train_tab import PAIRS, TRAIN

    state = tiny_state
    add_votes(state)
    state.store.imports.add_pairs([parse_row(p, i + 1) for i, p in enumerate(PAIRS)], "pairs.jsonl")
    pset = state.store.prompt_sets.add("greetings", "greetings.jsonl", [SetPrompt("1", [{"role": "user",
                                                                                         "content": "Hi?"}])])
    state.store.prompt_sets.set_guidelines(pset.id, "Prefer the friendlier answer.")
    with browser_page(state) as (page, url):
        client = Client(url, verbose=False)
        try:
            client.predict(*TRAIN, api_name="/train")  # a checkpoint, as the Train tab makes it
        finally:
            client.close()
        [ckpt] = list(state.checkpoints)
        page.goto(url)
        panel = page.locator("[role=tabpanel]:visible")  # the open tab (the header names the checkpoint too)

        page.get_by_role("tab", name="Vote").click()
        panel.get_by_text("Prefer the friendlier answer.").wait_for(timeout=30_000)

        page.get_by_role("tab", name="Data").click()
        votes = page.locator("#data-votes")
        votes.get_by_role("gridcell", name="bo", exact=True).wait_for(timeout=30_000)
        assert votes.get_by_role("gridcell", name="ana", exact=True).count() == 3
        assert page.locator("#data-by-voter").get_by_role("gridcell", name="3", exact=True).count() == 1  # ana's

        page.get_by_role("tab", name="Train").click()
        panel.get_by_role("gridcell", name=ckpt, exact=True).wait_for(timeout=30_000)

        page.get_by_role("tab", name="Dashboard").click()
        page.locator("#dashboard-summary").get_by_text("4 battles among 2 models").wait_for(timeout=60_000)
        assert page.locator("#dashboard-leaderboard").get_by_role("gridcell", name="sft", exact=True).count() == 1
        assert page.locator("#dashboard-checkpoints").get_by_role("gridcell", name=ckpt, exact=True).count() == 1
        assert page.locator(".toast-body").all_inner_texts() == []


def test_the_data_quality_section_counts_the_leaks_and_the_clean_toggle_moves_the_leaderboard(
        tiny_state: AppState) -> None:
    """Twelve anonymous votes that policy wins while naming itself ("I am SmolLM") and twelve
    named votes that sft mostly wins: cleaned, sft leads and Data quality counts 12 leaks of
    "smollm"; unticking that rule in Clean puts policy on top, and the leaks are still counted."""
    from tests.conftest import make_vote

    state = tiny_state
    for k in range(12):
        state.store.votes.add(make_vote(("policy", "sft"), "a", texts=(f"I am SmolLM, answer {k}.", f"Hello {k}."),
                                        rated_as=("policy", "sft"), voter=f"v{k}", anonymous=True))
        state.store.votes.add(make_vote(("policy", "sft"), "a" if k < 4 else "b", texts=(f"Hi {k}.", f"Hey {k}."),
                                        rated_as=("policy", "sft"), voter=f"w{k}", anonymous=False))
    with browser_page(state) as (page, url):
        page.goto(url)
        page.get_by_role("tab", name="Dashboard").click()
        quality = page.locator("#dashboard-quality")
        quality.get_by_role("gridcell", name="smollm", exact=True).wait_for(timeout=60_000)
        assert quality.get_by_role("gridcell", name="12", exact=True).count() == 1
        board = page.locator("#dashboard-leaderboard")
        page.locator("#dashboard-summary").get_by_text("12 battles among 2 models").wait_for(timeout=30_000)
        text = board.inner_text()
        assert text.index("sft") < text.index("policy")  # cleaned: sft ranks first
        page.locator("#dashboard-clean").get_by_label("identity leaks").uncheck()  # that rule alone
        page.locator("#dashboard-refresh").click()
        page.locator("#dashboard-summary").get_by_text("24 battles among 2 models").wait_for(timeout=30_000)
        text = board.inner_text()
        assert text.index("policy") < text.index("sft")  # every battle: policy's self-naming wins lead
        assert quality.get_by_role("gridcell", name="smollm", exact=True).count() == 1
        assert page.locator(ERROR_BADGE).count() == 0
