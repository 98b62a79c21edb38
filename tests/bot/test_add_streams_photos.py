"""/add streams an album: each photo is decoded, checked, saved and let go before the next one is even read (the
engine takes any iterable of photos; the bot downloads the next only when the engine asks), so at most one decoded
photo is held however large the album. Real engine, real photos, the fake Bot API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import BadInputError
from engine.indexing.gallery import Gallery, NoFaceError
from support.bot_helpers import ADMIN, running_service
from support.fake_bot_api import FILE
from support.helpers_engine import CLEAR_FACES, copy_photos, encode, first_photos, gradient_image, sample

TIMEOUT = 90


def photos_of(person: str, count: int) -> list[bytes]:
    """Sample photos of `person` (a sample-gallery folder) other than their clear face."""
    clear = CLEAR_FACES[person.replace("_", " ")]
    return [sample(r).read_bytes() for r in first_photos(person, count + 1) if r != clear][:count]


def saved(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("tg_*.jpg")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def small_gallery(make_engine, tmp_path_factory):
    """A gallery of two people (two photos each), indexed; each test adds someone else."""
    root = tmp_path_factory.mktemp("streamed-adds")
    gallery = root / "gallery"
    for person in ["Ben_Afflek", "Elton_John"]:
        copy_photos(gallery, first_photos(person, 2))
    engine = make_engine(data_dir=root / "data", gallery_dir=gallery)
    engine.load("facenet")
    engine.build_index("facenet")
    return engine


def test_each_photo_is_saved_before_the_next_is_taken(small_gallery):
    gallery = Gallery(small_gallery)
    target = gallery.root / "Mindy_Kaling"
    before = small_gallery.index_info("facenet").count
    mindy = photos_of("Mindy_Kaling", 3)
    offered = [mindy[0], mindy[1], encode(gradient_image(300, 200)), mindy[2]]
    seen: list[list[str]] = []  # the photos saved when the add asked for the next one

    def one_at_a_time() -> Iterator[bytes]:
        for data in offered:
            seen.append(saved(target))
            yield data

    result = gallery.add_photos("Mindy Kaling", one_at_a_time())
    assert [len(names) for names in seen] == [0, 1, 2, 2]  # photo 3 refused: nothing saved for it
    assert [a.number for a in result.added] == [1, 2, 4] and [r.number for r in result.refused] == [3]
    assert "no face found" in result.refused[0].reason
    assert result.person.photos == 3 and saved(target) == sorted(Path(a.file).name for a in result.added)
    assert small_gallery.index_info("facenet").count == before + 3
    assert not list(target.glob(".*"))  # no temporary file left


def test_a_stream_with_nothing_usable_writes_nothing(small_gallery):
    gallery = Gallery(small_gallery)
    before = small_gallery.index_info("facenet").count
    with pytest.raises(NoFaceError):
        gallery.add_photos("Nobody Here", iter([encode(gradient_image(320, 240)), b"not an image"]))
    with pytest.raises(BadInputError, match="no photo"):
        gallery.add_photos("Nobody Here", iter([]))
    assert gallery.find("Nobody Here") is None and not (gallery.root / "Nobody_Here").exists()
    assert small_gallery.index_info("facenet").count == before
    assert not (small_gallery.settings.data_dir / "gallery-unindexed").exists()


def test_a_stream_that_breaks_off_leaves_none_of_its_photos(small_gallery):
    gallery = Gallery(small_gallery)
    before = small_gallery.index_info("facenet").count
    madonna = photos_of("Madonna", 2)

    def broken() -> Iterator[bytes]:
        yield from madonna
        raise ConnectionError("the download of photo 3 failed")

    with pytest.raises(ConnectionError):
        gallery.add_photos("Madonna Ciccone", broken())
    assert gallery.find("Madonna Ciccone") is None and not (gallery.root / "Madonna_Ciccone").exists()
    assert small_gallery.index_info("facenet").count == before
    assert not (small_gallery.settings.data_dir / "gallery-unindexed").exists()
    again = gallery.add_photos("Madonna Ciccone", madonna)  # and the same photos are added whole later
    assert [a.number for a in again.added] == [1, 2] and not any(a.duplicate for a in again.added)


async def test_the_bot_downloads_each_album_photo_after_the_last_is_saved(api, small_gallery, tmp_path):
    """An album captioned /add in Devanagari: photo k+1 is fetched only once photo k is in the person's folder."""
    name = "प्रिया शर्मा"
    target = small_gallery.settings.resolved_gallery() / "प्रिया_शर्मा"
    album = photos_of("Jerry_Seinfeld", 2) + [encode(gradient_image(320, 240))]
    async with running_service(api, small_gallery, tmp_path) as service:
        since = len(api.calls)
        api.hold(FILE)
        api.send_album(ADMIN, album, caption=f"/add {name}")
        for number in range(1, len(album) + 1):

            def fetching(calls, number=number):
                asked = [c for c in calls[since:] if c.method == "getFile"]
                return len(asked) == number and api.held  # photo `number`'s download waits

            await api.wait_for(fetching, timeout=TIMEOUT)
            assert len(saved(target)) == min(number - 1, 2), f"when photo {number} is fetched"
            api.release(FILE)
            if number < len(album):
                api.hold(FILE)
        added = await api.wait_for_text(ADMIN, f"Added 2 photos of {name}", since=since, timeout=TIMEOUT)
        assert "Photo 3 refused: no face found" in added.text
        assert len(saved(target)) == 2
        assert service.gallery.find(name).photos == 2
