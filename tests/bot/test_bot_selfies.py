"""Several selfies, one person (issue 21, part 5), end to end through the fake Bot API with real weights and photos:
an album of two selfies of one person is one fused query (one "appears in N photos" answer), an album of two
different people is refused, and an album with a group photo is answered photo by photo as before.

The gallery: Madonna in four photos (two with someone else), Jerry Seinfeld in two; the selfies are other photos.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.search.fusion import fuse
from support.bot_helpers import USER, albums, running_service
from support.helpers_engine import JERRY, MADONNA, MINDY, encode, first_photos, sample, side_by_side

TIMEOUT = 120
MADONNA_SELFIES = [
    "Madonna/httpcdncdnjustjaredcomwpcontentuploadsheadlinesmadonnatalksparisattackstearsjpg.jpg",
]
JERRY_SELFIE = "Jerry_Seinfeld/httpaurorasblogcomwpcontentuploadsjerryseinfeldpublicityshotjpg.jpg"


def others(person: str, *used: str) -> list[str]:
    return [p for p in first_photos(person, 30) if p not in used]


@pytest.fixture(scope="module")
def selfie_engine(make_engine, tmp_path_factory):
    """The event gallery (6 photos), indexed in the photos layout, and the photos left over for selfies."""
    root = tmp_path_factory.mktemp("selfie-gallery")
    madonna = others("Madonna", MADONNA, *MADONNA_SELFIES)
    jerry = others("Jerry_Seinfeld", JERRY, JERRY_SELFIE)
    photos = {
        "day-1/ceremony/IMG_0001.jpg": side_by_side(sample(JERRY), sample(MADONNA)),
        "day-1/ceremony/IMG_0002.jpg": side_by_side(sample(madonna[0]), sample(MINDY)),
        "day-2/portraits/IMG_0003.jpg": Image.open(sample(madonna[1])),
        "day-2/portraits/IMG_0004.jpg": Image.open(sample(madonna[2])),
        "day-2/portraits/IMG_0005.jpg": Image.open(sample(jerry[0])),
    }
    for relative, image in photos.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(root / relative, quality=92)
    engine = make_engine(data_dir=tmp_path_factory.mktemp("selfie-data"), gallery_dir=root, gallery_layout="photos")
    engine.build_index("facenet")
    yield engine, madonna[3:]
    engine.close()


def selfie_vector(engine, data: bytes) -> np.ndarray:
    _, vectors = engine.searcher("facenet").query_vectors([engine.decode(data)], None)
    assert len(vectors) == 1
    return vectors[0]


async def test_two_selfies_of_one_person_are_one_fused_query(api, selfie_engine, tmp_path):
    engine, spare = selfie_engine
    engine.load_networks("facenet")
    first = sample(MADONNA_SELFIES[0]).read_bytes()
    second = next(
        data
        for data in (sample(p).read_bytes() for p in spare)
        if len(engine.searcher("facenet").query_vectors([engine.decode(data)], None)[0][0]) == 1
    )
    fused = fuse(np.stack([selfie_vector(engine, first), selfie_vector(engine, second)]))
    want = engine.searcher("facenet").photos_for(fused.vector)
    assert want, "the fused template should find Madonna"
    async with running_service(api, engine, tmp_path) as service:
        since = len(api.calls)
        api.send_album(USER, [first, second])
        summary = await api.wait_for_text(USER, "appears in", since=since, timeout=TIMEOUT)
        texts = [c.text for c in api.calls_to(USER, "sendMessage", since=since)]
        assert sum("appears in" in t or "not in any photo" in t for t in texts) == 1  # one answer, not one a photo
        assert f"appears in {len(want)} photo" in summary.text
        assert "2 selfies" in summary.text and "Photo 1" not in summary.text and "Photo 2" not in summary.text
        sent = [
            item.get("caption", "") if call.method == "sendMediaGroup" else call.text
            for call in albums(api, USER, since)
            for item in (call.media() if call.method == "sendMediaGroup" else [{}])
        ]
        assert len(sent) == len(want)
        history = await service.runtime.db(service.runtime.store.history, USER, USER, 10)
        assert len(history) == 1


async def test_selfies_of_different_people_are_refused(api, selfie_engine, tmp_path):
    engine, _ = selfie_engine
    madonna, jerry = sample(MADONNA_SELFIES[0]).read_bytes(), sample(JERRY_SELFIE).read_bytes()
    async with running_service(api, engine, tmp_path):
        since = len(api.calls)
        api.send_album(USER, [madonna, jerry])
        refusal = await api.wait_for_text(USER, "different people", since=since, timeout=TIMEOUT)
        assert "photo 1 and photo 2" in refusal.text
        assert not albums(api, USER, since)  # nothing else answered
        assert not [c for c in api.calls_to(USER, "sendMessage", since=since) if "appears in" in c.text]


async def test_an_album_with_a_group_photo_is_answered_photo_by_photo(api, selfie_engine, tmp_path):
    engine, _ = selfie_engine
    madonna = sample(MADONNA_SELFIES[0]).read_bytes()
    group = side_by_side(sample(MINDY), sample(JERRY_SELFIE))
    async with running_service(api, engine, tmp_path):
        since = len(api.calls)
        api.send_album(USER, [madonna, encode(group.convert("RGB"))])
        summary = await api.wait_for_text(USER, "Photo 2 · Face 2", since=since, timeout=TIMEOUT)
        assert "Photo 1" in summary.text
        assert "selfies" not in summary.text
