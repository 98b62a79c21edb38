"""Looking people up has limits (issue 22, part 3), end to end through the fake Bot API with real weights and photos.

MAX_PERSONS_PER_DAY is set to 2 here: the sample gallery has five people, so "5 answered, 15 refused" of the issue is
played as "2 answered, 3 refused" (each sample person a distinct lookup). A refused face shows nothing of its person:
no photo, no name, no history row; the same person again is answered; an admin is not limited; the refusals are
counted in /metrics and in the audit. The photos layout is limited the same way (its person: the registry's).
"""

from __future__ import annotations

from PIL import Image

from bot.invites import InviteStore
from bot.services.limits import LIMIT_REFUSAL
from support.bot_helpers import ADMIN, USER, albums, person_photo, running_service
from support.fake_bot_api import FakeBotAPI
from support.helpers_engine import JERRY, MADONNA, first_photos, sample

TIMEOUT = 120
REFUSED = "looked up"
PEOPLE = ["Ben Afflek", "Elton John", "Jerry Seinfeld", "Madonna", "Mindy Kaling"]


async def ask(api: FakeBotAPI, user: int, data: bytes, answered: str) -> tuple[str, int]:
    """Send a photo; the text of its answer (`answered` in it) or of its refusal, and the photos sent with it."""
    since = len(api.calls)
    api.send_photo(user, data)

    def done(calls):
        found = [c for c in calls[since:] if c.chat_id == user and c.method == "sendMessage"]
        return next((c for c in found if answered in c.text or REFUSED in c.text), None)

    call = await api.wait_for(done, timeout=TIMEOUT)
    return call.text, len(albums(api, user, since))


async def test_past_the_limit_a_new_person_is_refused_and_shown_nothing(api, indexed_engine, tmp_path):
    async with running_service(api, indexed_engine, tmp_path, max_persons_per_day=2) as service:
        rt = service.runtime
        answers = [await ask(api, USER, person_photo(person), "most likely") for person in PEOPLE]
        answered = [(person, a) for person, a in zip(PEOPLE, answers, strict=True) if REFUSED not in a[0]]
        refused = [(person, a) for person, a in zip(PEOPLE, answers, strict=True) if REFUSED in a[0]]
        assert [p for p, _ in answered] == PEOPLE[:2]
        assert len(refused) == 3
        for person, (text, photos) in refused:
            assert text.startswith("You have looked up 2 people today; try again in 24 hours"), text
            assert photos == 0 and person.split()[0] not in text  # nothing of the person
        for person, (text, photos) in answered:
            assert person.split()[0] in text and photos > 0
        history = await rt.db(rt.store.history, USER, USER, 10)
        assert len(history) == 2  # the refused lookups are not in the history either
        # the same persons again, many times: all answered
        for _ in range(3):
            for person in PEOPLE[:2]:
                text, photos = await ask(api, USER, person_photo(person), "most likely")
                assert REFUSED not in text and photos > 0
        assert rt.metrics.value("facesearch_access_refusals_total", {"reason": LIMIT_REFUSAL}) == 3
        audit = await rt.db(InviteStore(rt.store).audit, 1)
        assert audit[-1].refusals == 3
        # an admin is not limited
        for person in PEOPLE:
            text, photos = await ask(api, ADMIN, person_photo(person), "most likely")
            assert REFUSED not in text and photos > 0
        # /forget keeps the day's count (it would lift the limit otherwise), and forgets whom
        since = len(api.calls)
        api.send_text(USER, "/forget")
        await api.wait_for_text(USER, "delete", since=since, timeout=TIMEOUT)
        text, photos = await ask(api, USER, person_photo(PEOPLE[4]), "most likely")
        assert REFUSED in text and photos == 0


async def test_the_photos_layout_is_limited_by_registry_person(api, make_engine, tmp_path_factory, tmp_path):
    root = tmp_path_factory.mktemp("limit-gallery")
    madonna = [p for p in first_photos("Madonna", 30) if p != MADONNA]
    jerry = [p for p in first_photos("Jerry_Seinfeld", 30) if p != JERRY]
    photos = {"a/IMG_1.jpg": madonna[0], "a/IMG_2.jpg": madonna[1], "b/IMG_3.jpg": jerry[0], "b/IMG_4.jpg": jerry[1]}
    for relative, source in photos.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.open(sample(source)).convert("RGB").save(root / relative, quality=92)
    engine = make_engine(data_dir=tmp_path_factory.mktemp("limit-data"), gallery_dir=root, gallery_layout="photos")
    engine.build_index("facenet")
    try:
        async with running_service(api, engine, tmp_path, max_persons_per_day=1):
            madonna_selfie, jerry_selfie = sample(MADONNA).read_bytes(), sample(JERRY).read_bytes()
            text, sent = await ask(api, USER, madonna_selfie, "appears in")
            assert REFUSED not in text and sent > 0
            text, sent = await ask(api, USER, jerry_selfie, "appears in")
            assert text.startswith("You have looked up 1 person today") and sent == 0
            assert "appears in" not in text and "Jerry" not in text
            text, sent = await ask(api, USER, madonna_selfie, "appears in")  # the same person again
            assert REFUSED not in text and sent > 0
    finally:
        engine.close()
