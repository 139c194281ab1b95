"""Logins and the admin role: account parsing, and what a voter may and may not do through the API."""

import os
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client

from playground.core.access import (
    ADMIN,
    ADMIN_PASSWORD_ENV,
    AUTH_FILE_ENV,
    Access,
    admin_password_from,
    auth_file_from,
    command_line_secrets,
    load_access,
)
from playground.core.errors import PlaygroundError
from service.state import AppState
from tests.conftest import ADMIN_PASSWORD, VOTER, generate_call, running_app


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
    (["ana"], "--auth entry 1: expected USER:PASSWORD"),
    (["ana:short"], "shorter than 8 characters"),
    (["ana:ana-secret-1", ":nobody-at-all"], "--auth entry 2: expected USER:PASSWORD"),
    (["ana:ana-secret-1", "ana:other-secret"], "defined twice"),
    (["admin:voter-pass-1"], "defined twice"),  # 'admin' is the --admin-password account
])
def test_bad_accounts_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(PlaygroundError, match=message):
        load_access(flags, None, ADMIN_PASSWORD)


@pytest.mark.parametrize("entry", [":s3cret-password", "s3cret-password", " :s3cret-password "])
def test_a_bad_entry_is_named_by_position_never_by_its_text(entry: str, tmp_path: Path) -> None:
    with pytest.raises(PlaygroundError) as flag_error:
        load_access(["ana:ana-secret-1", entry], None, None)
    assert "--auth entry 2" in str(flag_error.value) and "s3cret" not in str(flag_error.value)
    accounts = tmp_path / "accounts.txt"
    accounts.write_text(f"ana:ana-secret-1\n{entry}\n", encoding="utf-8")
    with pytest.raises(PlaygroundError) as file_error:
        load_access([], accounts, None)
    assert f"{accounts}:2" in str(file_error.value) and "s3cret" not in str(file_error.value)


def test_the_admin_password_from_a_file_the_environment_or_the_command_line(tmp_path: Path) -> None:
    secret = tmp_path / "admin.txt"
    secret.write_text("from-the-file-1\n", encoding="utf-8")
    assert admin_password_from(None, secret, {}) == ("from-the-file-1", "--admin-password-file")
    env = {ADMIN_PASSWORD_ENV: "from-the-env-12"}
    assert admin_password_from(None, None, env) == ("from-the-env-12", ADMIN_PASSWORD_ENV)
    assert admin_password_from(None, secret, env)[0] == "from-the-file-1"  # a flag wins over the environment
    assert admin_password_from("on-the-line-1", None, env) == ("on-the-line-1", "--admin-password")
    assert admin_password_from(None, None, {}) == (None, "")
    with pytest.raises(PlaygroundError, match="not both"):
        admin_password_from("on-the-line-1", secret, {})
    secret.write_text("\n", encoding="utf-8")
    with pytest.raises(PlaygroundError, match="first line is empty"):
        admin_password_from(None, secret, {})
    with pytest.raises(PlaygroundError, match="cannot read it"):
        admin_password_from(None, tmp_path / "missing.txt", {})
    # Only the command-line forms are flagged as visible in `ps`.
    assert command_line_secrets(["ana:ana-secret-1"], "--admin-password") == ["--auth", "--admin-password"]
    assert command_line_secrets([], "--admin-password-file") == []
    assert command_line_secrets([], ADMIN_PASSWORD_ENV) == []
    assert auth_file_from(None, {AUTH_FILE_ENV: "team.txt"}) == Path("team.txt")
    assert auth_file_from(secret, {AUTH_FILE_ENV: "team.txt"}) == secret  # the flag wins
    assert auth_file_from(None, {}) is None


@pytest.mark.parametrize("entry", ["bad\tname:s3cret-password", f"{'x' * 80}:s3cret-password"])
def test_a_bad_user_name_is_named_by_position_too(entry: str) -> None:
    with pytest.raises(PlaygroundError) as error:
        load_access(["ana:ana-secret-1", entry], None, None)
    assert str(error.value).startswith("--auth entry 2: the voter name") and "s3cret" not in str(error.value)


def test_the_app_reads_every_secret_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """app.py's accounts from files, from the environment, and from the command line (with a warning
    for each flag that holds a password, and never the password itself)."""
    from cli.serve import load_app_access, parse_args

    team, admin = tmp_path / "team.txt", tmp_path / "admin.txt"
    team.write_text("ana:ana-secret-1\n", encoding="utf-8")
    admin.write_text("adm1n-password\n", encoding="utf-8")
    monkeypatch.delenv(ADMIN_PASSWORD_ENV, raising=False)
    monkeypatch.delenv(AUTH_FILE_ENV, raising=False)

    def accounts(*flags: str) -> tuple[set[str], bool, str]:
        access = load_app_access(parse_args(list(flags)))
        err = capsys.readouterr().err
        assert "ana-secret-1" not in err and "adm1n" not in err and "bo-secret-12" not in err
        return set(access.passwords), access.login(ADMIN, "adm1n-password"), err

    assert accounts("--auth-file", str(team), "--admin-password-file", str(admin)) == ({"ana", ADMIN}, True, "")
    monkeypatch.setenv(AUTH_FILE_ENV, str(team))
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "adm1n-password")
    assert accounts() == ({"ana", ADMIN}, True, "")
    users, is_admin, err = accounts("--auth", "bo:bo-secret-12", "--admin-password", "adm1n-password")
    assert (users, is_admin) == ({"ana", "bo", ADMIN}, True)  # --auth adds to the file's accounts
    assert "warning: --auth puts a password" in err and "warning: --admin-password puts a password" in err
    monkeypatch.delenv(AUTH_FILE_ENV)
    monkeypatch.delenv(ADMIN_PASSWORD_ENV)
    assert accounts() == (set(), False, "")  # no secret anywhere: no logins


@pytest.mark.slow
def test_the_app_warns_about_passwords_on_the_command_line_and_never_prints_one(tmp_path: Path) -> None:
    """app.py with a bad --auth entry and an --admin-password: a warning naming the flags, a one-line
    error naming the entry by position, and neither password anywhere in the output."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "app.py", "--auth", "ana:ana-secret-1", "--auth", ":s3cret-password",
                          "--admin-password", "adm1n-password", "--port", "1"], cwd=repo, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PLAYGROUND_HOME": str(tmp_path / "home")})
    assert run.returncode == 1, run.stderr
    out = run.stdout + run.stderr
    assert "warning: --auth puts a password on the command line" in out
    assert "warning: --admin-password puts a password on the command line" in out
    assert "error: --auth entry 2: expected USER:PASSWORD" in out
    assert "s3cret" not in out and "adm1n" not in out and "ana-secret-1" not in out


def test_without_logins_everyone_is_admin_and_names_are_typed() -> None:
    open_access = Access()
    assert not open_access.enabled and open_access.is_admin(None)
    assert open_access.voter(None, " carol ") == "carol"
    with pytest.raises(PlaygroundError, match="voter name is empty"):
        open_access.voter(None, "  ")


def test_a_voter_votes_under_their_login_and_cannot_do_admin_work(locked_state: AppState) -> None:
    state = locked_state
    with running_app(state, auth=VOTER) as client:
        client.predict(**generate_call("Hi"))
        client.predict("a", [], "mallory", api_name="/vote")  # the typed name is ignored
        assert [v.voter for v in state.store.votes.list()] == ["ana"]
        client.predict("B", "down", "mallory", api_name="/rate")  # a single vote too
        assert [v.voter for v in state.store.single_votes.list()] == ["ana"]
        for api_name, args in [("/export", ("trl", "all_pairs", ".jsonl", False)),
                               ("/train", (1, 0.1, 5e-4, 2, "sigmoid", 0.0, 0.0, 0)),
                               ("/train_rlhf", ("example", "rm-1", "rloo")),
                               ("/serve_checkpoint", (None,)),
                               ("/cancel_training", ())]:
            with pytest.raises(Exception, match="needs the admin role"):
                client.predict(*args, api_name=api_name)
        assert not (state.data_dir / "exports").exists()
        assert state.store.checkpoints.list() == []
        message = client.predict("mallory", "", "", api_name="/undo")[0]  # own last vote, whatever is typed
        assert "Removed single vote" in message and state.store.single_votes.list() == []  # the latest first
        message = client.predict("mallory", "", "", api_name="/undo")[0]
        assert "Removed vote" in message and state.store.votes.list() == []


def test_the_admin_may_export_and_a_wrong_password_gets_no_session(locked_state: AppState) -> None:
    state = locked_state
    with running_app(state, auth=(ADMIN, ADMIN_PASSWORD)) as client:
        client.predict(**generate_call("Hi"))
        client.predict("b", [], "", api_name="/vote")
        path, _ = client.predict("trl", "all_pairs", ".jsonl", False, api_name="/export")
        assert len(Path(path).read_text().splitlines()) == 1 and state.store.votes.list()[0].voter == ADMIN
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own error types for a failed login
            Client(client.src, verbose=False, auth=("ana", "not-her-password"))


EXAMPLE_PROMPTS = Path(__file__).resolve().parent.parent / "docs" / "examples" / "eval-prompts.jsonl"


def test_a_voter_is_refused_every_prompt_set_admin_endpoint(locked_state: AppState) -> None:
    """The voting queue's admin panel through the API as a voter: each call answers "needs the admin
    role" and changes nothing (the Data and Dashboard admin endpoints are covered in test_data_tab)."""
    from gradio_client import handle_file

    state = locked_state
    from playground.data.exchange import import_prompts

    pset = import_prompts(state.store, EXAMPLE_PROMPTS, "team", overlap=1)
    calls = [
        ("/import_prompts", (handle_file(str(EXAMPLE_PROMPTS)), "mine", 1, False)),
        ("/pregenerate", ("team", ["policy", "sft"], 0.0, 8, 0)),
        ("/live_models", ("team", ["policy", "sft"], 0.0, 8, 0)),
        ("/set_overlap", ("team", 3)),
        ("/guidelines", ("team", "# Mine now")),
        ("/progress", ("team",)),
        ("/agreement", ("team",)),
        ("/export_merged", ("trl", "drop")),
    ]
    with running_app(state, auth=VOTER) as client:
        for api_name, args in calls:
            with pytest.raises(Exception, match="needs the admin role"):
                client.predict(*args, api_name=api_name)
        after = state.store.prompt_sets.get("team")
        assert [s.name for s in state.store.prompt_sets.list()] == ["team"]
        assert (after.overlap, after.guidelines, after.models) == (pset.overlap, pset.guidelines, pset.models)
        assert not (state.data_dir / "exports").exists()


# What a voter may call with logins on: generate, vote and rate, read the round, the queue, their own
# votes and the Dashboard (the tables at the voters' rate: service.quotas). Every other endpoint of the
# app is admin work, and must say so to a voter (`test_every_other_endpoint_is_refused_to_a_voter`).
VOTER_SAFE = frozenset({"generate", "round", "stop", "vote", "rate", "skip", "next_item", "queue_skip", "queue_vote",
                        "queue_rate", "votes", "undo", "dashboard", "dashboard_tables"})


def api_calls(demo: Any, upload: Path) -> dict[str, list]:
    """Every endpoint an API client can call (documented or not), by name, with example arguments
    from the app's own API description (`upload` for a file)."""
    from gradio_client import handle_file

    endpoints = demo.get_api_info(all_endpoints=True)["named_endpoints"]
    return {name.removeprefix("/"): [handle_file(str(upload)) if p["component"] == "File" else p["example_input"]
                                     for p in endpoint["parameters"]]
            for name, endpoint in endpoints.items()}


def unguarded(client: Client, calls: dict[str, list]) -> list[str]:
    """The endpoints of `calls` outside VOTER_SAFE that `client` (a voter) is not refused as one."""
    found = []
    for name, args in sorted(calls.items()):
        if name in VOTER_SAFE:
            continue
        try:
            client.predict(*args, api_name=f"/{name}")
        except Exception as exc:
            if "needs the admin role" not in str(exc):
                found.append(f"/{name}: {str(exc)[:200]}")
        else:
            found.append(f"/{name}: answered a voter")
    return found


def test_every_other_endpoint_is_refused_to_a_voter(locked_state: AppState, tmp_path: Path) -> None:
    """The built app is the list: an endpoint added without the admin check (or left out of
    VOTER_SAFE by mistake) fails here, whatever its handler looks like."""
    upload = tmp_path / "rows.jsonl"
    upload.write_text('{"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}\n', encoding="utf-8")
    with running_app(locked_state, auth=VOTER) as client:
        from ui.app import build_demo

        calls = api_calls(build_demo(locked_state), upload)
        assert set(calls) > VOTER_SAFE  # the list names no endpoint that is gone
        assert {"train", "export", "import", "estimate_kl", "run_judge", "import_prompts"} <= set(calls)
        assert unguarded(client, calls) == []
        assert locked_state.store.prompt_sets.list() == [] and locked_state.store.imports.pairs() == []


def test_serving_beyond_this_machine_says_what_others_can_do() -> None:
    from cli.serve import exposure_warning

    assert exposure_warning("127.0.0.1", False, False) == exposure_warning("::1", False, True) == ""
    open_to_all = exposure_warning("0.0.0.0", False, False)
    assert open_to_all.startswith("warning: serving beyond this machine (--host 0.0.0.0) without logins: anyone "
                                  "who can reach it is the admin.")
    for can in ("generate and vote under any name", "train and switch the serving checkpoint", "import data",
                "export every vote", "delete every vote", "load a model from any path", "--auth-file"):
        assert can in open_to_all
    shared = exposure_warning("127.0.0.1", True, True)
    assert shared.startswith("warning: serving beyond this machine (--host 127.0.0.1 --share); users with a login")
    assert "only the 'admin' account can train, import, export" in shared and "without logins" not in shared
