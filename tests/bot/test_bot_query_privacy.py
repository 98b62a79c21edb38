"""What the bot keeps of a query (issue 20): an album's Telegram file_ids only while the album is collected (an
admin's parts stay, so that a reply `/add Name` finds them), and `/forget` waiting for the user's running search, so
that nothing of it is recorded after "Deleted N queries". End to end through the fake Bot API, on a real SQLite file."""

from __future__ import annotations

import sqlite3

import pytest

from support.bot_helpers import ADMIN, USER, person_photo, running_service
from support.helpers_engine import BEN, ELTON, MADONNA, copy_photos, first_photos

TIMEOUT = 120


@pytest.fixture(scope="module")
def privacy_engine(tmp_path_factory, make_engine):
    """A small gallery (Madonna, Elton John, Ben Afflek), indexed once."""
    gallery = tmp_path_factory.mktemp("privacy-gallery") / "gallery"
    copy_photos(
        gallery,
        first_photos("Madonna", 3)
        + first_photos("Elton_John", 3)
        + first_photos("Ben_Afflek", 3)
        + [MADONNA, ELTON, BEN],
    )
    engine = make_engine(data_dir=tmp_path_factory.mktemp("privacy-data"), gallery_dir=gallery)
    engine.load("facenet")
    engine.build_index("facenet")
    return engine


def file_ids(api, update_ids: list[int]) -> set[str]:
    """Every Telegram file_id of the photos these updates carried (each size)."""
    return {size["file_id"] for u in update_ids for size in api.messages[u]["photo"]}


def rows_holding(database, needles: set[str]) -> list[tuple[str, tuple]]:
    """(table, row) of every row of every table of the SQLite file that holds one of `needles`."""
    found = []
    with sqlite3.connect(database) as connection:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from sqlite_master
                if any(needle in str(value) for value in row for needle in needles):
                    found.append((table, row))
    return found


async def test_an_albums_file_ids_are_kept_only_while_it_is_collected_unless_an_admin_sent_it(
    api, privacy_engine, tmp_path
):
    database = tmp_path / "bot.sqlite3"
    # k = MAX_K and one face a photo: the answer has no buttons (which would hold the photos for More matches)
    async with running_service(api, privacy_engine, tmp_path, default_k=3, max_k=3):
        since = len(api.calls)
        album = api.send_album(USER, [person_photo("Madonna"), person_photo("Elton John")])
        summary = await api.wait_for_text(USER, "Photo 2: most likely Elton John", since=since, timeout=TIMEOUT)
        assert summary.params.get("reply_markup") is None
        assert not rows_holding(database, file_ids(api, album))

        since = len(api.calls)
        album = api.send_album(ADMIN, [person_photo("Madonna"), person_photo("Ben Afflek")])
        await api.wait_for_text(ADMIN, "Photo 2: most likely Ben Afflek", since=since, timeout=TIMEOUT)
        kept = rows_holding(database, file_ids(api, album))  # an admin may still reply /add Name to the album
        assert {table for table, _ in kept} == {"album_parts"} and len(kept) == 2, kept


async def test_forget_waits_for_the_users_running_search(api, privacy_engine, tmp_path):
    """/forget while the user's search is under way (its matches held in the fake Bot API): the search's query and
    buttons are not recorded after "Deleted N queries"."""
    database = tmp_path / "bot.sqlite3"
    async with running_service(api, privacy_engine, tmp_path, default_k=3):
        since = len(api.calls)
        api.hold("sendMediaGroup")  # the search has found its matches; their album waits, the history is not written
        api.send_photo(USER, person_photo("Madonna"))
        await api.wait_for(lambda calls: "sendmediagroup" in api.held, timeout=TIMEOUT)
        api.send_text(USER, "/forget")
        first = await api.wait_for_text(USER, "history", since=since, timeout=TIMEOUT)
        api.release("sendMediaGroup")
        await api.wait_for_text(USER, "most likely Madonna", since=since, timeout=TIMEOUT)

        def forgotten(calls):
            return [c for c in calls[since:] if c.chat_id == USER and ("Deleted" in c.text or "empty" in c.text)]

        done = (await api.wait_for(forgotten, timeout=TIMEOUT))[0]
        texts = [c.text for c in api.calls_to(USER, "sendMessage", since=since)]
        assert texts.index(done.text) > next(i for i, t in enumerate(texts) if "most likely" in t), texts
        assert "once" in first.text, first.text  # said at once: the deletion waits for the answer
        assert done.text == "Deleted 1 queries from your history."
        with sqlite3.connect(database) as connection:
            assert connection.execute("SELECT count(*) FROM queries WHERE user_id = ?", (USER,)).fetchone() == (0,)
            assert connection.execute("SELECT count(*) FROM button_states WHERE user_id = ?", (USER,)).fetchone() == (
                0,
            )
            assert connection.execute("SELECT count(*) FROM claims WHERE key = ?", (f"user:{USER}",)).fetchone() == (0,)
