"""/remove and /rename end to end, by gallery layout (issue 20), through the fake Bot API with real weights, photos
and files:

- photos layout: /remove and /rename are refused with the commands that act on persons (/hide, /name, /merge,
  /people); no folder of event photos is deleted or renamed, and a person named by /add keeps its name;
- people layout: removing the last person deletes their photos and says the gallery is now empty; a stale "Yes,
  remove" (pressed a second time, or after /rename) says nobody is called that and changes nothing, the history
  included; a "Yes, remove" pressed by someone who is no longer an admin is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from support.bot_helpers import ADMIN, USER, person_photo, running_service
from support.helpers_engine import BEN, JERRY, MADONNA, MINDY, copy_photos, first_photos, sample, side_by_side

TIMEOUT = 120


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def answer_of_button(api, fragment: str, since: int) -> str:
    """The text of the first answerCallbackQuery after `since` containing `fragment`."""
    calls = await api.wait_for(
        lambda calls: [
            c for c in calls[since:] if c.method == "answerCallbackQuery" and fragment in str(c.params.get("text"))
        ],
        timeout=TIMEOUT,
    )
    return str(calls[0].params.get("text"))


@pytest.fixture
def event_engine(tmp_path, make_engine):
    """A photos-layout event: `Ceremony` holds its photos only in subfolders; indexed, its faces grouped."""
    root = tmp_path / "gallery"
    photos = {
        "Ceremony/day-1/IMG_0001.jpg": side_by_side(sample(JERRY), sample(MINDY)),
        "Ceremony/day-2/IMG_0002.jpg": Image.open(sample(BEN)),
    }
    for relative, image in photos.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(root / relative, quality=92)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=root, gallery_layout="photos")
    engine.build_index("facenet")
    yield engine
    engine.close()


async def test_photos_layout_remove_and_rename_are_refused_and_touch_no_photo(api, event_engine, tmp_path):
    root = Path(event_engine.settings.gallery_dir)
    async with running_service(api, event_engine, tmp_path):
        since = len(api.calls)
        api.send_photo(ADMIN, sample(MADONNA).read_bytes(), caption="/add Jane Doe")
        await api.wait_for_text(ADMIN, "Added 1 photo of Jane Doe (person #", since=since, timeout=TIMEOUT)
        before = tree(root)
        assert len([p for p in before if p.startswith("Jane_Doe/")]) == 1

        for command in ("/remove Jane Doe", "/remove Ceremony", "/rename Jane Doe Janet Doe", "/rename Ceremony Feast"):
            since = len(api.calls)
            api.send_text(ADMIN, command)
            refused = await api.wait_for_text(ADMIN, "photos gallery", since=since, timeout=TIMEOUT)
            for hint in ("/hide N", "/name N", "/merge N M", "/people", "Nothing was changed"):
                assert hint in refused.text, (command, refused.text)
            assert not refused.params.get("reply_markup"), "no button to confirm anything"

        assert tree(root) == before  # no photo or folder deleted or renamed
        named = [p for p in event_engine.people().list() if p.name == "Jane Doe"]
        assert len(named) == 1 and named[0].photos == 1  # her person keeps its face and name


@pytest.fixture
def people_engine(tmp_path, make_engine):
    """A people-layout gallery: Jerry Seinfeld and Madonna, two photos each, indexed."""
    gallery = tmp_path / "gallery"
    for person in ["Jerry_Seinfeld", "Madonna"]:
        copy_photos(gallery, first_photos(person, 2))
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.build_index("facenet")
    yield engine
    engine.close()


async def test_removing_the_last_person_empties_the_gallery_and_deletes_their_photos(api, people_engine, tmp_path):
    root = Path(people_engine.settings.gallery_dir)
    async with running_service(api, people_engine, tmp_path) as service:
        for name in ("Jerry Seinfeld", "Madonna"):
            since = len(api.calls)
            api.send_text(ADMIN, f"/remove {name}")
            ask = await api.wait_for_text(ADMIN, f"Remove {name} and their 2 photos", since=since, timeout=TIMEOUT)
            api.press(ADMIN, ask, "Yes")
            done = await api.wait_for_text(ADMIN, f"Removed {name}", since=since, timeout=TIMEOUT)
        assert "their 2 photos" in done.text and "The gallery is now empty" in done.text
        assert list(root.iterdir()) == []  # her photos are deleted, not left in a hidden folder
        assert service.engine.searcher("facenet").store.files() == {}
        assert service.gallery.recover() == []
        assert list(root.iterdir()) == []


async def test_a_stale_remove_confirmation_says_nobody_is_called_that_and_changes_nothing(api, people_engine, tmp_path):
    root = Path(people_engine.settings.gallery_dir)
    async with running_service(api, people_engine, tmp_path, default_k=2) as service:
        since = len(api.calls)
        api.send_photo(USER, person_photo("Jerry Seinfeld"))  # the history names him
        await api.wait_for_text(USER, "Jerry Seinfeld", since=since, timeout=TIMEOUT)

        # two confirmations of one removal: the second "Yes" finds nobody left to remove
        api.send_text(ADMIN, "/remove Madonna")
        first = await api.wait_for_text(ADMIN, "Remove Madonna and their", since=since, timeout=TIMEOUT)
        since = len(api.calls)
        api.send_text(ADMIN, "/remove Madonna")
        second = await api.wait_for_text(ADMIN, "Remove Madonna and their", since=since, timeout=TIMEOUT)
        api.press(ADMIN, first, "Yes")
        await api.wait_for_text(ADMIN, "Removed Madonna", since=since, timeout=TIMEOUT)
        since = len(api.calls)
        api.press(ADMIN, second, "Yes")
        stale = await api.wait_for_text(ADMIN, "nobody called Madonna", since=since, timeout=TIMEOUT)
        assert "Removed" not in stale.text and "empty" not in stale.text

        # a confirmation asked before a /rename: the old name is nobody's now, the renamed person stays
        since = len(api.calls)
        api.send_text(ADMIN, "/remove Jerry Seinfeld")
        ask = await api.wait_for_text(ADMIN, "Remove Jerry Seinfeld and their", since=since, timeout=TIMEOUT)
        api.send_text(ADMIN, "/rename Jerry Seinfeld -> Jerry S")
        await api.wait_for_text(ADMIN, "Renamed Jerry Seinfeld to Jerry S", since=since, timeout=TIMEOUT)
        since = len(api.calls)
        api.press(ADMIN, ask, "Yes")
        stale = await api.wait_for_text(ADMIN, "nobody called Jerry Seinfeld", since=since, timeout=TIMEOUT)
        assert "Removed" not in stale.text and "empty" not in stale.text
        assert [(p.name, p.photos) for p in service.gallery.people()] == [("Jerry S", 2)]
        assert len(list((root / "Jerry_S").iterdir())) == 2

        since = len(api.calls)
        api.send_text(USER, "/history")
        history = await api.wait_for_text(USER, "UTC", since=since, timeout=TIMEOUT)
        assert "Jerry Seinfeld (" in history.text and "since removed" not in history.text


async def test_the_remove_button_is_refused_to_who_is_no_longer_an_admin(api, people_engine, tmp_path):
    root = Path(people_engine.settings.gallery_dir)
    async with running_service(api, people_engine, tmp_path):
        api.send_text(ADMIN, "/remove Madonna")
        ask = await api.wait_for_text(ADMIN, "Remove Madonna and their 2 photos", timeout=TIMEOUT)
    # the bot restarts with ADMIN_IDS changed: the confirmation (kept in the database) outlives the admin right
    async with running_service(api, people_engine, tmp_path, admin_ids={USER}):
        since = len(api.calls)
        api.press(ADMIN, ask, "Yes")
        assert await answer_of_button(api, "admins only", since) == "For admins only."
        assert (root / "Madonna").is_dir() and len(list((root / "Madonna").iterdir())) == 2
        assert not [c for c in api.calls[since:] if "Removed" in c.text]
