"""How often one person may ask for an expensive action: a sliding window per login name.

With logins on, a voter may still download the Dashboard's tables (they are aggregates, read on the
page anyway), but each download computes a report and writes a zip into the served exports folder,
whose pruning keeps only the newest few: a voter clicking on and on would take the server's time and
push out the admin's latest zip. The admin (everyone, without logins) is not limited.
"""

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from playground.core.errors import PlaygroundError

VOTER_DOWNLOADS = 2  # zips a voter may have written per DOWNLOAD_WINDOW
DOWNLOAD_WINDOW = 60.0  # seconds


class RateLimit:
    """At most `limit` actions per key in any `window` seconds; thread-safe (handlers run on
    Gradio's worker threads). Memory: one short deque per key ever seen, and keys are login names."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, action: str) -> None:
        """Count one `action` for `key`, or raise `PlaygroundError` (saying when to try again) if
        `key` already had `limit` of them in the last `window` seconds."""
        now = self._clock()
        with self._lock:
            times = self._times.setdefault(key, deque())
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.limit:
                wait = math.ceil(times[0] + self.window - now)
                raise PlaygroundError(f"{action}: at most {self.limit} every {self.window:g} s for a voter; "
                                      f"try again in {wait} s")
            times.append(now)


def voter_downloads() -> RateLimit:
    return RateLimit(VOTER_DOWNLOADS, DOWNLOAD_WINDOW)
