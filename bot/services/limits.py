"""Looking people up has limits (issue 22): a non-admin may look up at most MAX_PERSONS_PER_DAY distinct persons in
24 hours (rolling).

Each searched face counts once, as the person it is answered with: the identity named (people layout) or the face's
registry person (photos layout); a face answered "not in the gallery" (no name, no person) counts as a lookup of its
own. Past the limit, a face of a person not looked up in the last 24 hours is dropped from the answer before anything
of it is sent or recorded, and the user told "try again in N hours". The same person again is admitted; More photos
and followed deliveries never come here. The flows call `limit` where a search's faces become an answer (the search
flow's `_answer`, for both layouts, and the selfies' fused answer).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from bot.invites import REFUSAL, InviteStore
from bot.lookups import LookupDecision, LookupStore, person_key_hash
from bot.queries import Searched
from bot.runtime import BotRuntime
from engine.types import FaceResult

LIMIT_REFUSAL = "lookup_limit"  # the refusal's reason in /metrics (facesearch_access_refusals)


@dataclass
class Limited:
    """The searched photos with the refused faces dropped, and how many faces were refused."""

    found: list[Searched]
    refused: int = 0


def person_of(model: str, face: FaceResult) -> str:
    """The hashed key of the person a face is answered with; a face found nowhere gets a key of its own."""
    if face.photos is not None:  # the photos layout: the registry person of its photos, else its best gallery face
        persons = [face.person] + [photo.person for photo in face.photos]
        known = next((p for p in persons if p is not None), None)
        best = face.photos[0] if face.photos else None
        person = f"#{known.id}" if known else f"face:{best.path}:{best.box}" if best else None
    else:
        person = face.identity.name
    return person_key_hash(model, person if person is not None else "unknown:" + secrets.token_hex(16))


def refusal_text(limit: int, hours: int) -> str:
    people = "person" if limit == 1 else "people"
    return f"You have looked up {limit} {people} today; try again in {hours} hour{'s' if hours != 1 else ''}."


class LookupLimits:
    """The per-day limit over the runtime's history database."""

    def __init__(self, runtime: BotRuntime):
        self.rt = runtime

    def applies(self, user_id: int) -> bool:
        return self.rt.settings.max_persons_per_day > 0 and not self.rt.settings.is_admin(user_id)

    async def admit(self, user_id: int, keys: Sequence[str]) -> LookupDecision:
        """The keys admitted (stored as looked up) for `user_id`; all of them for an admin or without a limit."""
        if not self.applies(user_id):
            return LookupDecision(frozenset(keys))
        rt = self.rt
        return await rt.db(LookupStore(rt.store).admit, user_id, list(keys), rt.settings.max_persons_per_day)

    async def limit(self, user_id: int, model: str, found: Sequence[Searched], notes: list[str]) -> Limited:
        """Drop the faces of persons past the user's limit (a note says when to try again; the refusal counted)."""
        if not self.applies(user_id):
            return Limited(list(found))
        keyed = [(item, [person_of(model, f) for f in (item.result.faces if item.result else [])]) for item in found]
        decision = await self.admit(user_id, [key for _, keys in keyed for key in keys])
        limited = Limited([])
        for item, keys in keyed:
            if item.result is None:
                limited.found.append(item)
                continue
            kept = [face for face, key in zip(item.result.faces, keys, strict=True) if key in decision.allowed]
            refused = len(keys) - len(kept)
            limited.refused += refused
            result = dataclasses.replace(item.result, faces=kept) if refused else item.result
            limited.found.append(dataclasses.replace(item, result=result))
        if limited.refused:
            rt = self.rt
            text = refusal_text(rt.settings.max_persons_per_day, decision.retry_hours)
            if limited.refused < sum(len(keys) for _, keys in keyed):
                many = limited.refused > 1
                text = f"{limited.refused} face{'s' if many else ''} not shown: " + text[0].lower() + text[1:]
            notes.append(text)
            rt.metrics.refusals.labels(reason=LIMIT_REFUSAL).inc(limited.refused)
            invites = InviteStore(rt.store)
            for _ in range(limited.refused):
                await rt.db(invites.count, REFUSAL)
        return limited

    async def forget(self, user_id: int) -> None:
        """/forget: whom the user looked up goes; the count stays until the 24 hours pass (else /forget would lift the
        limit)."""
        await self.rt.db(LookupStore(self.rt.store).forget_user, user_id)

    async def purge(self) -> int:
        return await self.rt.db(LookupStore(self.rt.store).purge)
