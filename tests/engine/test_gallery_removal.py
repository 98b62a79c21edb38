"""Gallery removals and renames the engine must get right whatever the caller (engine/indexing/gallery.py, issue 20):

- in the photos layout a folder is not a person: `Gallery.remove` and `Gallery.rename` refuse (a typed
  BadInputError) and no photo or folder is touched, however deep the event's photos lie;
- removing the last person of a people-layout gallery deletes their photos and empties the index, and a removal of
  the last person killed before its index run (a real child process, killed for real) is finished by `recover`,
  once, not retried on every start.

Real weights, real photos, real files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from test_gallery_recovery import CRASHING_REMOVE, run_crashing

from engine import BadInputError
from engine.indexing.gallery import Gallery, PhotosLayoutError
from support.helpers_engine import BEN, JERRY, MADONNA, MINDY, copy_photos, first_photos, sample, side_by_side


def tree(root: Path) -> dict[str, bytes]:
    """Every file below `root` (hidden ones too) with its content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def event_engine(tmp_path, make_engine):
    """A photos-layout gallery whose `Ceremony` folder holds its photos only in subfolders (not indexed: the refusals
    come before any index work)."""
    root = tmp_path / "gallery"
    photos = {
        "Ceremony/day-1/IMG_0001.jpg": side_by_side(sample(JERRY), sample(MINDY)),
        "Ceremony/day-2/IMG_0002.jpg": Image.open(sample(MADONNA)),
        "Jane_Doe/tg_0000.jpg": Image.open(sample(BEN)),  # what `/add Jane Doe` saves in this layout
    }
    for relative, image in photos.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(root / relative, quality=92)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=root, gallery_layout="photos")
    yield engine
    engine.close()


def test_the_photos_layout_refuses_remove_and_rename_and_touches_no_photo(event_engine):
    root = Path(event_engine.settings.gallery_dir)
    before = tree(root)
    gallery = Gallery(event_engine)
    for edit in (
        lambda: gallery.remove("Ceremony"),
        lambda: gallery.remove("Jane Doe"),
        lambda: gallery.rename("Ceremony", "Wedding"),
        lambda: gallery.rename("Jane Doe", "Janet Doe"),
        lambda: gallery.rename("Jane Doe", "Ceremony"),  # a merge of two folders
    ):
        with pytest.raises(PhotosLayoutError) as refused:
            edit()
        assert isinstance(refused.value, BadInputError)
        assert "photos layout" in str(refused.value) and "hide" in str(refused.value)
    assert tree(root) == before  # not one photo or folder deleted, moved or renamed
    assert not (Path(event_engine.settings.data_dir) / "gallery-unindexed").exists()


@pytest.fixture
def one_person(tmp_path, make_engine):
    """A people-layout gallery of one person (two photos), indexed."""
    gallery = tmp_path / "gallery"
    copy_photos(gallery, first_photos("Madonna", 2))
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.build_index("facenet")
    yield engine
    engine.close()


def assert_emptied(engine) -> None:
    """No photo left on disk (no hidden `.removing~` folder either), nothing in the index, nothing left to redo."""
    root = Path(engine.settings.gallery_dir)
    assert list(root.iterdir()) == []
    engine.refresh()
    store = engine.searcher("facenet").store
    assert store.files() == {} and store.people() == {} and engine.index_info("facenet").count == 0
    assert not (Path(engine.settings.data_dir) / "gallery-unindexed").exists()


def test_removing_the_last_person_deletes_their_photos_and_empties_the_index(one_person):
    gallery = Gallery(one_person)

    removed = gallery.remove("Madonna")

    assert removed.person.name == "Madonna" and removed.photos == 2 and removed.emptied
    assert_emptied(one_person)
    assert gallery.recover() == []  # nothing left to finish
    assert_emptied(one_person)


def test_a_last_person_removal_killed_before_its_index_run_is_finished_by_recover(one_person, caplog):
    run_crashing(one_person, CRASHING_REMOVE, name="Madonna", dies_in="_reindex")
    root = Path(one_person.settings.gallery_dir)
    assert [p.name for p in root.iterdir()] == [".removing~Madonna"]  # killed with her photos in the hidden folder

    assert Gallery(one_person).recover() == []

    assert_emptied(one_person)
    assert "cannot" not in caplog.text  # finished, not "cannot index the changes ... yet"
    caplog.clear()
    assert Gallery(one_person).recover() == []  # the next start has nothing to redo
    assert "interrupted" not in caplog.text
