"""How many of an event's handlers run at once, for events that generate.

Generation itself is batched across sessions by the scheduler (`playground.scoring.scheduler`), so
Gradio may run many generating handlers at once: each mostly waits for its rows' next tokens. A
handler that waits holds one of Gradio's worker threads, hence `WORKER_THREADS` above it. With
`--serial` they take turns, one at a time, as before the scheduler.
"""

from service.state import AppState

GENERATING_HANDLERS = 128  # /generate, /next_item, … running at once; more wait in Gradio's queue
WORKER_THREADS = GENERATING_HANDLERS + 40  # Gradio's default 40 stay free for every other event


def generating(state: AppState) -> dict:
    """`concurrency_id`/`concurrency_limit` for an event whose handler generates."""
    if state.scheduler.cfg.serial:
        return {"concurrency_id": "model"}  # the queue's default limit: 1
    return {"concurrency_id": "generate", "concurrency_limit": GENERATING_HANDLERS}
