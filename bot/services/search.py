"""The search flow: a photo or an album searched (admitted first), the people layout's answer, its history, and
its buttons ("More matches", "Show faces"). The photos layout's answer is another flow, handed in at wiring time
(`PhotosLayoutAnswer`): this module does not know it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from telegram import InlineKeyboardMarkup
from telegram.constants import ChatAction
from telegram.error import BadRequest

from bot import render
from bot.admission import Admission, Admissions
from bot.delivery import download
from bot.paging import PAGE_LIMIT, PhotoQuery, ResultState, result_keyboard, state_from_payload, state_to_payload
from bot.queries import PhotoIn, QueryRecord, Searched
from bot.runtime import BotRuntime
from bot.sending import FaceLabel
from engine import EngineError, IndexProgress, IndexUnavailableError, SearchResult
from engine.backends import BACKENDS

log = logging.getLogger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile refuses larger files


class PhotosLayoutAnswer(Protocol):
    """The photos layout's answer (bot/services/photos_answer.py), as the search flow uses it."""

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


class SelfiesOutcome(Protocol):
    answered: bool
    data: dict[str, bytes]


class SelfiesFlow(Protocol):
    """Albums of selfies searched as one person (bot/services/selfies.py), as the search flow uses them."""

    def applies(self, model: str, photos: Sequence[PhotoIn]) -> bool: ...

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
    ) -> SelfiesOutcome: ...


class LimitedFound(Protocol):
    found: list[Searched]
    refused: int


class LookupLimiter(Protocol):
    """The per-day lookup limit (bot/services/limits.py), as the search flows use it."""

    async def limit(self, user_id: int, model: str, found: Sequence[Searched], notes: list[str]) -> LimitedFound: ...


class OptOutFilter(Protocol):
    """Opted-out people taken out of an answer (bot/services/optouts.py), as the search flows use it."""

    async def filter(self, model: str, found: Sequence[Searched], notes: list[str]) -> list[Searched]: ...


class SearchFlow:
    """Searches and their answers, over the runtime; `admissions` is shared with the photos layout's answer."""

    def __init__(
        self,
        runtime: BotRuntime,
        admissions: Admissions,
        photos_answer: PhotosLayoutAnswer,
        selfies: SelfiesFlow | None = None,
    ):
        self.rt = runtime
        self.admissions = admissions
        self.photos_answer = photos_answer
        self.selfies = selfies  # an album of 2-5 selfies in the photos layout: one fused query
        self.limits: LookupLimiter | None = None  # MAX_PERSONS_PER_DAY (bot/services/limits.py), set at wiring time
        self.optouts: OptOutFilter | None = None  # /optout (bot/services/optouts.py), set at wiring time

    async def model_refusal(self, model: str) -> str | None:
        """Why a search with `model` cannot run now (unavailable, still loading or indexing), or None."""
        rt = self.rt
        problem = await rt.db(rt.engine.model_problem, model)
        if problem:
            return f"The {model} backend is unavailable: {rt.public(problem)}\nSwitch with /model facenet."
        progress = rt.indexing.get(model)
        if progress is None and model in rt.preparing and await rt.db(rt.engine.index_info, model) is None:
            progress = IndexProgress(done=0, total=0, elapsed_s=0.0)  # still loading: the index may have to be built
        return indexing_refusal(progress)

    async def _search_all(
        self,
        photos: list[PhotoIn],
        model: str,
        k: int,
        admission: Admission,
        count: bool = True,
        downloaded: dict[str, bytes] | None = None,
    ) -> list[Searched]:
        """Search the admitted photos; their queue places are given back once searched, before the answer is sent,
        but for the pool work the answer still runs (marking a photos-layout answer's gallery photos)."""
        try:
            searched = list(
                await asyncio.gather(
                    *(
                        self._search_one(photo, model, k, count, (downloaded or {}).get(photo.file_id))
                        for photo in photos
                    )
                )
            )
        except BaseException:
            self.admissions.unreserve(admission)
            raise
        # the photos layout marks gallery photos in the pool after the search: its places are held for that work
        results = [s.result for s in searched if s.result is not None]
        self.admissions.hold(admission, self.photos_answer.places(results, k))
        return searched

    async def _search_one(self, photo: PhotoIn, model: str, k: int, count: bool, data: bytes | None) -> Searched:
        rt, searched = self.rt, Searched(photo)
        started = time.perf_counter()
        try:
            data = data if data is not None else await self._download(photo.file_id)
        except EngineError as error:
            searched.error = error
            rt.metrics.error("download")
            return searched
        rt.metrics.stage.labels(stage="download").observe(time.perf_counter() - started)
        queued = time.perf_counter()
        try:
            searched.result = await rt.compute(self._search, data, model=model, k=k, name=photo.name, queued=queued)
        except EngineError as error:
            searched.error = error
            rt.metrics.error(type(error).__name__)
            return searched
        if count:
            rt.metrics.photos.inc()
            rt.metrics.faces.inc(len(searched.result.faces))
            for stage in ("detect", "embed", "search"):
                rt.metrics.stage.labels(stage=stage).observe(searched.result.ms.get(stage, 0.0) / 1000)
        return searched

    async def _download(self, file_id: str) -> bytes:
        try:
            return await download(self.rt.sender.bot, file_id, self.rt.settings.send_retries)
        except BadRequest as error:
            raise EngineError(f"Telegram would not give me the file ({error.message})") from error

    def _search(self, data: bytes, *, model: str, k: int, name: str, queued: float) -> SearchResult:
        """Runs in the pool: decode, search, and let the pixels go before the answer is sent."""
        self.rt.metrics.stage.labels(stage="queue").observe(time.perf_counter() - queued)
        engine, s = self.rt.engine, self.rt.settings
        return engine.search_image(engine.decode(data, name=name), model=model, k=k, max_faces=s.max_faces, name=name)

    # ---- a new photo or album ------------------------------------------------------------------

    async def search(self, chat_id: int, user_id: int, photos: list[PhotoIn]) -> None:
        """One answer for one photo or one album."""
        rt, send = self.rt, self.rt.sender
        started = time.perf_counter()
        album = len(photos) > 1
        limit = min(rt.settings.max_image_bytes, TELEGRAM_DOWNLOAD_LIMIT)
        accepted: list[PhotoIn] = []
        notes: list[str] = []
        for photo in photos:
            if photo.file_size and photo.file_size > limit:
                what = f"Photo {photo.number}" if album else "That file"
                notes.append(
                    f"{what} is {photo.file_size / 1e6:.1f} MB; I accept images up to {limit / 1e6:.0f} MB. "
                    "Please send a smaller photo."
                )
                rt.metrics.error("too_large")
                continue
            accepted.append(photo)
        if not accepted:
            await send.text(chat_id, "\n".join(notes))
            return
        async with self.admissions.admit(
            user_id, len(accepted)
        ) as admission:  # first: a /forget after this photo waits
            if admission.refusal:
                await send.text(chat_id, admission.refusal)
                return
            model, k = await rt.chat_settings(chat_id)
            refusal = await self.model_refusal(model)
            if refusal:
                await send.text(chat_id, refusal)
                return
            await send.action(chat_id, ChatAction.TYPING)
            downloaded: dict[str, bytes] = {}
            if self.selfies is not None and self.selfies.applies(model, accepted):
                outcome = await self.selfies.fused_answer(
                    chat_id, user_id, model, k, accepted, notes, started, admission
                )
                if outcome.answered:
                    return
                downloaded = outcome.data  # not all selfies: answered photo by photo, as any album
            searched = await self._search_all(accepted, model, k, admission, downloaded=downloaded)
            await self._answer(chat_id, user_id, model, k, searched, notes, album, started, admission)

    async def _answer(
        self,
        chat_id: int,
        user_id: int,
        model: str,
        k: int,
        searched: list[Searched],
        notes: list[str],
        album: bool,
        started: float,
        admission: Admission,
    ) -> None:
        rt, send = self.rt, self.rt.sender
        if all(isinstance(s.error, IndexUnavailableError) for s in searched):
            await self.admissions.release(admission)
            await send.text(chat_id, f"There is no {model} index yet — an admin can build it with /reindex {model}.")
            return
        for item in searched:
            if item.error is not None:
                prefix = f"Photo {item.photo.number}: " if album else ""
                notes.append(prefix + f"Sorry, I can't use that: {rt.public(str(item.error))}")
        found = [s for s in searched if s.result is not None]
        if self.optouts is not None:  # opted-out people: found nowhere, before the limits count anyone
            found = await self.optouts.filter(model, found, notes)
        if self.limits is not None:  # faces of persons past the user's daily limit: dropped before anything is shown
            limited = await self.limits.limit(user_id, model, found, notes)
            found = limited.found
            if limited.refused and not any(s.result.faces for s in found if s.result is not None):
                self.admissions.unreserve(admission)  # no photos to mark
                await self.admissions.release(admission)  # the user may send the next photo with this answer
                await send.text(chat_id, "\n".join(notes))  # nothing of the person: not even the history
                return
        if not any(s.result.faces for s in found if s.result is not None):
            await self._record(chat_id, user_id, model, k, found, started)
            if found:
                what = "these photos" if len(found) > 1 else "this photo"
                notes.append(f"I found no face in {what}. Try a clearer, front-facing photo{whole_image_hint()}.")
            await self.admissions.release(admission)  # the user may send the next photo as soon as this arrives
            await send.text(chat_id, "\n".join(notes))
            return
        await send.action(chat_id, ChatAction.UPLOAD_PHOTO)
        if any(face.photos is not None for s in found if s.result is not None for face in s.result.faces):
            # the photos layout: the photos each face appears in (bot/services/photos_answer.py)
            await self.photos_answer.answer(
                chat_id, user_id, model, k, found, notes, album, started, lambda: self.admissions.release(admission)
            )
            rt.metrics.stage.labels(stage="total").observe(time.perf_counter() - started)
            return
        page = min(k, PAGE_LIMIT)
        budget = rt.settings.max_answer_photos
        skipped = 0
        send_started = time.perf_counter()
        for item in found:
            assert item.result is not None
            faces = item.result.faces
            for number, face in enumerate(faces, start=1):
                if budget <= 0:
                    skipped += 1
                    continue
                unknown = face.identity.name is None
                if unknown:  # said first, so the closest faces are not taken for matches
                    note = render.not_in_gallery(number, face, len(faces))
                    await send.text(chat_id, (f"Photo {item.photo.number}: " if album else "") + note)
                label = FaceLabel(number, item.photo.number if album else None, closest=unknown)
                budget -= await send.matches(chat_id, label, face.matches[: min(page, budget)])
        rt.metrics.stage.labels(stage="send").observe(time.perf_counter() - send_started)
        await self._record(chat_id, user_id, model, k, found, started)
        state = ResultState(
            chat_id=chat_id,
            user_id=user_id,
            model=model,
            k=k,
            shown=page,
            page=page,
            max_k=rt.settings.max_k,
            index_size=await rt.index_size(model),
            photos=[
                PhotoQuery(
                    s.photo.file_id,
                    s.photo.name,
                    [f.box for f in s.result.faces],
                    [f.matches for f in s.result.faces],
                    [f.identity.name is None for f in s.result.faces],
                )
                for s in found
                if s.result is not None
            ],
        )
        lines = list(notes)
        for item in found:
            assert item.result is not None
            if album:
                text = render.summary(item.result.faces) if item.result.faces else "no face found"
                lines.append(f"Photo {item.photo.number}: " + text.replace("\n", f"\nPhoto {item.photo.number}: "))
            else:
                lines.append(render.summary(item.result.faces))
        if skipped:
            lines.append(
                f"The matches of {skipped} more face{'s' if skipped > 1 else ''} are not shown, to keep this answer "
                "short: send those photos one at a time to see them."
            )
        if state.multi_face:
            lines.append("Several faces: “Show faces” shows which is which.")
        keyboard = await self._keyboard(state)
        await self.admissions.release(admission)  # the user may send the next photo as soon as this summary arrives
        await send.lines(chat_id, lines, reply_markup=keyboard)  # an album of group photos: several messages
        rt.metrics.stage.labels(stage="total").observe(time.perf_counter() - started)

    async def _keyboard(self, state: ResultState) -> InlineKeyboardMarkup | None:
        """The answer's buttons, their state stored for any replica; none when the database fails (logged)."""
        rt = self.rt
        if not state.has_more and not state.multi_face:
            return None
        try:
            token = await rt.db(rt.state.put_button, "result", state.chat_id, state.user_id, state_to_payload(state))
        except Exception:
            log.exception("could not store the answer's buttons")
            rt.metrics.error("state")
            return None
        return result_keyboard(token, state)

    async def _record(
        self, chat_id: int, user_id: int, model: str, k: int, found: list[Searched], started: float
    ) -> None:
        """Each photo's query in the history: every face's matches and its open-set answer."""
        records = [
            QueryRecord(
                faces=len(item.result.faces),
                matches=[
                    (number, m.rank, m.name, m.path, m.similarity)
                    for number, face in enumerate(item.result.faces, start=1)
                    for m in face.matches
                ],
                answers=[(n, face.identity.name, face.identity.score) for n, face in enumerate(item.result.faces, 1)],
            )
            for item in found
            if item.result is not None
        ]
        await self.rt.record_queries(chat_id, user_id, model, k, records, started)

    # ---- buttons ---------------------------------------------------------------------------------

    async def _pressed(self, token: str, kind: str, user_id: int) -> tuple[ResultState | None, str | None]:
        """The answer behind a result button, claimed once (a double press, or a press on two replicas, runs once)."""
        rt = self.rt
        button = await rt.db(rt.state.button, token, "result")
        if button is None:
            return None, "This answer is too old: please send the photo again."
        if button.user_id != user_id:
            return None, "Only the person who sent the photo can use these buttons."
        return state_from_payload(button.payload), None

    async def more(self, token: str, user_id: int) -> str | None:
        """ "More matches": the next page of every face, searched again when past the ranks fetched.
        Returns the text of the button's short answer (None: nothing to say)."""
        rt, send = self.rt, self.rt.sender
        state, refusal = await self._pressed(token, "more", user_id)
        if state is None:
            return refusal
        start, end = state.shown, min(state.shown + state.page, state.max_k)
        refetch = any(len(face) < end for p in state.photos for face in p.matches) and start + 1 <= state.index_size
        async with self.admissions.admit(user_id, len(state.photos) if refetch else 0) as admission:
            if admission.refusal:
                return admission.refusal
            if not await rt.db(rt.state.claim, f"more:{token}"):
                return "Already shown."
            if refetch:
                photos = [PhotoIn(n, p.file_id, None, p.name) for n, p in enumerate(state.photos, start=1)]
                again = await self._search_all(photos, state.model, end, admission, count=False)
                if self.optouts is not None:  # opted out since, or found again: never shown
                    again = await self.optouts.filter(state.model, again, [])
                for query, searched in zip(state.photos, again):
                    if searched.result is not None and len(searched.result.faces) == len(query.matches):
                        query.matches = [face.matches for face in searched.result.faces]
            album = len(state.photos) > 1
            budget = rt.settings.max_answer_photos
            sent_any = False
            for number_photo, photo in enumerate(state.photos, start=1):
                for number, matches in enumerate(photo.matches, start=1):
                    page = matches[start:end][: max(budget, 0)]
                    if page:
                        sent_any = True
                        closest = number <= len(photo.unknown) and photo.unknown[number - 1]
                        label = FaceLabel(number, number_photo if album else None, closest=closest)
                        budget -= await send.matches(state.chat_id, label, page)
            state.shown = end if sent_any else state.max_k
            keyboard = await self._keyboard(state)
            await self.admissions.release(admission)
            text = f"Matches {start + 1}–{end}." if sent_any else "No more matches in the gallery."
            await send.text(state.chat_id, text, reply_markup=keyboard)
        return None

    async def faces(self, token: str, user_id: int) -> str | None:
        """ "Show faces": the photo(s) with several faces, with numbered boxes matching the captions."""
        rt, send = self.rt, self.rt.sender
        state, refusal = await self._pressed(token, "faces", user_id)
        if state is None:
            return refusal
        photos = [p for p in state.photos if len(p.boxes) > 1]
        async with self.admissions.admit(user_id, len(photos)) as admission:
            if admission.refusal:
                return admission.refusal
            if not await rt.db(rt.state.claim, f"faces:{token}"):
                return "Already shown."
            album = len(state.photos) > 1
            for number, photo in enumerate(state.photos, start=1):
                if len(photo.boxes) < 2:
                    continue
                data = await self._download(photo.file_id)
                boxed = await rt.compute(self._draw, data, photo)
                prefix = f"Photo {number}: " if album else ""
                await send.photo(
                    state.chat_id,
                    boxed,
                    f"{prefix}I found {len(photo.boxes)} faces; their numbers match the captions.",
                )
        return None

    def _draw(self, data: bytes, photo: PhotoQuery) -> bytes:
        return render.draw_boxes(self.rt.engine.decode(data, name=photo.name), photo.boxes)


def indexing_refusal(progress: IndexProgress | None) -> str | None:
    if progress is None:
        return None
    percent = round(100 * progress.done / progress.total) if progress.total else 0
    return f"The gallery is being indexed, {percent}% done — please try again in a minute."


def whole_image_hint() -> str:
    """The end of the no-face answer: a registered model that compares whole images, if there is one."""
    whole = [name for name, backend in BACKENDS.items() if not backend.embeds_faces]
    return f", or switch to /model {whole[0]} to search by the whole image" if whole else ""
