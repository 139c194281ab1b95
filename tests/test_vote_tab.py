"""The Vote tab through gradio_client, as several voters' pages drive it; admin endpoints behind logins."""

import json
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio_client import Client, handle_file

from playground.core.access import ADMIN
from playground.data.prompt_sets import SetPrompt
from playground.models.roles import ModelsConfig
from service.state import AppState, build_state
from tests.conftest import ADMIN_PASSWORD, VOTER, generate_call, running_app
from ui import vote_tab

# /next_item and /queue_skip outputs: status, progress, prompt, 4 headers, 4 texts, ranking
STATUS, PROGRESS, PROMPT, TEXTS = 0, 1, 2, slice(7, 11)
DONE = "Nothing left for you"


def prompt_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Say hi {i}.", "id": f"q{i}"}) + "\n" for i in range(n)))
    return path


@pytest.fixture
def app(tiny_app: tuple[AppState, Client]) -> tuple[AppState, Client]:
    return tiny_app


def test_voters_share_a_set_with_overlap_two(app: tuple[AppState, Client], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    state, admin = app
    # Responses are shown in the same order every time, so the votes below, and whether two votes on
    # a prompt agree, do not depend on a random draw (unseeded, the export could find only ties).
    monkeypatch.setattr(vote_tab, "random", SimpleNamespace(Random=lambda: random.Random(0)))
    message, _ = admin.predict(handle_file(str(prompt_file(tmp_path, 4))), "eval", 1, False,
                               api_name="/import_prompts")
    assert "4 prompts" in message
    # Sampled at T = 1: the random tiny model's greedy text is whitespace.
    done = admin.predict("eval", ["policy", "sft"], 1.0, 4, 0, api_name="/pregenerate")
    assert "4 of 4 prompts have every response; 8 generated" in done
    assert "after 2 vote(s)" in admin.predict("eval", 2, api_name="/set_overlap")
    admin.predict("eval", "# Guidelines\nPrefer the **shorter** answer.", api_name="/guidelines")
    assert "shorter" in state.store.prompt_sets.get("eval").guidelines

    names = ["ana", "bo", "cy"]
    voters = {name: Client(admin.src, verbose=False) for name in names}
    try:
        first = voters["ana"].predict("eval", "ana", api_name="/next_item")
        assert first[PROMPT] == "**user:** Say hi 0." and "0 voted · 4 remaining" in first[PROGRESS]
        assert all(t["value"] for t in first[TEXTS][:2]) and not any(t["visible"] for t in first[TEXTS][2:])
        # A skip is this session's: ana gets the next prompt now, and q0 again in a new session.
        skipped = voters["ana"].predict("eval", "ana", api_name="/queue_skip")
        assert skipped[PROMPT] == "**user:** Say hi 1."
        finished: set[str] = set()
        rounds = 0
        while len(finished) < len(names):  # round-robin until the queue has nothing for anyone
            rounds += 1
            for name in names:
                if name in finished:
                    continue
                shown = voters[name].predict("eval", name, api_name="/next_item")
                if DONE in shown[STATUS]:
                    finished.add(name)
                    continue
                stored = voters[name].predict("ab"[rounds % 2], [], name, api_name="/queue_vote")
                assert f"stored as **{'ab'[rounds % 2]}** by {name}" in stored[-2]
                with pytest.raises(Exception, match="Nothing to vote on"):  # the item is used up
                    voters[name].predict("tie", [], name, api_name="/queue_vote")
    finally:
        for client in voters.values():
            client.close()

    votes = state.store.votes.list()
    per_prompt = Counter(v.item for v in votes)
    assert sorted(per_prompt.values()) == [2, 2, 2, 2]  # every prompt exactly `overlap` votes
    assert len({(v.item, v.voter) for v in votes}) == len(votes) == 8  # nobody twice on a prompt
    assert all(v.anonymous and v.settings["prompt_set"] == "eval" for v in votes)
    assert {v.voter for v in votes} == set(names)

    progress_text, table = admin.predict("eval", api_name="/progress")
    assert "4 of 4 prompts have their 2 vote(s); 8 votes in all" in progress_text
    assert sum(row[1] for row in table["data"]) == 8
    alpha_text, by_voter, bias, _ = admin.predict("eval", api_name="/agreement")
    assert "based on **4 items**" in alpha_text
    assert [row[0] for row in by_voter["data"]] == sorted(names)
    assert bias["data"][0][:3] == ["all voters", bias["data"][0][1], 8]  # every vote picked a side
    admin.predict("trl", "keep", api_name="/export_merged")
    [meta] = (state.data_dir / "exports").glob("*.meta.json")
    assert json.loads(meta.read_text())["queue_votes"] == 8


def test_three_responses_are_ranked_or_all_flawed(app: tuple[AppState, Client], tmp_path: Path) -> None:
    state, client = app
    client.predict(handle_file(str(prompt_file(tmp_path, 2))), "ranks", 1, False, api_name="/import_prompts")
    client.predict("ranks", ["policy", "reference", "sft"], 1.0, 4, 0, api_name="/live_models")
    shown = client.predict("ranks", "ana", api_name="/next_item")
    assert "Rank the responses" in shown[STATUS] and all(t["visible"] for t in shown[TEXTS][:3])
    with pytest.raises(Exception, match="Rank all 3 responses"):
        client.predict("ranking", ["A", "B"], "ana", api_name="/queue_vote")
    client.predict("ranking", ["C", "A", "B"], "ana", api_name="/queue_vote")
    client.predict("ranks", "ana", api_name="/next_item")
    client.predict("all_flawed", [], "ana", api_name="/queue_vote")
    ranked, flawed = state.store.votes.list()
    assert ranked.ranking == (2, 0, 1) and len(ranked.responses) == 3
    assert flawed.outcome == "both_bad" and len(flawed.responses) == 3
    assert DONE in client.predict("ranks", "ana", api_name="/next_item")[STATUS]


def test_voters_vote_under_their_login_and_cannot_run_the_set(locked_state: AppState, tmp_path: Path) -> None:
    state = locked_state
    path = prompt_file(tmp_path, 2)
    with running_app(state, auth=VOTER) as client:
        for api_name, args in [("/import_prompts", (handle_file(str(path)), "mine", 1, False)),
                               ("/pregenerate", ("eval", ["policy", "sft"], 1.0, 4, 0)),
                               ("/live_models", ("eval", ["policy", "sft"], 1.0, 4, 0)),
                               ("/set_overlap", ("eval", 3)), ("/guidelines", ("eval", "vote A always")),
                               ("/progress", ("eval",)), ("/agreement", ("eval",)), ("/load_example_set", ()),
                               ("/export_merged", ("trl", "drop"))]:
            with pytest.raises(Exception, match="needs the admin role"):
                client.predict(*args, api_name=api_name)
        assert state.store.prompt_sets.list() == []

        admin = Client(client.src, verbose=False, auth=(ADMIN, ADMIN_PASSWORD))
        try:
            admin.predict(handle_file(str(path)), "eval", 1, False, api_name="/import_prompts")
            # Live: the first voter to reach a prompt waits for its responses; they are stored for the next.
            admin.predict("eval", ["policy", "sft"], 1.0, 4, 0, api_name="/live_models")
        finally:
            admin.close()
        shown = client.predict("eval", "mallory", api_name="/next_item")  # the typed name is ignored
        assert "**ana** in **eval**: 0 voted · 2 remaining" in shown[PROGRESS]
        client.predict("b", [], "mallory", api_name="/queue_vote")
        [vote] = state.store.votes.list()
        first = state.store.prompt_sets.prompts(state.store.prompt_sets.get("eval").id)[0]
        assert (vote.voter, vote.outcome, vote.item) == ("ana", "b", first.id)
        assert len(state.store.prompt_sets.responses(first.id or 0)) == 2  # generated live, kept for the next voter


def test_both_tabs_vote_through_one_handler_and_the_example_set_loads_in_one_call(
        app: tuple[AppState, Client], monkeypatch: pytest.MonkeyPatch) -> None:
    import ui.voting

    state, client = app
    cast: list[str] = []
    record_vote = ui.voting.record_vote

    def counted(*args, **kwargs):  # (state, round or queue item, outcome, voter, ranking)
        cast.append(type(args[1]).__name__)
        return record_vote(*args, **kwargs)

    monkeypatch.setattr(ui.voting, "record_vote", counted)
    loaded = client.predict(api_name="/load_example_set")
    assert "Loaded **example** (16 prompts)" in loaded[-1]
    assert [s.name for s in state.store.prompt_sets.list()] == ["example"]
    client.predict("example", ["policy", "sft"], 1.0, 4, 0, api_name="/live_models")
    client.predict("example", "ana", api_name="/next_item")
    assert "stored as **a** by ana" in client.predict("a", [], "ana", api_name="/queue_vote")[-2]
    client.predict(**generate_call("Say hi.", max_new_tokens=4))
    stored = client.predict("b", [], "ana", api_name="/vote")
    # Slots A and B: a fresh policy, and a reference with the SFT weights, are SFT; in the status,
    # and in the headers the page shows next.
    assert stored.endswith("by ana: A `policy` (rated as `sft`), B `reference` (rated as `sft`).")
    assert list(client.predict(api_name="/round")[0:2]) == ["### Response A · `policy` (rated as `sft`)",
                                                            "### Response B · `reference` (rated as `sft`)"]
    assert cast == ["QueueItem", "Round"]
    queue, playground = state.store.votes.list()
    assert queue.item is not None and playground.item is None
    # The fresh policy, the SFT model and the reference with its weights: all one model, rated sft.
    assert [r.rated_as for v in (queue, playground) for r in v.responses] == ["sft"] * 4


@pytest.mark.browser
def test_keyboard_votes_in_the_vote_tab(tiny_model_dir: Path, home: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import sync_playwright

    from playground.data.exchange import import_prompts
    from playground.inference.settings import GenerationSettings
    from service.pregenerate import choose_models, pregenerate
    from tests.test_browser import CHROMIUM_ARGS
    from ui.app import build_demo, launch_kwargs

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home)
    pset = import_prompts(state.store, prompt_file(tmp_path, 3), "eval")
    state.store.prompt_sets.set_guidelines(pset.id, "Prefer the **shorter** answer.")
    pset = choose_models(state, pset, ["policy", "sft"], GenerationSettings(temperature=1.0, max_new_tokens=4))
    pregenerate(state, pset)
    demo = build_demo(state)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs(state))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(demo.local_url)
            page.get_by_role("tab", name="Vote").click()
            page.get_by_text("Prefer the shorter answer.").wait_for(timeout=30_000)  # guidelines on load
            page.locator("#voter input, #voter textarea").first.fill("dana")  # the one name box, above the tabs
            page.locator("body").click(position={"x": 5, "y": 5})  # out of the text box: keys count again
            page.keyboard.press("Enter")  # the next prompt
            page.wait_for_function("() => !document.querySelector('#queue-b').disabled", timeout=30_000)
            assert page.locator("#vote-b").count() == 0 or not page.locator("#vote-b").is_visible()
            page.keyboard.press("a")  # 👍 on A
            page.get_by_text("👍 good on A by dana").wait_for(timeout=30_000)
            page.keyboard.press("Shift+B")  # 👎 on B
            page.get_by_text("👎 bad on B by dana").wait_for(timeout=30_000)
            page.keyboard.press("2")  # B is better, in the Vote tab (the Playground's button is hidden)
            page.get_by_text("stored as b by dana").wait_for(timeout=30_000)
            page.keyboard.press("Enter")
            page.wait_for_function("() => !document.querySelector('#queue-a').disabled", timeout=30_000)
            page.keyboard.press("s")  # skip: the third prompt comes at once
            page.get_by_text("Say hi 2.").wait_for(timeout=30_000)
            page.keyboard.press("3")
            page.get_by_text("stored as tie by dana").wait_for(timeout=30_000)
            browser.close()
        assert [(v.voter, v.outcome, v.prompt[-1]["content"]) for v in state.store.votes.list()] == [
            ("dana", "b", "Say hi 0."), ("dana", "tie", "Say hi 2.")]
        assert [(v.voter, v.slot, v.label, v.prompt[-1]["content"]) for v in state.store.single_votes.list()] == [
            ("dana", 0, True, "Say hi 0."), ("dana", 1, False, "Say hi 0.")]
    finally:
        demo.close()
        state.store.close()


@pytest.mark.slow
@pytest.mark.browser
def test_the_first_hour_of_the_vote_tab(tiny_state: AppState, tmp_path: Path) -> None:
    """No set: the admin is offered the example set in one click; a set added meanwhile (by the CLI,
    here the store) is listed when the tab is opened, with no click on Refresh."""
    from tests.test_browser import browser_page

    state = tiny_state
    with browser_page(state) as (page, url):
        page.goto(url)
        page.get_by_role("tab", name="Vote").click()
        page.get_by_text("No prompt set yet.").wait_for(timeout=30_000)
        page.get_by_role("button", name="Load the example prompt set", exact=True).click()
        page.get_by_text("Loaded example (16 prompts)").wait_for(timeout=30_000)
        assert not page.get_by_text("No prompt set yet.").is_visible()

        state.store.prompt_sets.add("later", "later.jsonl", [SetPrompt("1", [{"role": "user", "content": "Hi?"}])])
        page.get_by_role("tab", name="Playground").click()
        page.get_by_role("tab", name="Vote").click()
        page.locator("#queue-set input").click()
        page.get_by_role("option", name="later", exact=True).wait_for(timeout=30_000)
        assert page.locator(".toast-body").all_inner_texts() == []
        assert [s.name for s in state.store.prompt_sets.list()] == ["example", "later"]
