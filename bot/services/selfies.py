"""Several selfies, one person (photos layout): an album of 2-5 photos that each show one dominant face is one query.

The faces are fused into one template (engine/search/fusion.py: each must match the mean of the others) and
searched with the same decision as a single face (Searcher.photos_for); the answer is one face's answer ("appears in
N photos", albums of marked photos, More photos, the history), made by the photos layout's answer. Selfies of
different people are refused, with nothing else answered. Any other album (a group photo in it, a photo without a
face, 6 or more photos, the people layout) is answered as before, photo by photo: `fused_answer` returns the
photos it downloaded so that they are not downloaded again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from telegram.error import BadRequest

from bot.admission import Admission, Admissions
from bot.delivery import download
from bot.queries import PhotoIn, Searched
from bot.runtime import BotRuntime
from engine import EngineError, SearchResult
from engine.backends import BACKENDS
from engine.search.fusion import MAX_SELFIES, DifferentPeopleError, dominant_face, fuse
from engine.types import FaceResult

MIN_SELFIES = 2


@dataclass(frozen=True)
class Selfie:
    """The dominant face of one photo of the album: its box and its query vector."""

    box: tuple[int, int, int, int]
    confidence: float
    vector: np.ndarray


@dataclass
class SelfiesOutcome:
    """`answered`: the album got its answer (fused, or refused as different people); otherwise `data` holds the
    photos downloaded so far (file_id -> bytes), for the photo-by-photo search."""

    answered: bool
    data: dict[str, bytes] = field(default_factory=dict)


class AnswerFlow(Protocol):
    """The photos layout's answer, as this flow uses it (bot/services/photos_answer.py PhotosAnswer)."""

    def places(self, results: Sequence[SearchResult], k: int) -> int: ...

    async def answer(
        self,
        chat_id: int,
        user_id: int,
        model: str,
        k: int,
        found: Sequence[Searched],
        notes: list[str],
        album: bool,
        started: float,
        release: Callable[[], Awaitable[None]],
    ) -> None: ...


class LimitedFound(Protocol):
    refused: int


class LookupLimiter(Protocol):
    """The per-day lookup limit (bot/services/limits.py), as this flow uses it."""

    async def limit(self, user_id: int, model: str, found: Sequence[Searched], notes: list[str]) -> LimitedFound: ...


class OptOutFilter(Protocol):
    """Opted-out people taken out of an answer (bot/services/optouts.py), as this flow uses it."""

    async def filter(self, model: str, found: Sequence[Searched], notes: list[str]) -> list[Searched]: ...


class SelfieSearch:
    """Albums of selfies searched as one person, over the runtime; `admissions` is the search flow's."""

    def __init__(
        self,
        runtime: BotRuntime,
        admissions: Admissions,
        photos_answer: AnswerFlow,
    ):
        self.rt = runtime
        self.admissions = admissions
        self.photos_answer = photos_answer
        self.limits: LookupLimiter | None = None  # MAX_PERSONS_PER_DAY (bot/services/limits.py), set at wiring time
        self.optouts: OptOutFilter | None = None  # /optout (bot/services/optouts.py), set at wiring time

    async def download(self, file_id: str) -> bytes:
        try:
            return await download(self.rt.sender.bot, file_id, self.rt.settings.send_retries)
        except BadRequest as error:
            raise EngineError(f"Telegram would not give me the file ({error.message})") from error

    def applies(self, model: str, photos: Sequence[PhotoIn]) -> bool:
        """An album of 2-5 photos, searched with a face model in the photos layout."""
        backend = BACKENDS.get(model)
        return (
            self.rt.settings.gallery_layout == "photos"
            and backend is not None
            and backend.embeds_faces
            and MIN_SELFIES <= len(photos) <= MAX_SELFIES
        )

    async def fused_answer(
        self,
        chat_id: int,
        user_id: int,
        model: str,
        k: int,
        photos: Sequence[PhotoIn],
        notes: list[str],
        started: float,
        admission: Admission,
    ) -> SelfiesOutcome:
        """Answer the album as one person if every photo is a selfie; else say so (nothing answered)."""
        rt = self.rt
        outcome = SelfiesOutcome(answered=False)
        try:
            downloaded = await asyncio.gather(*(self.download(photo.file_id) for photo in photos))
        except EngineError:
            return outcome  # the photo-by-photo search says which photo could not be had
        outcome.data = {photo.file_id: data for photo, data in zip(photos, downloaded, strict=True)}
        selfies: list[Selfie] = []
        for photo, data in zip(photos, downloaded, strict=True):
            try:
                selfie = await rt.compute(self._selfie, data, model, photo.name)
            except EngineError:
                return outcome
            if selfie is None:
                return outcome  # no face, or a group photo: answered photo by photo
            selfies.append(selfie)
        try:
            fused = fuse(np.stack([s.vector for s in selfies]))
        except DifferentPeopleError as error:
            rt.metrics.error("different_people")
            await rt.sender.text(
                chat_id, "\n".join([*notes, f"{error} To find several people, send their photos one at a time."])
            )
            outcome.answered = True
            return outcome
        result = await rt.compute(self._search, fused.vector, model, selfies[0], len(selfies))
        rt.metrics.photos.inc(len(selfies))
        rt.metrics.faces.inc(len(selfies))
        self.admissions.hold(admission, self.photos_answer.places([result], k))
        searched = Searched(PhotoIn(1, photos[0].file_id, None, result.image), result)
        if self.optouts is not None:  # opted-out people: found nowhere
            searched = (await self.optouts.filter(model, [searched], notes))[0]
        if self.limits is not None:  # the person past the user's daily limit: nothing of them
            limited = await self.limits.limit(user_id, model, [searched], notes)
            if limited.refused:
                self.admissions.unreserve(admission)
                await self.admissions.release(admission)
                await rt.sender.text(chat_id, "\n".join(notes))
                outcome.answered = True
                return outcome
        note = f"Your {len(selfies)} selfies show one person: I searched them together."
        await self.photos_answer.answer(
            chat_id,
            user_id,
            model,
            k,
            [searched],
            [*notes, note],
            False,
            started,
            lambda: self.admissions.release(admission),
        )
        rt.metrics.stage.labels(stage="total").observe(time.perf_counter() - started)
        outcome.answered = True
        return outcome

    def _selfie(self, data: bytes, model: str, name: str) -> Selfie | None:
        """Runs in the pool: the photo's dominant face and its query vector, or None (no face, a group photo)."""
        engine = self.rt.engine
        engine.load_networks(model)
        searcher = engine.searcher(model)
        searcher.check_store()
        regions, vectors = searcher.query_vectors([engine.decode(data, name=name)], self.rt.settings.max_faces)
        boxes = [region.box for region in regions[0]]
        chosen = dominant_face(boxes)
        if chosen is None:
            return None
        region = regions[0][chosen]
        return Selfie(region.box, region.confidence, vectors[chosen])

    def _search(self, vector: np.ndarray, model: str, first: Selfie, count: int) -> SearchResult:
        """Runs in the pool: the fused template's photos, as one face's answer (the first selfie's face box)."""
        started = time.perf_counter()
        searcher = self.rt.engine.searcher(model)
        photos = searcher.photos_for(vector)
        people = Counter(photo.person for photo in photos if photo.person is not None)
        person = people.most_common(1)[0][0] if people else None
        face = FaceResult(
            box=first.box,
            confidence=first.confidence,
            matches=[],
            photos=photos,
            photos_total=len(photos),
            person=person,
            vector=vector,
        )
        return SearchResult(
            image=f"{count} selfies", model=model, faces=[face], ms={"search": (time.perf_counter() - started) * 1000}
        )
