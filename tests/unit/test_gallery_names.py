"""Person names in every script: letters with their combining marks (Devanagari, Thai, Vietnamese, Yoruba) are names,
and their folders round-trip through the gallery; the other rules (a letter first, no path tricks) still hold."""

from __future__ import annotations

import unicodedata

import pytest

from engine import Engine, EngineSettings
from engine.indexing.gallery import RENAMING, Gallery, PersonNameError, check_name, folder_of

# each keeps combining marks after NFKC (vowel signs, viramas, tone marks, a grave on a dotted vowel)
MARKED_NAMES = [
    "प्रिया शर्मा",  # Devanagari: virama (Mn), vowel signs (Mc)
    "क़ासिम ख़ान",  # Devanagari nukta: NFKC keeps it a separate mark
    "สมชาย ใจดี",  # Thai: vowel and tone marks above (Mn)
    "Nguye\u0302\u0303n Va\u0306n An",  # Vietnamese typed with combining accents (NFKC composes them)
    "Ọ̀ṣun Adé",  # Yoruba: a grave on a dotted vowel has no precomposed form
]


@pytest.mark.parametrize("name", MARKED_NAMES)
def test_names_with_combining_marks_are_accepted(name):
    cleaned = check_name(name)
    assert cleaned == unicodedata.normalize("NFKC", name)
    assert folder_of(name) == cleaned.replace(" ", "_")


@pytest.mark.parametrize(
    "name",
    [
        "\u0301Ana",  # a mark with no letter under it
        "\u093fप्रिया",  # a Devanagari vowel sign first
        "Ana \u0301Lima",  # a mark on a space
        "Ana1\u0301",  # a mark on a digit
        "1प्रिया",
        "123",
        "..",
        "प्रिया/शर्मा",
        "../प्रिया",
        "प्रिया_शर्मा",
        "_Ana",
        "😀 Ana",
        "Ana 😀",
        "प्रिया\u200d",  # a zero-width joiner is no mark
        "ि" * 3,
    ],
)
def test_other_rules_still_refuse(name):
    with pytest.raises(PersonNameError):
        check_name(name)


def test_marked_names_round_trip_through_their_folders(tmp_path):
    root = tmp_path / "gallery"
    gallery = Gallery(Engine(EngineSettings(data_dir=tmp_path / "data", gallery_dir=root)), root)
    for name in MARKED_NAMES:
        (root / folder_of(name)).mkdir(parents=True)
    expected = sorted((check_name(name) for name in MARKED_NAMES), key=str.casefold)
    assert [person.name for person in gallery.people()] == expected
    for name in MARKED_NAMES:
        found = gallery.find(name)
        assert found is not None and found.name == check_name(name) and check_name(found.name) == found.name
    # a rename a crash interrupted is finished under such a name too
    hidden = root / f"{RENAMING}{folder_of('स्नेहा राव')}"
    hidden.mkdir()
    (recovered,) = gallery.recover()
    assert recovered.finished and recovered.person.name == "स्नेहा राव" and (root / "स्नेहा_राव").is_dir()
