"""How many of an event's handlers run at once, for events that generate.

Generation itself is batched across sessions by the scheduler (`playground.inference.scheduler`), so
Gradio may run many generating handlers at once: each mostly waits for its rows' next tokens. As
many handlers as the batch has rows is enough to keep it full (a round has k ≥ 2 rows); more would
only wait inside the scheduler while holding a worker thread, so they wait in Gradio's queue
instead. A waiting handler holds one of Gradio's worker threads, hence `worker_threads` above it.
With `--serial` they take turns, one at a time, as before the scheduler.
"""

from service.state import AppState

FREE_THREADS = 40  # Gradio's default pool, kept for every event that does not generate


def generating(state: AppState) -> dict:
    """`concurrency_id`/`concurrency_limit` for an event whose handler generates."""
    if state.scheduler.cfg.serial:
        return {"concurrency_id": "model"}  # the queue's default limit: 1
    return {"concurrency_id": "generate", "concurrency_limit": state.scheduler.cfg.max_batch}


def worker_threads(state: AppState) -> int:
    """Gradio's worker threads (`launch(max_threads=…)`): the generating handlers' plus the usual."""
    return state.scheduler.cfg.max_batch + FREE_THREADS
