"""The per-chat and per-user commands: /model and /k (the chat's settings), /history and /forget (the user's
history), and /stats for admins. Texts included; the handlers (bot/handlers/commands.py) parse and reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.admission import Admissions
from bot.db import HistoryItem
from bot.follow_store import FollowStore
from bot.lookups import LookupStore
from bot.runtime import BotRuntime
from engine import MODEL_NAMES
from engine.backends import BACKENDS

FORGET_WAITS = "Your photo is still being searched: I'll delete your history once it's answered."


class ChatCommands:
    """Over the runtime; `admissions` holds the users' search leases (/forget waits for a search under way), and
    `reindexing()` says how the running /reindex goes (for /stats; None when none runs)."""

    def __init__(self, runtime: BotRuntime, admissions: Admissions, reindexing: Callable[[], str | None]):
        self.rt = runtime
        self.admissions = admissions
        self.reindexing = reindexing
        self.audit: Callable[[], Awaitable[list[str]]] | None = None  # /stats' per-day audit lines (invites)
        self.watching: Callable[[], str | None] | None = None  # /stats' watched-gallery line (None: not watching)
        # what other flows forget of a user at /forget: templates still waiting in their memory (/follow, /optout)
        self.forgetting: list[Callable[[int], Awaitable[None]]] = []

    async def model_lines(self, chat_id: int) -> str:
        """/model: the chat's backend and every registered one, with why it is unavailable."""
        rt = self.rt
        current, _ = await rt.chat_settings(chat_id)
        problems = await rt.db(lambda: {name: rt.engine.model_problem(name) for name in MODEL_NAMES})
        lines = [f"Current backend: {current}", "Backends:"]
        for name in MODEL_NAMES:
            problem = problems[name]
            state = "available" if problem is None else f"unavailable — {rt.public(problem)}"
            lines.append(f"• {name}: {BACKENDS[name].description} — {state}")
        lines.append("Switch with /model <name>.")
        return "\n".join(lines)

    async def set_model(self, chat_id: int, model: str) -> str:
        """/model name: switch the chat's backend (refused when it is unavailable)."""
        rt = self.rt
        problem = await rt.db(rt.engine.model_problem, model)
        if problem:
            return f"Can't switch to {model}: {rt.public(problem)}"
        await rt.db(rt.store.set_chat_model, chat_id, model)
        indexed = await rt.db(rt.engine.index_info, model)
        note = "" if indexed else f" (no {model} index yet: an admin can build it with /reindex {model})"
        return f"Backend switched to {model}{note}."

    async def set_k(self, chat_id: int, k: int) -> None:
        await self.rt.db(self.rt.store.set_chat_k, chat_id, k)

    async def history(self, chat_id: int, user_id: int) -> list[HistoryItem]:
        return await self.rt.db(self.rt.store.history, chat_id, user_id, self.rt.settings.history_size)

    async def forget(self, user_id: int, chat_id: int) -> int:
        """The user's queries in every chat, their buttons (their photos' file_ids) and album parts. Holds the
        user's search lease: a search under way is answered (and recorded) first, then deleted with the rest."""
        rt = self.rt

        async def waiting() -> None:
            await rt.sender.text(chat_id, FORGET_WAITS)

        async with self.admissions.user_lease(user_id, waiting):
            count = await rt.db(rt.store.forget_user, user_id)
            await rt.db(rt.state.forget_user, user_id)
            await rt.db(FollowStore(rt.store).forget_user, user_id)  # a follower's template, outbox and agreement
            await rt.db(LookupStore(rt.store).forget_user, user_id)  # whom they looked up (the day's count stays)
            for forget in self.forgetting:
                await forget(user_id)
        return count

    async def stats(self) -> str:
        """/stats: index sizes, usage since ever and since this start, the device, the running /reindex."""
        rt = self.rt
        sizes = await rt.db(lambda: {name: rt.engine.index_info(name) for name in MODEL_NAMES})
        lines = ["Indexes:"]
        for name, info in sizes.items():
            rows = "faces" if BACKENDS[name].embeds_faces else "images"
            lines.append(f"• {name}: {info.count} {rows} indexed" if info else f"• {name}: no index")
        figures = await rt.db(rt.store.stats)
        median = f"{figures.median_latency_ms:.0f} ms" if figures.median_latency_ms is not None else "n/a"
        lines.append(f"Queries: {figures.queries} from {figures.users} users; median latency {median}")
        m = rt.metrics  # the numbers /metrics serves, since this start
        errors = ", ".join(f"{kind} {count:.0f}" for kind, count in sorted(m.errors_by_kind().items())) or "none"
        lines.append(
            f"Since start: {m.value('facesearch_photos_searched_total'):.0f} photos searched, "
            f"{m.value('facesearch_faces_found_total'):.0f} faces found, queue {self.admissions.pending}/"
            f"{rt.settings.max_queue}; errors: {errors}"
        )
        lines.append(f"Embedding on: {await rt.db(rt.engine.device.describe)}")
        reindexing = self.reindexing()
        if reindexing is not None:
            lines.append(reindexing)
        if self.watching is not None and (watching := self.watching()) is not None:
            lines.append(watching)
        if self.audit is not None:
            lines += await self.audit()
        return "\n".join(lines)
