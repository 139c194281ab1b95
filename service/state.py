"""The one explicit app-state object: what a running app (or a script driving the engine) holds.

Several app replicas may share one vote database (and one checkpoint folder on shared storage):
the training lock (`RunLock`) lets one of them train at a time, and `AppState.sync_checkpoints`
brings the checkpoints the others registered, and the one they serve, into this replica.
"""

import json
import logging
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from playground.core.access import Access
from playground.core.beta import DEFAULT_BETA
from playground.core.errors import PlaygroundError
from playground.data.db import LockHolder
from playground.data.store import Store, open_store
from playground.inference.scheduler import Scheduler, SchedulerConfig
from playground.models.catalog import Catalog
from playground.models.checkpoints import complete_checkpoints, read_record
from playground.models.roles import Models, ModelsConfig, Role, load_models
from playground.scoring.scorer import Scorer
from service.quotas import RateLimit, voter_downloads

if TYPE_CHECKING:  # evals imports the engine, not the other way round
    from evals.kl import KLEstimate

log = logging.getLogger(__name__)

SERVING = "serving.json"  # which checkpoint served, in the checkpoint folder of data dirs older than the store's record
KEEP_EXPORTS = 20  # per kind of export (trl, arena, trl-merged, dashboard, …): older ones are deleted


def prune_exports(folder: Path, name: str, keep: int) -> None:
    """Delete all but the newest `keep` exports named `<name>-<YYYYmmdd-HHMMSS>…` in `folder`, each
    with what shares its stem (a `.meta.json` beside it; a folder of tables from older versions)."""
    pattern = re.compile(rf"{re.escape(name)}-\d{{8}}-\d{{6}}(?:-[0-9a-f]{{8}})?(?=\.|$)")
    groups: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            groups.setdefault(match.group(), []).append(path)

    def age(stem: str) -> tuple[str, float]:  # the time in the name, then the files' (within one second)
        return stem[len(name) + 1: len(name) + 16], max(_mtime(p) for p in groups[stem])

    for old in sorted(groups, key=age)[: max(0, len(groups) - keep)]:
        for path in groups[old]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # deleted meanwhile by a concurrent export's pruning
        return 0.0


class RunLock:
    """One training run at a time: in this process (a thread lock) and over every replica and script
    on the same vote database (the store's training lock, let go if its holder dies). `acquire`,
    `release`, `locked` and `with` as on `threading.Lock`; `locked` and Cancel concern this process's run."""

    def __init__(self, store: Store) -> None:
        self._here = threading.Lock()
        self._database = store.database.training_lock()

    def acquire(self, blocking: bool = False) -> bool:
        if not self._here.acquire(blocking):
            return False
        try:
            if self._database.acquire(blocking):
                return True
        except BaseException:
            self._here.release()
            raise
        self._here.release()
        return False

    def release(self) -> None:
        try:
            self._database.release()
        finally:
            self._here.release()

    def locked(self) -> bool:
        return self._here.locked()

    def __enter__(self) -> "RunLock":
        self.acquire(blocking=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def holder(self) -> LockHolder | None:
        """Who holds the database's training lock (this process included); None when nobody does."""
        return self._database.holder()


@dataclass
class AppState:
    models: Models
    scorer: Scorer
    scheduler: Scheduler  # every generation in the app: one continuous batch
    store: Store
    data_dir: Path
    beta: float = DEFAULT_BETA
    access: Access = field(default_factory=Access)  # no logins: a local single-user app
    # The slots' models (roles and attached checkpoints) and the names their weights are rated under.
    catalog: Catalog = field(init=False)
    # A Stop press reaches the running generation of its own browser session through this map.
    stop_events: dict[str, threading.Event] = field(default_factory=dict)
    # One training run at a time, over every replica on the store; Cancel sets the event, the run
    # stops after its current step.
    training: RunLock = field(init=False)
    cancel_training: threading.Event = field(default_factory=threading.Event)
    # KL(π_θ ‖ π_ref) estimated on the fixed prompt set, by checkpoint id (the Dashboard's button).
    kl_estimates: dict[str, "KLEstimate"] = field(default_factory=dict)
    # With logins on, a voter sees only their own votes unless this is set (admin always sees all).
    votes_visible_to_all: bool = False
    # The most pairwise votes one voter may cast in a UTC day (`--max-votes-per-day`); None: no cap.
    max_votes_per_day: int | None = None
    # With logins on, how often each voter may have the Dashboard's tables written (service.quotas).
    voter_downloads: RateLimit = field(default_factory=voter_downloads)
    # The serving checkpoint recorded in the store when this replica last acted on it (served it, or
    # was told to keep its own --policy): `sync_checkpoints` serves the record only when it changes.
    serving_seen: str | None = field(default=None, init=False)
    _sync: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _synced_at: float = field(default=float("-inf"), init=False, repr=False)  # time.monotonic() of the last sync
    _warned: set[str] = field(default_factory=set, init=False, repr=False)  # what was warned about, once

    def __post_init__(self) -> None:
        self.training = RunLock(self.store)
        self.catalog = Catalog(self.models)

    @property
    def checkpoints(self) -> dict[str, Role]:
        """Saved checkpoints, each a named adapter on the policy's PeftModel, by checkpoint id."""
        return self.catalog.checkpoints

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def export_dir(self) -> Path:
        """Where exports and downloads are written; the only data folder the web server may serve."""
        return self.data_dir / "exports"

    def export_path(self, name: str, suffix: str = "") -> Path:
        """A new `exports/<name>-<YYYYmmdd-HHMMSS>-<random><suffix>`, its folder created. The random
        part keeps two exports in one second apart and the name unguessable (the folder is served);
        older exports of the same `name` beyond the newest `KEEP_EXPORTS` are deleted."""
        self.export_dir.mkdir(parents=True, exist_ok=True)
        prune_exports(self.export_dir, name, KEEP_EXPORTS - 1)
        return self.export_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}{suffix}"

    def slot_catalog(self) -> dict[str, Role]:
        """Models a response slot can take, by the name shown to people (`Catalog.slots`)."""
        return self.catalog.slots()

    def rated_name(self, name: str) -> str:
        """The name slot `name` is rated under by its weights at this moment (`Catalog.rated_now`); a
        generated response's comes from the weights that generated it (`Catalog.rated_name`)."""
        return self.catalog.rated_now(name)

    def stop_event(self, session: str) -> threading.Event:
        event = threading.Event()
        self.stop_events[session] = event
        return event

    def serve(self, name: str) -> None:
        """Make checkpoint `name` the serving policy, now and after a restart."""
        self.catalog.serve(name)
        self.remember_serving(name)

    def remember_serving(self, name: str) -> None:
        """Record in the store which checkpoint serves as the policy (only for a checkpoint that is
        complete and registered), so a restart, even after kill -9, serves it again, and the other
        replicas serve it from their next round."""
        self.store.checkpoints.set_serving(name)
        self.serving_seen = name

    def recorded_serving(self) -> str | None:
        """The checkpoint recorded as serving: the store's record, else an older data dir's serving.json."""
        name = self.store.checkpoints.serving()
        if name is not None:
            return name
        try:
            name = json.loads((self.checkpoint_dir / SERVING).read_text(encoding="utf-8")).get("checkpoint")
        except (OSError, ValueError, AttributeError):
            return None
        return name if isinstance(name, str) else None

    def sync_checkpoints(self, max_age: float = 0.0) -> list[str]:
        """Catch up with the other replicas on the store: attach every registered checkpoint not
        attached yet whose folder is complete (the registered path, else this replica's checkpoint
        folder), and serve the checkpoint recorded as serving if the record changed since this
        replica last acted on it. A checkpoint without a complete folder here is skipped with one
        logged warning, never served. Returns the ids attached now. Nothing is read when the last
        sync is less than `max_age` seconds old (many voters start rounds at once)."""
        if self.models.policy.adapter is None:  # checkpoints are adapters on the policy's PeftModel
            return []
        with self._sync:  # rounds start in several threads at once
            if time.monotonic() - self._synced_at < max_age:
                return []
            self._synced_at = time.monotonic()
            attached = []
            for ckpt, registered in self.store.checkpoints.folders().items():
                if ckpt in self.checkpoints:
                    continue
                folder = next((f for f in (registered, self.checkpoint_dir / ckpt)
                               if f.is_dir() and read_record(f) is not None), None)
                if folder is None:
                    self._warn_once(ckpt, f"checkpoint {ckpt}: no complete folder at {registered} or under "
                                          f"{self.checkpoint_dir}; not attached (do the replicas share "
                                          "checkpoint storage?)")
                    continue
                try:
                    self.catalog.attach(folder)
                except PlaygroundError as exc:
                    self._warn_once(ckpt, f"checkpoint {ckpt}: not attached: {exc}")
                    continue
                attached.append(ckpt)
            wanted = self.recorded_serving()
            if wanted != self.serving_seen and wanted in self.checkpoints:
                if self.models.policy.ident != self.checkpoints[wanted].ident:
                    self.catalog.serve(wanted)
                    log.info("serving checkpoint %s, as recorded by another replica", wanted)
                self.serving_seen = wanted
            elif wanted != self.serving_seen and wanted is not None:
                self._warn_once(f"serving {wanted}", f"checkpoint {wanted} is recorded as serving but is not "
                                f"attached here; the policy stays {Path(self.models.policy.source).name}")
        return attached

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def add_checkpoint(self, folder: Path) -> Role:
        """Register a finished checkpoint in the store (again, harmlessly, at every start: a run
        killed between writing and registering is picked up) and make it selectable in the slots."""
        record = read_record(folder) or {}
        self.store.checkpoints.register(folder.name, folder, (record.get("parent") or {}).get("id"), record)
        return self.catalog.attach(folder)


def build_state(cfg: ModelsConfig, data_dir: Path, db_path: str | Path | None = None, beta: float = DEFAULT_BETA,
                access: Access | None = None, votes_visible_to_all: bool = False,
                scheduler: SchedulerConfig | None = None, max_votes_per_day: int | None = None) -> AppState:
    models = load_models(cfg)
    store = open_store(db_path or data_dir / "votes.sqlite")  # a SQLite path or a postgresql:// URL
    state = AppState(models=models, scorer=Scorer(models), scheduler=Scheduler(models, scheduler), store=store,
                     data_dir=data_dir, beta=beta,
                     access=access or Access(), votes_visible_to_all=votes_visible_to_all,
                     max_votes_per_day=max_votes_per_day)
    if models.policy.adapter is not None:  # checkpoints are adapters: they need the policy's PeftModel
        for folder in complete_checkpoints(state.checkpoint_dir):
            state.add_checkpoint(folder)
        if cfg.policy is not None:  # an explicit --policy wins over what served last time, until it changes
            state.serving_seen = state.recorded_serving()
        state.sync_checkpoints()
    return state
