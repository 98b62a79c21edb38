"""Who was told they are not on the allow-list: at most one notice per user per REFUSAL_INTERVAL_S, in bounded memory.

Per process: each replica tells a stranger at most once per period (N replicas: at most N notices per period).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

MAX_REMEMBERED = 10_000  # strangers remembered at once; past it the oldest are forgotten (and may be told again)


class RefusalNotices:
    """`first(user_id)`: True when this user was not told within the last `interval_s` (and now counts as told).

    `interval_s` 0: every refused update is answered. `timer` is the clock (seconds), monotonic by default.
    """

    def __init__(self, interval_s: float, max_users: int = MAX_REMEMBERED, timer: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._told: TTLCache[int, bool] | None = (
            TTLCache(maxsize=max_users, ttl=interval_s, timer=timer) if interval_s > 0 else None
        )

    def first(self, user_id: int) -> bool:
        if self._told is None:
            return True
        if user_id in self._told:  # an expired entry is not `in` the cache
            return False
        self._told[user_id] = True
        return True

    def __len__(self) -> int:
        return len(self._told) if self._told is not None else 0
