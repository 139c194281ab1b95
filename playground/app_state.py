"""The one explicit app-state object: what a running app (or a script driving the engine) holds."""

from dataclasses import dataclass
from pathlib import Path

from playground.models import Models, ModelsConfig, Role, load_models
from playground.scoring import Scorer


@dataclass
class AppState:
    models: Models
    scorer: Scorer
    data_dir: Path
    beta: float = 0.1

    def slot_choices(self) -> dict[str, Role]:
        """Models a response slot can take, by the name shown to people."""
        return self.models.roles()


def build_state(cfg: ModelsConfig, data_dir: Path, beta: float = 0.1) -> AppState:
    models = load_models(cfg)
    return AppState(models=models, scorer=Scorer(models), data_dir=data_dir, beta=beta)
