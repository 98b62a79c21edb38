"""Gallery edits a crash interrupted (engine/indexing/gallery.py): a case-only /rename killed between its two folder renames
leaves the person in a hidden folder; the next edit (or `Gallery.recover`) brings them back, photos and index too.
The same for a merge killed mid-move, a removal killed before or after its index run, and a photos-layout /add
killed before its faces were named.

Real files and real processes: the crash is a child process that runs `Gallery.rename` and dies (os._exit) right
after the first folder rename, as a power cut or an OOM kill would leave it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.indexing.gallery import Gallery, PersonNotFoundError
from support.helpers_engine import MADONNA, copy_photos, first_photos, sample

ROOT = Path(__file__).resolve().parents[2]

# Runs the real rename; the only change: the process dies right after the first folder rename (into a hidden
# name), before the second one, and before the index is touched.
CRASHING_RENAME = """
import os, pathlib, sys
sys.path.insert(0, {root!r})
from engine import Engine, EngineSettings
from engine.indexing.gallery import Gallery, PersonNotFoundError

rename = pathlib.Path.rename

def rename_then_die(self, target):
    moved = rename(self, target)
    if pathlib.Path(target).name.startswith("."):
        os._exit(9)
    return moved

pathlib.Path.rename = rename_then_die
settings = EngineSettings(data_dir={data_dir!r}, gallery_dir={gallery!r}, models_dir={models!r})
Gallery(Engine(settings)).rename({old!r}, {new!r})
print("the rename finished: it was meant to crash half-way")
"""


@pytest.fixture
def gallery_engine(tmp_path, make_engine):
    """Two people, two photos each, indexed."""
    gallery = tmp_path / "gallery"
    for person in ["Jerry_Seinfeld", "Madonna"]:
        copy_photos(gallery, first_photos(person, 2))
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.build_index("facenet")
    return engine


def run_crashing(engine, script: str, **arguments: str) -> None:
    """Run a gallery edit in a child process that dies where `script` says (os._exit(9)) on `engine`'s data."""
    settings = engine.settings
    source = script.format(
        root=str(ROOT),
        data_dir=str(settings.data_dir),
        gallery=str(settings.gallery_dir),
        models=str(settings.models_dir),
        **arguments,
    )
    child = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)
    assert child.returncode == 9, child.stdout + child.stderr


def crash_mid_rename(engine, old: str, new: str) -> list[str]:
    """Run the rename in a child process that dies between its two folder renames; the hidden folders it left."""
    run_crashing(engine, CRASHING_RENAME, old=old, new=new)
    return sorted(p.name for p in Path(engine.settings.gallery_dir).iterdir() if p.name.startswith("."))


def indexed_people(engine) -> dict[str, int]:
    engine.refresh()
    return engine.searcher("facenet").store.people()


def test_a_case_only_rename_killed_half_way_is_finished_by_the_next_edit(gallery_engine):
    left = crash_mid_rename(gallery_engine, "Jerry Seinfeld", "jerry seinfeld")
    assert len(left) == 1  # the person is in a hidden folder now: no listing shows them
    gallery = Gallery(gallery_engine)
    assert [p.name for p in gallery.people()] == ["Madonna"]

    gallery.remove("Madonna")  # the next edit, of someone else

    assert [(p.name, p.photos) for p in gallery.people()] == [("jerry seinfeld", 2)]  # the new name, every photo
    assert not [p for p in Path(gallery.root).iterdir() if p.name.startswith(".")]
    assert indexed_people(gallery_engine) == {"jerry seinfeld": 2}  # searches find them under the new name


def test_an_older_versions_leftover_gets_its_old_name_back(gallery_engine):
    """Before this fix the hidden folder was `.<old folder>.renaming`, without the new name: the person comes back
    under the old one (the user can rename again)."""
    root = Path(gallery_engine.settings.gallery_dir)
    (root / "Jerry_Seinfeld").rename(root / ".Jerry_Seinfeld.renaming")  # what the older rename left on a crash
    gallery = Gallery(gallery_engine)
    assert [p.name for p in gallery.people()] == ["Madonna"]

    with pytest.raises(PersonNotFoundError, match="nobody called Someone Else"):
        gallery.remove("Someone Else")  # even an edit that is refused brings them back first

    assert [(p.name, p.photos) for p in gallery.people()] == [("Jerry Seinfeld", 2), ("Madonna", 2)]
    assert indexed_people(gallery_engine) == {"Jerry Seinfeld": 2, "Madonna": 2}


def test_recover_merges_into_a_person_of_that_name_and_reports_it(gallery_engine):
    left = crash_mid_rename(gallery_engine, "Jerry Seinfeld", "jerry seinfeld")
    root = Path(gallery_engine.settings.gallery_dir)
    copy_photos(root, first_photos("Jerry_Seinfeld", 3)[2:])  # someone made Jerry_Seinfeld/ again meanwhile, by hand
    (root / "Jerry_Seinfeld").rename(root / "jerry_seinfeld")

    recovered = Gallery(gallery_engine).recover()

    assert [(r.leftover, r.person.folder, r.person.photos, r.finished, r.merged) for r in recovered] == [
        (left[0], "jerry_seinfeld", 3, True, True)
    ]
    assert not (root / left[0]).exists()
    assert indexed_people(gallery_engine) == {"jerry seinfeld": 3, "Madonna": 2}
    assert Gallery(gallery_engine).recover() == []  # nothing left to do


def test_an_index_run_finishes_it_before_indexing(gallery_engine, capsys):
    """`python -m engine index` (the same function, in-process): the person is indexed under the new name."""
    from engine.tools.commands import index

    crash_mid_rename(gallery_engine, "Jerry Seinfeld", "jerry seinfeld")

    assert index(gallery_engine.settings, None, "facenet", as_json=True) == 0

    assert [p.name for p in Gallery(gallery_engine).people()] == ["jerry seinfeld", "Madonna"]
    assert indexed_people(gallery_engine) == {"jerry seinfeld": 2, "Madonna": 2}


async def test_the_bot_finishes_it_when_it_starts(api, gallery_engine, tmp_path):
    from support.bot_helpers import running_service

    crash_mid_rename(gallery_engine, "Jerry Seinfeld", "jerry seinfeld")

    async with running_service(api, gallery_engine, tmp_path) as service:
        assert [(p.name, p.photos) for p in service.gallery.people()] == [("jerry seinfeld", 2), ("Madonna", 2)]
        assert indexed_people(gallery_engine) == {"jerry seinfeld": 2, "Madonna": 2}


# Runs the real removal; the only change: the process dies when the step `dies_in` begins. `_reindex`: the folder
# is gone, the index still has the person, as a crash between an edit's change on disk and its index run would
# leave it; `_purge_removed`: the index run is done, the stores' files still hold the vectors, the photos are there.
CRASHING_REMOVE = """
import os, sys
sys.path.insert(0, {root!r})
from engine import Engine, EngineSettings
from engine.indexing.gallery import Gallery

setattr(Gallery, {dies_in!r}, lambda self: os._exit(9))
settings = EngineSettings(data_dir={data_dir!r}, gallery_dir={gallery!r}, models_dir={models!r})
Gallery(Engine(settings)).remove({name!r})
print("the removal finished: it was meant to crash in", {dies_in!r})
"""


def crash_before_reindex(engine, name: str) -> None:
    run_crashing(engine, CRASHING_REMOVE, name=name, dies_in="_reindex")


def test_an_edit_killed_before_its_index_run_is_indexed_by_recover(gallery_engine):
    crash_before_reindex(gallery_engine, "Madonna")
    gallery = Gallery(gallery_engine)
    assert [p.name for p in gallery.people()] == ["Jerry Seinfeld"]  # gone from the gallery...
    assert indexed_people(gallery_engine) == {"Jerry Seinfeld": 2, "Madonna": 2}  # ...but searches still find her

    assert gallery.recover() == []  # no rename to finish, but the removal's changes are indexed

    assert indexed_people(gallery_engine) == {"Jerry Seinfeld": 2}
    assert not (Path(gallery_engine.settings.data_dir) / "gallery-unindexed").exists()


async def test_the_bot_indexes_an_interrupted_edit_when_it_starts(api, gallery_engine, tmp_path):
    from support.bot_helpers import running_service

    crash_before_reindex(gallery_engine, "Madonna")

    async with running_service(api, gallery_engine, tmp_path):
        assert indexed_people(gallery_engine) == {"Jerry Seinfeld": 2}


def vectors_on_disk(engine) -> np.ndarray:
    """Every vector in the local store's segment files, read back with faiss: removed rows' ones included."""
    import faiss

    from engine.stores.local import _vectors_of

    files = sorted((engine.settings.index_dir("facenet") / "segments").glob("*.faiss"))
    assert files
    return np.concatenate([_vectors_of(faiss.read_index(str(path)))[0] for path in files])


def vectors_of(engine, name: str) -> np.ndarray:
    store = engine.searcher("facenet").store
    return np.concatenate([vectors[[row.name == name for row in rows]] for rows, vectors in store.face_vectors()])


def test_a_removed_persons_vectors_leave_the_segment_files(gallery_engine):
    theirs = vectors_of(gallery_engine, "Madonna")
    assert len(theirs) == 2
    before = vectors_on_disk(gallery_engine)
    assert (before @ theirs.T).max() > 0.9999  # her vectors are in the files

    Gallery(gallery_engine).remove("Madonna")

    after = vectors_on_disk(gallery_engine)
    assert (after @ theirs.T).max() < 0.9999  # gone from the files, not only hidden from searches
    assert len(after) == 2 and indexed_people(gallery_engine) == {"Jerry Seinfeld": 2}


def test_a_removal_killed_after_its_index_run_is_finished_by_recover(gallery_engine):
    theirs = vectors_of(gallery_engine, "Madonna")
    run_crashing(gallery_engine, CRASHING_REMOVE, name="Madonna", dies_in="_purge_removed")
    root = Path(gallery_engine.settings.gallery_dir)
    assert [p.name for p in Gallery(gallery_engine).people()] == ["Jerry Seinfeld"]
    assert indexed_people(gallery_engine) == {"Jerry Seinfeld": 2}  # searches no longer find her...
    assert (vectors_on_disk(gallery_engine) @ theirs.T).max() > 0.9999  # ...but her vectors are still in the files

    assert Gallery(gallery_engine).recover() == []

    assert (vectors_on_disk(gallery_engine) @ theirs.T).max() < 0.9999
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # her photos are deleted too
    assert indexed_people(gallery_engine) == {"Jerry Seinfeld": 2}


# Runs the real merge; the only change: the process dies once the first photo has moved into the other person's
# folder, before the next one.
CRASHING_MERGE = """
import os, pathlib, sys
sys.path.insert(0, {root!r})
from engine import Engine, EngineSettings
from engine.indexing.gallery import Gallery

rename = pathlib.Path.rename

def rename_then_die(self, target):
    moved = rename(self, target)
    if self.parent.name.startswith("."):  # a photo moved out of the hidden folder
        os._exit(9)
    return moved

pathlib.Path.rename = rename_then_die
settings = EngineSettings(data_dir={data_dir!r}, gallery_dir={gallery!r}, models_dir={models!r})
Gallery(Engine(settings)).rename({old!r}, {new!r})
print("the merge finished: it was meant to crash mid-move")
"""


def test_a_merge_killed_mid_move_is_finished_by_recover(gallery_engine):
    run_crashing(gallery_engine, CRASHING_MERGE, old="Madonna", new="Jerry Seinfeld")
    root = Path(gallery_engine.settings.gallery_dir)
    assert [(p.name, p.photos) for p in Gallery(gallery_engine).people()] == [("Jerry Seinfeld", 3)]  # one moved

    recovered = Gallery(gallery_engine).recover()

    assert [(r.person.folder, r.person.photos, r.finished, r.merged) for r in recovered] == [
        ("Jerry_Seinfeld", 4, True, True)
    ]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    assert indexed_people(gallery_engine) == {"Jerry Seinfeld": 4}


# The photos layout's /add: the photo saved and indexed, then the process dies before its face is named.
CRASHING_ADD = """
import os, sys
sys.path.insert(0, {root!r})
from engine import Engine, EngineSettings
from engine.indexing.gallery import Gallery

def die(self, name, result):
    os._exit(9)

Gallery._name_faces = die
settings = EngineSettings(data_dir={data_dir!r}, gallery_dir={gallery!r}, models_dir={models!r}, gallery_layout="photos")
Gallery(Engine(settings)).add_photos({name!r}, [open({photo!r}, "rb").read()])
print("the add finished: it was meant to crash before naming")
"""


def test_an_add_killed_before_naming_its_face_is_named_by_recover(tmp_path, make_engine):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, first_photos("Jerry_Seinfeld", 2))
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, gallery_layout="photos")
    engine.build_index("facenet")
    run_crashing(engine, CRASHING_ADD, name="Madonna Ciccone", photo=str(sample(MADONNA)))

    (saved,) = [p.relative_to(gallery).as_posix() for p in gallery.rglob("tg_*.jpg")]
    engine.refresh()
    assert saved in engine.searcher("facenet").store.files()  # indexed before the crash...
    people = engine.people()
    assert "Madonna Ciccone" not in [p.name for p in people.list()]  # ...but not named
    marker = Path(engine.settings.data_dir) / "gallery-unnamed.json"
    assert marker.exists()

    assert Gallery(engine).recover() == []

    (madonna,) = [p for p in people.list() if p.name == "Madonna Ciccone"]
    assert [face.path for face in madonna.faces] == [saved]
    assert not marker.exists()
