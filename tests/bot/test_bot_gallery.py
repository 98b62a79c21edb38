"""Teaching the bot from the chat: /add, /people, /rename, /remove end to end (fake Bot API, real engine, real files),
and the engine's gallery edits directly."""

from __future__ import annotations

import pytest

from bot.services import gallery as gallery_service
from engine import BadImageError, BadInputError
from engine.indexing.gallery import Gallery, NoFaceError, PersonNameError, PersonNotFoundError, check_name, folder_of
from support.bot_helpers import ADMIN, USER, last_call, person_photo, running_service, small_gallery
from support.helpers_engine import CLEAR_FACES, copy_photos, encode, first_photos, gradient_image, sample, side_by_side

TIMEOUT = 90


def mindy_photos(count: int) -> list[bytes]:
    """Sample photos of Mindy Kaling other than her clear face (that one is the later search)."""
    relatives = [r for r in first_photos("Mindy_Kaling", count + 1) if r != CLEAR_FACES["Mindy Kaling"]][:count]
    return [sample(r).read_bytes() for r in relatives]


@pytest.fixture
def gallery_engine(tmp_path, make_engine):
    """A gallery of four people (two photos each; no Mindy Kaling), indexed."""
    gallery = tmp_path / "gallery"
    for person in ["Ben_Afflek", "Elton_John", "Jerry_Seinfeld", "Madonna"]:
        copy_photos(gallery, first_photos(person, 2))
    copy_photos(gallery, [CLEAR_FACES["Madonna"]])
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.load("facenet")
    engine.build_index("facenet")
    return engine


def test_names_are_checked():
    assert check_name("  Mindy   Kaling ") == "Mindy Kaling"
    assert folder_of("Mindy Kaling") == "Mindy_Kaling"
    assert folder_of("Zoë O'Neil-Smith Jr.") == "Zoë_O'Neil-Smith_Jr."
    for bad in ["", "   ", "../etc", "a/b", "a\\b", "..", ".hidden", "Mr_X", "1abc", "x" * 65, "Bob; rm"]:
        with pytest.raises(PersonNameError):
            check_name(bad)


def test_gallery_edits_directly(gallery_engine):
    gallery = Gallery(gallery_engine)
    before = gallery_engine.index_info("facenet").count
    madonna = gallery.find("Madonna").photos
    with pytest.raises(NoFaceError):
        gallery.add_photos("Nobody Here", [encode(gradient_image(300, 200))])
    with pytest.raises(BadImageError):
        gallery.add_photos("Nobody Here", [b"not an image"])
    assert (
        gallery.find("Nobody Here") is None and gallery_engine.index_info("facenet").count == before
    )  # nothing written
    result = gallery.add_photos("Mindy Kaling", mindy_photos(2) + [encode(gradient_image(200, 200))])
    assert [a.number for a in result.added] == [1, 2] and [r.number for r in result.refused] == [3]
    assert result.person.photos == 2 and gallery_engine.index_info("facenet").count == before + 2
    again = gallery.add_photos("mindy kaling", mindy_photos(1))  # same picture, other case: one folder, no copy
    assert again.added[0].duplicate and again.person.folder == "Mindy_Kaling" and again.person.photos == 2
    assert [p.name for p in gallery.people("m")] == ["Madonna", "Mindy Kaling"]
    with pytest.raises(PersonNotFoundError):
        gallery.remove("Someone Else")
    with pytest.raises(BadInputError):
        gallery.rename("Madonna", "Madonna")
    renamed = gallery.rename("Mindy Kaling", "mindy kaling")  # a change of case only
    assert renamed.person.folder == "mindy_kaling" and not renamed.merged
    merged = gallery.rename("mindy kaling", "Madonna")
    assert merged.merged and merged.person.photos == madonna + 2 and gallery.find("mindy kaling") is None
    removed = gallery.remove("Madonna")
    assert removed.photos == madonna + 2 and gallery_engine.index_info("facenet").count == before - madonna
    names = set(gallery_engine.searcher("facenet").store.people())
    assert "Madonna" not in names and "mindy kaling" not in names


async def test_add_rename_remove_from_the_chat(api, gallery_engine, tmp_path, monkeypatch):
    root = gallery_engine.settings.resolved_gallery()
    madonna = Gallery(gallery_engine).find("Madonna").photos
    async with running_service(api, gallery_engine, tmp_path, default_k=3) as service:
        # a non-admin is refused and nothing is written
        api.send_album(USER, mindy_photos(2), caption="/add Mindy Kaling")
        await api.wait_for_text(USER, "for admins only", timeout=TIMEOUT)
        assert not (root / "Mindy_Kaling").exists()

        # an admin's album captioned /add: both photos checked, saved and indexed at once
        api.send_album(ADMIN, mindy_photos(2) + [encode(gradient_image(320, 240))], caption="/add Mindy Kaling")
        added = await api.wait_for_text(ADMIN, "Added 2 photos of Mindy Kaling", timeout=TIMEOUT)
        assert "now has 2 photos" in added.text and "Photo 3 refused: no face found" in added.text
        assert len(list((root / "Mindy_Kaling").glob("*.jpg"))) == 2

        # another user's photo of her is named
        since = len(api.calls)
        api.send_photo(USER, person_photo("Mindy Kaling"))
        found = await api.wait_for_text(USER, "most likely", since=since, timeout=TIMEOUT)
        assert "Mindy Kaling" in found.text

        # several faces: the largest is used, and the answer says so; a reply /add to a photo
        pair = encode(side_by_side(sample(CLEAR_FACES["Madonna"]), sample(CLEAR_FACES["Elton John"])))
        photo_update = api.send_photo(ADMIN, pair)
        await api.wait_for_text(ADMIN, "Face 2:", timeout=TIMEOUT)
        since = len(api.calls)
        api.send_text(ADMIN, "/add Test Person", reply_to=photo_update)
        several = await api.wait_for_text(ADMIN, "Added 1 photo of Test Person", since=since, timeout=TIMEOUT)
        assert "faces found — I used the largest one" in several.text
        api.send_text(ADMIN, "/add ../etc", reply_to=photo_update)
        await api.wait_for_text(ADMIN, "can't be a name", since=since)
        api.send_text(ADMIN, "/add Someone")  # no photo to add
        await api.wait_for_text(ADMIN, "caption /add Firstname Lastname", since=since)

        # /people, paged with buttons
        monkeypatch.setattr(gallery_service, "PEOPLE_PAGE", 2)
        since = len(api.calls)
        api.send_text(ADMIN, "/people")
        listing = await api.wait_for_text(ADMIN, "6 people", since=since)
        assert "page 1/3" in listing.text and "• Ben Afflek — 2 photos" in listing.text
        api.press(ADMIN, listing, "Next")
        page2 = await api.wait_for_text(ADMIN, "page 2/3", since=since)
        assert page2.method == "editMessageText" and "• Jerry Seinfeld — 2 photos" in page2.text
        api.send_text(ADMIN, "/people mi")
        await api.wait_for_text(ADMIN, "• Mindy Kaling — 2 photos", since=since)
        api.send_text(USER, "/people")
        await api.wait_for_text(USER, "admins only", since=since)

        # /rename, and searches see the new name at once
        api.send_text(ADMIN, "/rename Mindy Kaling Mindy K")
        await api.wait_for_text(ADMIN, "Renamed Mindy Kaling to Mindy K", since=since, timeout=TIMEOUT)
        since = len(api.calls)
        api.send_photo(USER, person_photo("Mindy Kaling"))
        found = await api.wait_for_text(USER, "most likely", since=since, timeout=TIMEOUT)
        assert "Mindy K (" in found.text and "Mindy Kaling" not in found.text
        api.send_text(ADMIN, "/rename Test Person Madonna")  # an existing name: merged
        await api.wait_for_text(
            ADMIN, f"Merged Test Person into Madonna: {madonna + 1} photos", since=since, timeout=TIMEOUT
        )

        # /remove asks first; the confirmation button removes
        api.send_text(ADMIN, "/remove Madonna")
        ask = await api.wait_for_text(
            ADMIN, f"Remove Madonna and their {madonna + 1} photos from the gallery?", since=since
        )
        api.press(USER, ask, "Yes")  # not an admin
        await api.wait_for(
            lambda calls: [
                c for c in calls if c.method == "answerCallbackQuery" and "admins only" in str(c.params.get("text"))
            ]
        )
        assert (root / "Madonna").is_dir()
        api.press(ADMIN, ask, "Yes")
        await api.wait_for_text(ADMIN, "Removed Madonna", since=since, timeout=TIMEOUT)
        assert not (root / "Madonna").exists()
        since = len(api.calls)
        api.send_photo(USER, person_photo("Madonna"))
        answer = await api.wait_for(
            lambda calls: [
                c for c in calls[since:] if c.chat_id == USER and ("likely" in c.text or "no confident" in c.text)
            ],
            timeout=TIMEOUT,
        )
        assert "Madonna" not in answer[0].text
        assert all("Madonna" not in c.text for c in api.calls_to(USER, "sendMediaGroup", "sendPhoto", since=since))
        assert last_call(api, ADMIN, "Removed Madonna")
        people = {p.name: p.photos for p in service.gallery.people()}
        assert people == {"Ben Afflek": 2, "Elton John": 2, "Jerry Seinfeld": 2, "Mindy K": 2}
        assert set(service.engine.searcher("facenet").store.people()) <= set(people)

        # reply /add to an album sent earlier (searched when it came): every photo of the album is added
        since = len(api.calls)
        jerry = [sample(r).read_bytes() for r in first_photos("Jerry_Seinfeld", 4)[2:]]
        album = api.send_album(ADMIN, jerry)
        await api.wait_for_text(ADMIN, "Photo 2:", since=since, timeout=TIMEOUT)
        api.send_text(ADMIN, "/add Jerry Seinfeld", reply_to=album[1])
        added = await api.wait_for_text(ADMIN, "Added 2 photos of Jerry Seinfeld", since=since, timeout=TIMEOUT)
        assert "now has 4 photos" in added.text


async def test_a_gallery_edit_waiting_for_a_busy_index_says_so(api, make_engine, tmp_path):
    """A long `python -m engine index` holds the index's writer lock: /add says it waits, then answers."""
    from filelock import FileLock

    gallery = small_gallery(tmp_path / "gallery", per_person=1)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.build_index("facenet")
    lock = FileLock(str(tmp_path / "data" / "index" / "facenet" / "write.lock"), thread_local=False)
    async with running_service(api, engine, tmp_path, index_lock_wait_s=120):
        since = len(api.calls)
        with lock:
            api.send_photo(ADMIN, person_photo("Madonna"), caption="/add Ada Lovelace")
            await api.wait_for_text(ADMIN, "index is busy", since=since, timeout=TIMEOUT)
            assert not [c for c in api.calls[since:] if "Nothing added" in c.text or "Added" in c.text]
        added = await api.wait_for_text(ADMIN, "Added 1 photo of Ada Lovelace", since=since, timeout=TIMEOUT)
        assert "searchable now" in added.text


async def test_removing_the_last_person_removes_them_and_says_so(api, make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(
        gallery, [CLEAR_FACES["Madonna"], *[p for p in first_photos("Madonna", 2) if p != CLEAR_FACES["Madonna"]]]
    )
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.build_index("facenet")
    async with running_service(api, engine, tmp_path, default_k=1) as service:
        since = len(api.calls)
        api.send_text(ADMIN, "/remove Madonna")
        question = await api.wait_for_text(ADMIN, "Remove Madonna", since=since, timeout=TIMEOUT)
        api.press(ADMIN, question, "Yes, remove")
        done = await api.wait_for_text(ADMIN, "Removed Madonna", since=since, timeout=TIMEOUT)
        assert "searches no longer find them" in done.text and "now empty" in done.text
        assert not (gallery / "Madonna").exists()
        assert service.engine.index_info("facenet").count == 0
        since = len(api.calls)
        api.send_photo(USER, person_photo("Madonna"))
        answer = await api.wait_for(lambda calls: [c for c in calls[since:] if c.chat_id == USER and c.text])
        assert "went wrong" not in answer[0].text
        assert not any("Madonna" in c.text for c in api.calls_to(USER, since=since)), answer[0].text
