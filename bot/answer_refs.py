"""Which person an answer message shows, kept in the history database, keyed by chat and message id.

The photos layout's answers (bot/services/photos_answer.py) record, for each message they send (an album photo with a
face marked, the summary), the person of the registry it shows; an admin's `/name Firstname Lastname` sent as a
reply to one of them finds that person here (bot/services/persons.py), in any replica and after a restart.

Rows live in `button_states` (kind "answer", the token `a:<chat>:<message>`), so they expire with the other
button states (STATE_TTL_HOURS) and go with the asker's `/forget`. Every method blocks: call them through the
service's executor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

from bot.db import ButtonState, HistoryStore, utcnow
from bot.state import _aware

KIND = "answer"


@dataclass(frozen=True)
class ShownPerson:
    """A person of the registry as an answer showed it (the name may have changed since)."""

    id: int
    name: str | None


@dataclass(frozen=True)
class AnswerRef:
    """What one answer message shows: the persons of its faces (one for an album photo, one per face for a
    summary); None where a face is not (yet) a person."""

    chat_id: int
    message_id: int
    persons: list[ShownPerson | None] = field(default_factory=list)

    def to_payload(self) -> dict:
        return {"persons": [None if p is None else {"id": p.id, "name": p.name} for p in self.persons]}


def token(chat_id: int, message_id: int) -> str:
    return f"a:{chat_id}:{message_id}"


class AnswerRefs:
    def __init__(self, store: HistoryStore, ttl: timedelta):
        self.sessions = store.sessions
        self.ttl = ttl

    def put(self, user_id: int, refs: list[AnswerRef]) -> None:
        """Record the messages of one answer (a message recorded again is replaced)."""
        now = utcnow()
        with self.sessions.begin() as session:
            for ref in refs:
                row = session.get(ButtonState, token(ref.chat_id, ref.message_id))
                if row is not None:
                    session.delete(row)
                    session.flush()
                session.add(
                    ButtonState(
                        token=token(ref.chat_id, ref.message_id),
                        kind=KIND,
                        chat_id=ref.chat_id,
                        user_id=user_id,
                        payload=json.dumps(ref.to_payload()),
                        created_at=now,
                        expires_at=now + self.ttl,
                    )
                )

    def get(self, chat_id: int, message_id: int) -> AnswerRef | None:
        """The answer message's persons; None when it is not an answer of the photos layout, or expired."""
        with self.sessions() as session:
            row = session.get(ButtonState, token(chat_id, message_id))
            if row is None or row.kind != KIND or _aware(row.expires_at) <= utcnow():
                return None
            payload = json.loads(row.payload)
        persons = [None if p is None else ShownPerson(int(p["id"]), p["name"]) for p in payload["persons"]]
        return AnswerRef(chat_id, message_id, persons)
