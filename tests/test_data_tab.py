"""Who reads which votes (issue 18: with logins a voter sees only their own, the admin all, unless
--votes-visible-to-all), and what empty Data and Dashboard tabs say, through gradio_client."""

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from evals.dashboard import LEADERBOARD_COLUMNS
from playground.core.access import ADMIN, load_access
from playground.core.errors import PlaygroundError
from playground.data.single_votes import SingleVote
from playground.data.votes import Response
from playground.models.roles import ModelsConfig
from service.evaluation import (
    BUILT_IN_PROMPTS,
    MAX_BOOTSTRAP,
    VOTER_MAX_BOOTSTRAP,
    ReportQuery,
    bootstrap_limit,
    dashboard_report,
)
from service.quotas import VOTER_DOWNLOADS
from service.state import AppState, build_state
from tests.conftest import ADMIN_PASSWORD, PROMPT, VOTER, running_app
from tests.test_downloads import add_votes
from ui.data_tab import VOTE_COLUMNS

ANA, BO = ("ana", "ana-secret-1"), ("bo", "bo-secret-12")


def rows(table: dict) -> list[list]:
    return [row for row in table["data"] if row]  # an empty table may come as one empty row


def test_voters_see_only_their_own_votes_and_the_admin_sees_all(tiny_model_dir: Path, home: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home,
                        access=load_access([":".join(ANA), ":".join(BO)], None, ADMIN_PASSWORD))
    add_votes(state)  # ana 3 votes, bo 1; each shows policy and sft
    for label in (True, True, False):  # and three single votes of carol's, not a login: seen by the admin only
        state.store.single_votes.add(SingleVote(prompt=PROMPT, response=Response("policy", "Hi."), label=label,
                                                slot=0, voter="carol"))
    with running_app(state, auth=ANA) as ana:
        bo = Client(ana.src, verbose=False, auth=BO)
        admin = Client(ana.src, verbose=False, auth=("admin", ADMIN_PASSWORD))
        try:
            table, by_voter, by_model, hint = ana.predict("", "", api_name="/votes")
            assert [row[2] for row in rows(table)] == ["ana"] * 3 and hint == ""
            assert rows(by_voter) == [["ana", 3, 0, 0]] and rows(by_model) == [["policy", 3], ["sft", 3]]
            table, by_voter, _, hint = ana.predict("bo", "", api_name="/votes")  # another voter's: nothing
            assert rows(table) == [] and rows(by_voter) == [["ana", 3, 0, 0]] and "No votes match" in hint

            table, by_voter, by_model, _ = bo.predict("", "", api_name="/votes")
            assert [row[2] for row in rows(table)] == ["bo"] and rows(by_voter) == [["bo", 1, 0, 0]]
            assert rows(by_model) == [["policy", 1], ["sft", 1]]

            table, by_voter, by_model, _ = admin.predict("", "", api_name="/votes")
            assert sorted(row[2] for row in rows(table)) == ["ana", "ana", "ana", "bo"]
            assert rows(by_voter) == [["ana", 3, 0, 0], ["bo", 1, 0, 0], ["carol", 0, 2, 1]]
            assert rows(by_model) == [["policy", 4], ["sft", 4]]
            assert [row[2] for row in rows(admin.predict("bo", "", api_name="/votes")[0])] == ["bo"]

            # Undo takes back the caller's own vote, whatever name is typed.
            message = bo.predict("ana", "", "", api_name="/undo")[0]
            assert "Removed vote #4" in message and [v.voter for v in state.store.votes.list()] == ["ana"] * 3

            state.votes_visible_to_all = True  # app.py --votes-visible-to-all
            table, by_voter, _, _ = bo.predict("", "", api_name="/votes")
            assert len(rows(table)) == 3 and rows(by_voter) == [["ana", 3, 0, 0], ["carol", 0, 2, 1]]
        finally:
            bo.close()
            admin.close()


def test_empty_tabs_say_what_to_do_with_real_headers(tiny_app: tuple[AppState, Client]) -> None:
    _, client = tiny_app
    table, by_voter, by_model, hint = client.predict("", "", api_name="/votes")
    assert table["headers"] == VOTE_COLUMNS and rows(table) == []
    assert by_voter["headers"] == ["voter", "votes", "👍", "👎"] and by_model["headers"] == ["model", "votes"]
    assert "No votes yet" in hint and "Playground tab" in hint
    out = client.predict(True, [], "sft", "sft", 10, None, api_name="/dashboard")
    summary, leaderboard = out[0], out[1]
    assert "No battles yet" in summary and leaderboard["headers"] == LEADERBOARD_COLUMNS and rows(leaderboard) == []
    rating_plot = out[10]  # plotly JSON: an annotation instead of blank axes
    assert "No battles yet" in str(rating_plot)


def test_a_voter_is_refused_every_admin_action_of_the_data_and_dashboard_tabs(locked_state: AppState,
                                                                               tmp_path: Path) -> None:
    state = locked_state
    add_votes(state)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}\n')
    with running_app(state, auth=VOTER) as client:
        for api_name, args in [("/export", ("trl", "all_pairs", ".jsonl", False)),
                               ("/import", (handle_file(str(pairs)),)),
                               ("/estimate_kl", ()),
                               ("/run_judge", (["policy", "sft"], BUILT_IN_PROMPTS, 8, "longer wins", "", None)),
                               ("/train_reward_model", (2, 1e-3, 0.0))]:
            with pytest.raises(Exception, match="needs the admin role"):
                client.predict(*args, api_name=api_name)
        # Dashboard tables are aggregates: a voter may download them, at the voters' rate, and the
        # report's bootstrap only up to the voters' limit.
        for _ in range(VOTER_DOWNLOADS):
            assert Path(client.predict(True, [], "sft", "sft", 0, None, api_name="/dashboard_tables")).stat().st_size
        with pytest.raises(Exception, match=r"at most 2 every 60 s for a voter; try again in \d+ s"):
            client.predict(True, [], "sft", "sft", 0, None, api_name="/dashboard_tables")
        with pytest.raises(Exception, match=r"0\.\.1000, got 1001 \(a voter's limit; the admin may ask for up to 5000"):
            client.predict(True, [], "sft", "sft", VOTER_MAX_BOOTSTRAP + 1, None, api_name="/dashboard")
        assert state.store.imports.pairs() == [] and state.store.judges.list() == []
    assert not (state.data_dir / "reward-models").exists() and state.kl_estimates == {}
    assert [p.name.split("-2")[0] for p in state.export_dir.iterdir()] == ["dashboard"] * VOTER_DOWNLOADS


def test_the_admin_has_every_bootstrap_round_and_no_download_limit(locked_state: AppState) -> None:
    state = locked_state
    assert bootstrap_limit(state, ADMIN) == MAX_BOOTSTRAP and bootstrap_limit(state, VOTER[0]) == VOTER_MAX_BOOTSTRAP
    assert bootstrap_limit(state, None) == VOTER_MAX_BOOTSTRAP  # with logins on, no login is no admin
    with pytest.raises(PlaygroundError, match="a voter's limit"):
        dashboard_report(state, ReportQuery(bootstrap=VOTER_MAX_BOOTSTRAP + 1), VOTER[0])
    dashboard_report(state, ReportQuery(bootstrap=VOTER_MAX_BOOTSTRAP + 1), ADMIN)
    with pytest.raises(PlaygroundError, match="got 5001"):
        dashboard_report(state, ReportQuery(bootstrap=MAX_BOOTSTRAP + 1), ADMIN)



def test_the_votes_table_shows_each_vote_s_flags_and_filters_on_them(tiny_state: AppState) -> None:
    from tests.conftest import make_vote

    for k in range(2):
        tiny_state.store.votes.add(make_vote(("policy", "sft"), texts=(f"I am SmolLM {k}.", "Hi."), anonymous=True))
        tiny_state.store.votes.add(make_vote(("policy", "sft"), texts=(f"Hello {k}.", "Hi."), anonymous=False))
    flags = VOTE_COLUMNS.index("flags")
    with running_app(tiny_state) as client:
        flagged = rows(client.predict("", "", "flagged votes", api_name="/votes")[0])
        kept = rows(client.predict("", "", "kept votes", api_name="/votes")[0])
        every = rows(client.predict("", "", "every vote", api_name="/votes")[0])
    assert [r[flags] for r in flagged] == ["identity:smollm"] * 2
    assert [r[flags] for r in kept] == ["", ""] and len(every) == 4
