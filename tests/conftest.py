"""Shared fixtures: a tiny random Llama (fast unit tests; `playground.models.tiny`), the real packaged
model (integration), a vote store, and `make_vote`, the one way tests build a Vote."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.postgres import pg_url, postgres_cluster  # noqa: F401  (fixtures: a real PostgreSQL server)

if TYPE_CHECKING:  # imported lazily at run time, like the fixtures' own imports
    from playground.data.store import Store
    from playground.data.votes import Vote

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.pop("PLAYGROUND_DB_URL", None)  # a developer's team database is never the tests'


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the real model and in a real browser are slow by nature: `-m "not slow"` leaves them
    out without every such test repeating the mark."""
    for item in items:
        if item.get_closest_marker("integration") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from playground.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty data directory for one test."""
    monkeypatch.setenv("PLAYGROUND_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted once into the shared data directory (make test
    does the conversion before pytest starts, so this is a cache hit there)."""
    from playground.core.home import data_dir
    from playground.models.gguf_convert import ensure_default_model

    return ensure_default_model(data_dir() / "models")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where `store` keeps its database (a test may open a second connection to it)."""
    return tmp_path / "votes.sqlite"


@pytest.fixture
def store(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Store]:
    """An empty vote store of its own for one test: SQLite at `db_path`, or PostgreSQL (tests/postgres.py)."""
    from playground.data.store import open_store

    with open_store(request.getfixturevalue("pg_url") if getattr(request, "param", "") == "postgres" else db_path) as s:
        yield s


PROMPT = [{"role": "user", "content": "Hi?"}]  # make_vote's default prompt


def make_vote(models: Sequence[str] = ("sft", "policy"), outcome: str = "a", *, texts: Sequence[str] | None = None,
              scores: Sequence[dict[str, float]] | None = None, rated_as: Sequence[str] | None = None,
              prompt: list[dict[str, str]] = PROMPT, voter: str = "ana", **fields: Any) -> Vote:
    """A Vote comparing `models` in the order shown: response i is `texts[i]` (default "<model> says
    <i>"), `scores[i]` (default none) and rated as `rated_as[i]` (default None: as shown). `fields`
    are the Vote's other fields (ranking, settings, created_at, anonymous, item …)."""
    from playground.data.votes import Response, Vote

    texts = texts if texts is not None else [f"{m} says {i}" for i, m in enumerate(models)]
    scores = scores if scores is not None else [{} for _ in models]
    rated = rated_as if rated_as is not None else [None] * len(models)
    responses = tuple(Response(*args) for args in zip(models, texts, scores, rated, strict=True))
    return Vote(prompt=prompt, responses=responses, outcome=outcome, voter=voter, **fields)


VOTER, ADMIN_PASSWORD = ("ana", "ana-secret-1"), "admin-secret-1"  # the accounts of `locked_state`
# The random tiny model's greedy text is whitespace: tests sample instead, seeded.
SAMPLED = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 6, "repetition_penalty": 1.0, "seed": 3}
SLOT_NAMES = ("model_a", "model_b", "model_c", "model_d")


def generate_call(prompt: str, models: tuple[str, ...] = ("policy", "reference"), *, system: str = "",
                  mode: str = "Side by side", beta: float = 0.1, **settings: float) -> dict:
    """`/generate`'s arguments by keyword, for `client.predict(**…)` / `client.submit(**…)`: k is the
    number of `models` (unused slots get "sft"), generation settings are SAMPLED unless overridden."""
    slots = dict(zip(SLOT_NAMES, (*models, *("sft",) * (len(SLOT_NAMES) - len(models))), strict=True))
    return {"prompt": prompt, "system": system, "k": len(models), "mode": mode, **slots, **SAMPLED, **settings,
            "beta": beta, "api_name": "/generate"}


@pytest.fixture
def tiny_state(tiny_model_dir: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """An AppState on the tiny model with an empty data directory, no logins (-> AppState)."""
    from playground.models.roles import ModelsConfig
    from service.state import build_state

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home)
    yield state
    state.store.close()


@pytest.fixture
def locked_state(tiny_model_dir: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """`tiny_state` with logins on: the voter VOTER and the admin (password ADMIN_PASSWORD)."""
    from playground.core.access import load_access
    from playground.models.roles import ModelsConfig
    from service.state import build_state

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home,
                        access=load_access([":".join(VOTER)], None, ADMIN_PASSWORD))
    yield state
    state.store.close()


@pytest.fixture
def tiny_app(tiny_state) -> Iterator:
    """`tiny_state` served on a local port, with a client (-> (AppState, gradio_client.Client))."""
    with running_app(tiny_state) as client:
        yield tiny_state, client


@contextmanager
def running_app(state, auth: tuple[str, str] | None = None) -> Iterator:  # (AppState) -> gradio_client.Client
    """Serve `state`'s app on a free local port and yield a client with its own session (logged in
    as `auth` = (user, password) when the state has logins)."""
    from gradio_client import Client

    from ui.app import build_demo, launch_kwargs

    demo = build_demo(state)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs(state))
    client = Client(demo.local_url, verbose=False, auth=auth)
    try:
        yield client
    finally:
        client.close()
        demo.close()
        state.store.close()
