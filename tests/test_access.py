"""Logins and the admin role: account parsing, and what a voter may and may not do through the API."""

from pathlib import Path

import pytest
from gradio_client import Client

from playground.core.access import ADMIN, Access, load_access
from playground.core.errors import PlaygroundError
from service.state import AppState
from tests.conftest import ADMIN_PASSWORD, VOTER, running_app
from tests.test_app_first_page import SAMPLED


def test_accounts_from_flags_file_and_admin_password(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("# team\nbo:pass:with:colons\n\n  cy:longenough \n", encoding="utf-8")
    access = load_access(["ana:ana-secret-1"], accounts, ADMIN_PASSWORD)
    assert access.enabled and set(access.passwords) == {"ana", "bo", "cy", ADMIN}
    assert access.login("bo", "pass:with:colons") and access.login("cy", "longenough")
    assert not access.login("ana", "wrong-password") and not access.login("nobody", "ana-secret-1")
    assert access.is_admin(ADMIN) and not access.is_admin("ana") and not access.is_admin(None)
    assert access.voter("ana", "typed-name") == "ana"  # the login wins over a typed name
    with pytest.raises(PlaygroundError, match="needs the admin role"):
        access.require_admin("ana", "training")


@pytest.mark.parametrize(("flags", "message"), [
    (["ana"], "expected user:password"),
    (["ana:short"], "shorter than 8 characters"),
    ([":nobody-at-all"], "expected user:password"),
    (["ana:ana-secret-1", "ana:other-secret"], "defined twice"),
    (["admin:voter-pass-1"], "defined twice"),  # 'admin' is the --admin-password account
])
def test_bad_accounts_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(PlaygroundError, match=message):
        load_access(flags, None, ADMIN_PASSWORD)


def test_without_logins_everyone_is_admin_and_names_are_typed() -> None:
    open_access = Access()
    assert not open_access.enabled and open_access.is_admin(None)
    assert open_access.voter(None, " carol ") == "carol"
    with pytest.raises(PlaygroundError, match="voter name is empty"):
        open_access.voter(None, "  ")


def test_a_voter_votes_under_their_login_and_cannot_do_admin_work(locked_state: AppState) -> None:
    state = locked_state
    with running_app(state, auth=VOTER) as client:
        client.predict("Hi", "", 2, "Side by side", "policy", "reference", "sft", "policy", *SAMPLED,
                       api_name="/generate")
        client.predict("a", [], "mallory", api_name="/vote")  # the typed name is ignored
        assert [v.voter for v in state.store.votes()] == ["ana"]
        for api_name, args in [("/export", ("trl", "all_pairs", ".jsonl", False)),
                               ("/train", (1, 0.1, 5e-4, 2, "sigmoid", 0.0, 0.0, 0)),
                               ("/serve_checkpoint", (None,)),
                               ("/cancel_training", ())]:
            with pytest.raises(Exception, match="needs the admin role"):
                client.predict(*args, api_name=api_name)
        assert not (state.data_dir / "exports").exists()
        assert state.store.checkpoints() == []
        message = client.predict("mallory", "", "", api_name="/undo")[0]  # own last vote, whatever is typed
        assert "Removed vote" in message and state.store.votes() == []


def test_the_admin_may_export_and_a_wrong_password_gets_no_session(locked_state: AppState) -> None:
    state = locked_state
    with running_app(state, auth=(ADMIN, ADMIN_PASSWORD)) as client:
        client.predict("Hi", "", 2, "Side by side", "policy", "reference", "sft", "policy", *SAMPLED,
                       api_name="/generate")
        client.predict("b", [], "", api_name="/vote")
        path, _ = client.predict("trl", "all_pairs", ".jsonl", False, api_name="/export")
        assert len(Path(path).read_text().splitlines()) == 1 and state.store.votes()[0].voter == ADMIN
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own error types for a failed login
            Client(client.src, verbose=False, auth=("ana", "not-her-password"))
