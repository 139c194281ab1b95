"""The playground driven through gradio_client exactly as the page drives it."""

import sqlite3
from pathlib import Path

import pytest
from gradio_client import Client

from playground.inference.generation import generate
from playground.inference.settings import GenerationSettings
from playground.models.checkpoints import set_policy_weights
from playground.models.roles import adapter_params
from service.state import AppState
from tests.conftest import generate_call

GREEDY = {"temperature": 0.0, "top_p": 0.9, "top_k": 50, "seed": 0}
# /generate's outputs: the status, then the 4 texts. /round's: 4 headers, 4 texts, 4 score tables,
# 4 per-token views, the preference table.
TEXTS, HEADERS, SCORES, PREFERENCES = slice(1, 3), slice(0, 4), slice(8, 12), 16


@pytest.fixture
def app(tiny_app: tuple[AppState, Client]) -> tuple[AppState, Client]:
    return tiny_app


def test_generate_streams_the_engines_reply_then_a_vote_is_stored(app: tuple[AppState, Client]) -> None:
    state, client = app
    job = client.submit(**generate_call("Say hi.", **GREEDY))
    job.result(timeout=120)
    updates = job.outputs()
    assert len(updates) >= 3  # streamed: a start, token steps, the scored end
    expected = generate(state.scheduler, [state.models.policy, state.models.reference],
                        [{"role": "user", "content": "Say hi."}], GenerationSettings(temperature=0, max_new_tokens=6))
    final = updates[-1]  # the status, 4 texts (the round's state is not part of the API)
    assert list(final[TEXTS]) == expected
    statuses = [update[0] for update in updates]
    assert statuses[-2:] == ["Scoring…", "Vote below."] and set(statuses[:-2]) == {"Generating…"}
    shown = client.predict(api_name="/round")  # what the page shows next, from the scored round
    assert list(shown[HEADERS]) == ["### Response A · `policy`", "### Response B · `reference`", "### Response C",
                                    "### Response D"]
    assert list(shown[4:6]) == expected and "implicit reward" in shown[SCORES][0] and shown[SCORES][2] == ""
    assert "P(row ≻ column)" in shown[PREFERENCES]

    result = client.predict("b", [], "ana", api_name="/vote")
    assert "stored" in str(result)
    [vote] = state.store.votes.list()
    assert vote.outcome == "b" and vote.voter == "ana"
    assert [r.model for r in vote.responses] == ["policy", "reference"]
    assert [r.text for r in vote.responses] == expected
    assert vote.responses[0].scores["reward"] == 0.0  # fresh adapter: policy = reference
    assert vote.settings["seed"] == 0 and vote.settings["beta"] == 0.1

    with pytest.raises(Exception, match="already has a vote"):
        client.predict("a", [], "ana", api_name="/vote")
    db = sqlite3.connect(state.store.database.path)
    assert db.execute("SELECT COUNT(*) FROM votes").fetchone() == (1,)


def test_ranking_votes_anonymous_refusal_export_import_and_undo(app: tuple[AppState, Client], tmp_path: Path) -> None:
    from gradio_client import handle_file

    state, client = app
    client.predict(**generate_call("Write a poem.", ("policy", "reference", "sft"), system="Be short."))
    with pytest.raises(Exception, match="Rank all 3 responses"):
        client.predict("ranking", ["B", "A"], "bo", api_name="/vote")
    client.predict("ranking", ["C", "A", "B"], "bo", api_name="/vote")
    [vote] = state.store.votes.list()
    assert vote.ranking == (2, 0, 1) and [r.model for r in vote.responses] == ["policy", "reference", "sft"]
    assert vote.prompt[0] == {"role": "system", "content": "Be short."}

    # Anonymous: refused while the policy is fresh (it is the SFT model: one model, nothing to battle).
    with pytest.raises(Exception, match="needs two different models"):
        client.predict(**generate_call("Hi", ("sft", "sft"), mode="Anonymous battle", **GREEDY))
    models = state.models  # new policy weights, published as a finished training run does
    set_policy_weights(models, {n: p.detach() + 0.5 if "lora_B" in n else p.detach()
                                for n, p in adapter_params(models.policy.model).items()},
                       "trained", f"{models.sft.ident}+trained")
    # Names hidden until the vote. SFT and reference share weights, so it is policy vs one of them.
    job = client.submit(**generate_call("Hi", ("sft", "sft"), mode="Anonymous battle", **GREEDY))
    job.result(timeout=120)
    assert list(client.predict(api_name="/round")[0:2]) == ["### Response A", "### Response B"]
    after = client.predict("tie", [], "bo", api_name="/vote")  # the status names the models now
    assert "policy" in after and ("sft" in after or "reference" in after)
    revealed = " ".join(client.predict(api_name="/round")[0:2])
    assert "policy" in revealed and ("sft" in revealed or "reference" in revealed)
    battle = state.store.votes.list()[-1]
    assert battle.anonymous and {r.model for r in battle.responses} & {"policy"}
    state.store.undo_last_vote("bo")

    exported, _ = client.predict("trl", "all_pairs", ".jsonl", False, api_name="/export")
    lines = Path(exported).read_text().splitlines()
    assert len(lines) == 3  # a full ranking of 3 gives 3 preference pairs
    client.predict(handle_file(exported), api_name="/import")
    assert len(state.store.imports.pairs()) == 3

    table = client.predict("", "", api_name="/votes")[0]
    assert [row[2] for row in table["data"]] == ["bo"]
    message = client.predict("bo", "", "", api_name="/undo")[0]
    assert f"Removed vote #{vote.id}" in message
    assert state.store.votes.list() == []


def test_two_sessions_keep_their_own_rounds(app: tuple[AppState, Client]) -> None:
    state, client = app
    other = Client(client.src, verbose=False)
    try:
        jobs = [c.submit(**generate_call(prompt)) for c, prompt in ((client, "First?"), (other, "Second?"))]
        for job in jobs:
            job.result(timeout=120)
        client.predict("a", [], "ana", api_name="/vote")
        other.predict("b", [], "bo", api_name="/vote")
    finally:
        other.close()
    votes = {v.voter: v for v in state.store.votes.list()}
    assert votes["ana"].prompt[-1]["content"] == "First?" and votes["ana"].outcome == "a"
    assert votes["bo"].prompt[-1]["content"] == "Second?" and votes["bo"].outcome == "b"


def test_the_header_says_a_fresh_policy_is_the_sft_model(tiny_state: AppState) -> None:
    from ui.app import header

    models = tiny_state.models
    assert "policy equal to SFT until trained" in header(tiny_state)
    weights = {n: p.detach() + 0.01 for n, p in adapter_params(models.policy.model).items()}
    set_policy_weights(models, weights, "/runs/dpo-1", f"{models.sft.ident}+dpo-1")
    assert "policy `dpo-1`" in header(tiny_state) and "equal to SFT" not in header(tiny_state)
