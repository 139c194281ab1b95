"""The one explicit app-state object: what a running app (or a script driving the engine) holds."""

import threading
from dataclasses import dataclass, field
from pathlib import Path

from playground.models import Models, ModelsConfig, Role, load_models
from playground.scoring import Scorer
from playground.store import Store


@dataclass
class AppState:
    models: Models
    scorer: Scorer
    store: Store
    data_dir: Path
    beta: float = 0.1
    # A Stop press reaches the running generation of its own browser session through this map.
    stop_events: dict[str, threading.Event] = field(default_factory=dict)

    def slot_catalog(self) -> dict[str, Role]:
        """Models a response slot can take, by the name shown to people."""
        return self.models.roles()

    def stop_event(self, session: str) -> threading.Event:
        event = threading.Event()
        self.stop_events[session] = event
        return event


def build_state(cfg: ModelsConfig, data_dir: Path, db_path: Path | None = None, beta: float = 0.1) -> AppState:
    models = load_models(cfg)
    store = Store(db_path or data_dir / "votes.sqlite")
    return AppState(models=models, scorer=Scorer(models), store=store, data_dir=data_dir, beta=beta)
