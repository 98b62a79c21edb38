"""Admission to the worker pool, shared by every flow that searches or marks photos: one search per user at a time
across replicas (a lease in the database), and at most MAX_QUEUE photos waiting in this replica (back-pressure:
refused before anything is downloaded). `Admissions.pending` is what the queue gauge and /stats show."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from bot.runtime import BotRuntime

STILL_WORKING = "I'm still working on your previous photo — please wait for its answer before sending another."
BUSY = "I'm busy with other people's photos right now — please try again in a minute."
USER_LEASE = timedelta(minutes=10)  # a replica that dies mid-search frees its user after this
LEASE_POLL_S = 0.25  # how often a /forget waiting for the user's search looks at the lease (any replica may hold it)


@dataclass
class Admission:
    refusal: str | None = None
    released: bool = False
    keys: list[str] = field(default_factory=list)
    reserved: int = 0  # queue places this admission holds until its photos are searched


class Admissions:
    """The user leases and the queue bound of one replica."""

    def __init__(self, runtime: BotRuntime):
        self.rt = runtime
        self.pending = 0  # photos accepted and not yet searched (waiting for or in the pool), this replica

    @asynccontextmanager
    async def admit(self, user_id: int, photos: int) -> AsyncIterator[Admission]:
        """One search per user at a time across replicas (a lease in the database), and at most MAX_QUEUE photos
        waiting in this replica; `refusal` says why not. `release()` lets the user's next photo in early."""
        rt, admission = self.rt, Admission()
        key = f"user:{user_id}"
        if not await rt.db(rt.state.lease, key, USER_LEASE):
            admission.refusal = STILL_WORKING
            yield admission
            return
        # back-pressure: refuse before downloading (an album larger than the queue only goes into an empty one)
        if self.pending and self.pending + photos > rt.settings.max_queue:
            rt.metrics.busy.inc(photos)
            rt.metrics.error("busy")
            admission.refusal = BUSY
            await rt.db(rt.state.release, key)
            yield admission
            return
        admission.keys.append(key)
        # the places are taken now, not when the search starts: photos of one getUpdates batch are admitted
        # concurrently, and each must see the others'
        self.pending += photos
        admission.reserved = photos
        try:
            yield admission
        finally:
            self.unreserve(admission)
            await self.release(admission)

    @asynccontextmanager
    async def user_lease(self, user_id: int, waiting: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
        """The user's search lease, held by the block (`/forget`): while the user's search runs (on any replica),
        `waiting()` is called once and the lease is waited for, so nothing of that search is recorded after it."""
        rt, key = self.rt, f"user:{user_id}"
        waited = False
        while not await rt.db(rt.state.lease, key, USER_LEASE):
            if not waited:
                waited = True
                await waiting()
            await asyncio.sleep(LEASE_POLL_S)
        try:
            yield
        finally:
            await rt.db(rt.state.release, key)

    def hold(self, admission: Admission, places: int) -> None:
        """The admission holds `places` queue places from now on (more or fewer than it held)."""
        self.pending += places - admission.reserved
        admission.reserved = places

    def unreserve(self, admission: Admission) -> None:
        """Give back the queue places of an admission whose photos are searched (idempotent)."""
        self.pending -= admission.reserved
        admission.reserved = 0

    async def release(self, admission: Admission) -> None:
        """Free the admission's user lease (idempotent): the user's next photo may come in."""
        if not admission.released:
            admission.released = True
            for key in admission.keys:
                await self.rt.db(self.rt.state.release, key)
