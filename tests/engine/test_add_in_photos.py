"""`/add Name` in the photos layout names the person of the added photo's face (issue 14), on real weights and real
photos: the engine's `Gallery.add_photos` and the registry's `name_face` rule, through index runs and a re-cluster.

The gallery is a small event composed from sample-gallery photos: Jerry Seinfeld and Mindy Kaling side by side,
portraits of Jerry, Mindy, Ben Afflek and Madonna. Elton John is in no photo.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageOps

from engine.errors import FaceNamedError
from engine.indexing.gallery import Gallery
from engine.people import FaceRef
from support.helpers_engine import (
    BEN,
    ELTON,
    JERRY,
    MADONNA,
    MINDY,
    encode,
    first_photos,
    run_people_cli,
    sample,
    side_by_side,
)


def others(person: str, *used: str) -> list[str]:
    return [p for p in first_photos(person, 12) if p not in used]


@pytest.fixture(scope="module")
def event(make_engine, tmp_path_factory):
    """The event gallery in the photos layout, indexed (its faces grouped into persons, none named)."""
    root = tmp_path_factory.mktemp("add-event")
    jerry, mindy, ben, madonna = others("Jerry_Seinfeld", JERRY), others("Mindy_Kaling", MINDY), others("Ben_Afflek", BEN), others("Madonna", MADONNA)  # fmt: skip
    photos = {
        "day-1/IMG_0001.jpg": side_by_side(sample(JERRY), sample(MINDY)),
        "day-1/IMG_0002.jpg": Image.open(sample(jerry[0])),
        "day-1/IMG_0003.jpg": Image.open(sample(jerry[1])),
        "day-2/IMG_0004.jpg": Image.open(sample(mindy[0])),
        "day-2/IMG_0005.jpg": Image.open(sample(ben[0])),
        "day-2/IMG_0006.jpg": Image.open(sample(madonna[0])),
        "day-2/IMG_0007.jpg": Image.open(sample(madonna[1])),
    }
    for relative, image in photos.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(root / relative, quality=92)
    engine = make_engine(data_dir=tmp_path_factory.mktemp("add-data"), gallery_dir=root, gallery_layout="photos")
    engine.build_index("facenet")
    assert all(p.name is None for p in engine.people().list())
    yield engine
    engine.close()


def photo(relative: str, mirrored: bool = False) -> bytes:
    with Image.open(sample(relative)) as image:
        picture = image.convert("RGB")
        return encode(ImageOps.mirror(picture) if mirrored else picture, quality=92)


def face_of(engine, file: str) -> FaceRef:
    """The largest indexed face of a gallery photo."""
    rows = [row for part, _ in engine.searcher("facenet").store.face_vectors([file]) for row in part]
    return FaceRef(file, max(rows, key=lambda row: row.box[2] * row.box[3]).box)


def people_json(engine) -> list[dict]:
    done = run_people_cli(engine, "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_add_names_the_added_face_and_keeps_the_name(event):
    gallery, people = Gallery(event), event.people()

    # Madonna: her face is named; the person of the add is listed with the name and the face
    first = gallery.add_photos("Madonna Ciccone", [photo(MADONNA)])
    (added,) = first.added
    assert first.named is not None and first.named.name == "Madonna Ciccone"
    assert added.person is not None and added.person.id == first.named.id and added.not_named is None
    assert added.file.startswith("Madonna_Ciccone/tg_")  # saved in the name's folder, as in the people layout
    madonna = first.named.id
    listed = {p["id"]: p for p in people_json(event)}
    assert listed[madonna]["name"] == "Madonna Ciccone"
    assert face_of(event, added.file).to_dict() in listed[madonna]["faces"]

    # a second photo of her: the same person
    second = gallery.add_photos("Madonna Ciccone", [photo(others("Madonna", MADONNA)[2])])
    assert second.named is not None and second.named.id == madonna and second.added[0].person.id == madonna
    assert {face_of(event, a.file) for a in first.added + second.added} <= set(people.get(madonna).faces)
    assert second.named.photos == people.get(madonna).photos

    # Elton John is in no photo: his face waits for a person, and founds one of that name
    elton = gallery.add_photos("Elton John", [photo(ELTON)])
    assert elton.named is not None and elton.named.name == "Elton John" and elton.named.photos == 1
    assert people.get(elton.named.id).faces == [face_of(event, elton.added[0].file)]

    # Jerry's face is named Jerry; another name for his face is refused, nothing renamed, the photo stays indexed
    jerry = gallery.add_photos("Jerry Seinfeld", [photo(JERRY)]).named
    assert jerry is not None
    before = [p.to_dict() for p in people.list()]
    refused = gallery.add_photos("Someone Else", [photo(JERRY, mirrored=True)])
    (not_named,) = refused.added
    assert refused.named is None and not_named.person is None
    assert not_named.owner is not None and (not_named.owner.id, not_named.owner.name) == (jerry.id, "Jerry Seinfeld")
    assert not_named.not_named == (
        f"that face is already Jerry Seinfeld's (person {jerry.id}): rename or merge that person to change it"
    )
    assert not_named.file in event.searcher("facenet").store.files()
    after = [p for p in people.list() if p.id != jerry.id]
    assert [p.to_dict() for p in after] == [p for p in before if p["id"] != jerry.id]
    assert people.get(jerry.id).name == "Jerry Seinfeld" and "Someone Else" not in [p.name for p in people.list()]
    with pytest.raises(FaceNamedError, match="already Jerry Seinfeld's"):
        people.name_face(not_named.file, face_of(event, not_named.file).box, "Someone Else")

    # the names and their faces survive an index run and a re-cluster
    named = {p.id: (p.name, set(p.faces)) for p in people.list() if p.name is not None}
    assert set(named) == {madonna, elton.named.id, jerry.id}
    (event.settings.gallery_dir / "day-3").mkdir()
    Image.open(sample(others("Mindy_Kaling", MINDY)[1])).convert("RGB").save(
        event.settings.gallery_dir / "day-3" / "a.jpg"
    )
    event.build_index("facenet")
    report = event.recluster_people()
    assert report.reclustered
    for person_id, (name, faces) in named.items():
        assert people.get(person_id).name == name and set(people.get(person_id).faces) >= faces


def test_name_face_rule_for_unnamed_and_waiting_faces(event):
    """The registry's rule on faces clustering put into an unnamed person (a face taken out by hand waits)."""
    people = event.people()
    unnamed = next(p for p in people.list() if p.name is None and len(p.faces) >= 2)
    taken, kept = unnamed.faces[0], unnamed.faces[1]
    assert people.unassign(taken.path, taken.box) == [taken]  # waiting now (taken out by hand)
    created = people.name_face(taken.path, taken.box, "  Test\u3000Person ")  # the registry's name rules: NFKC
    assert created.change == "new person" and created.person.name == "Test Person"
    assert people.person_of([taken]) == [created.person]
    merged = people.name_face(kept.path, kept.box, "Test Person")  # an unnamed person joins the one of that name
    assert merged.change == "merged" and merged.person == created.person
    assert set(people.get(created.person.id).faces) == set(unnamed.faces)
    assert unnamed.id not in [p.id for p in people.list()]
    assert people.name_face(kept.path, kept.box, "Test Person").change == "unchanged"
    again = people.name_face(kept.path, kept.box, "test person")  # the same name in other case: that person
    assert again.change == "unchanged" and again.person == created.person
    assert people.unassign(taken.path, taken.box) == [taken]
    joined = people.name_face(taken.path, taken.box, "TEST PERSON")  # a waiting face joins it, whatever the case
    assert joined.change == "joined" and joined.person == created.person
    with pytest.raises(FaceNamedError, match="already Test Person's"):
        people.name_face(kept.path, kept.box, "Other Person")
