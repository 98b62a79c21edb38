"""A watched gallery (engine/indexing/watch.py): photos indexed as they land in a real folder, with real weights, on
both observers (inotify, and a polling one as on a network mount).

A file is read only once its size and mtime have held still for WATCH_SETTLE_S: one written in chunks, as an upload
tool writes it, is left out of the runs that happen meanwhile and indexed once complete, once; a broken file is
recorded and logged once and read again only when it changes; a file deleted before it settles is never indexed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.images import list_gallery_images
from engine.indexing.watch import GalleryWatcher, Settler, WatchStatus, watch_loop
from engine.stores.base import FileRecord
from engine.types import IndexReport
from support.helpers_engine import BEN, JERRY, MADONNA, MINDY, bad_image_files, encode, sample, side_by_side

SETTLE_S = 0.5
PAUSE_S = 0.1  # an upload tool's pause between two chunks: well under SETTLE_S
TIMEOUT = 120
OLD = time.time() - 3600  # an mtime from before the watch began


def wait_until(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def group_photo() -> bytes:
    return encode(side_by_side(sample(JERRY), sample(MADONNA)), quality=92)


@dataclass
class Watching:
    """A watch loop running in a thread over `gallery`, and what it reported."""

    engine: Any
    gallery: Path
    reports: list[IndexReport] = field(default_factory=list)
    statuses: list[WatchStatus] = field(default_factory=list)

    def files(self) -> dict[str, FileRecord]:
        return self.engine.searcher("facenet").store.files()

    def indexed(self, relative: str) -> FileRecord | None:
        """The file's record once it is indexed without an error, else None."""
        record = self.files().get(relative)
        return record if record is not None and record.error is None else None

    def total(self, what: str) -> int:
        return sum(getattr(report, what) for report in self.reports)

    def idle(self) -> bool:
        """No run under way: a run whose writes were seen before this was asked has ended (its reports are in)."""
        return bool(self.statuses) and not self.statuses[-1].running

    def wait(self, condition: Callable[[], object], what: str) -> None:
        """Until `condition()` holds and the run that made it so has ended."""
        wait_until(lambda: condition() and self.idle(), what)


@contextlib.contextmanager
def watching(
    make_engine: Callable[..., Any], tmp_path: Path, poll_s: float, first: dict[str, bytes], **settings: Any
) -> Iterator[Watching]:
    """A photos-layout gallery holding `first` (photos from before the watch), watched until the block ends."""
    gallery = tmp_path / "gallery"
    for relative, data in first.items():
        (gallery / relative).parent.mkdir(parents=True, exist_ok=True)
        (gallery / relative).write_bytes(data)
        os.utime(gallery / relative, (OLD, OLD))
    engine = make_engine(
        data_dir=tmp_path / "data", gallery_dir=gallery, gallery_layout="photos",
        watch_settle_s=SETTLE_S, watch_poll_s=poll_s, **settings,
    )  # fmt: skip
    watch = Watching(engine, gallery)
    stop = threading.Event()
    thread = threading.Thread(
        target=watch_loop,
        args=(engine, ["facenet"], gallery, engine.settings, stop.is_set),
        kwargs={"on_indexed": watch.reports.extend, "progress": watch.statuses.append},
        daemon=True,
    )
    thread.start()
    try:
        watch.wait(lambda: set(first) <= set(watch.files()), "the photos already there indexed by the first run")
        yield watch
    finally:
        stop.set()
        thread.join(timeout=60)
        engine.close()
    assert not thread.is_alive(), "the watch loop did not stop"


@pytest.fixture(params=["inotify", "polling"])
def poll_s(request: pytest.FixtureRequest) -> float:
    """WATCH_POLL_S of each observer: 0 (inotify events), or a scan every 0.1 s (a network mount)."""
    return 0.0 if request.param == "inotify" else 0.1


def test_a_group_photo_and_a_chunked_upload_are_indexed_once_complete(make_engine, tmp_path, poll_s):
    portrait = sample(MINDY).read_bytes()
    with watching(make_engine, tmp_path, poll_s, {"arrivals/IMG_0001.jpg": portrait}) as watch:
        assert watch.total("added") == 1

        # a group photo copied in: indexed with both faces, without being asked
        (watch.gallery / "arrivals" / "IMG_0002.jpg").write_bytes(group_photo())
        watch.wait(lambda: watch.indexed("arrivals/IMG_0002.jpg"), "the group photo indexed")
        assert watch.indexed("arrivals/IMG_0002.jpg").faces == 2

        # an upload in chunks, with pauses shorter than WATCH_SETTLE_S; another photo lands meanwhile and is indexed
        upload = group_photo()
        target = watch.gallery / "arrivals" / "IMG_0003.jpg"
        runs = len(watch.reports)
        written = len(upload) // 2
        with open(target, "wb") as handle:
            handle.write(upload[:written])
            handle.flush()
            (watch.gallery / "arrivals" / "IMG_0004.jpg").write_bytes(sample(BEN).read_bytes())
            deadline = time.monotonic() + TIMEOUT
            while len(watch.reports) == runs:  # keep the upload going until a run has happened meanwhile
                assert time.monotonic() < deadline and written < len(upload) - 64, "no run while uploading"
                time.sleep(PAUSE_S)
                handle.write(upload[written : written + 16])
                handle.flush()
                written += 16
                assert "arrivals/IMG_0003.jpg" not in watch.files(), "a half-written file was read"
            time.sleep(PAUSE_S)
            handle.write(upload[written:])
        assert watch.indexed("arrivals/IMG_0004.jpg")
        assert any(report.waiting >= 1 for report in watch.reports[runs:]), "the upload was not left waiting"
        watch.wait(lambda: watch.indexed("arrivals/IMG_0003.jpg"), "the completed upload indexed")
        assert watch.indexed("arrivals/IMG_0003.jpg").faces == 2
        assert watch.total("added") == 4 and watch.total("updated") == 0, "a file was indexed twice"
        assert not any(report.read_errors for report in watch.reports)
        assert watch.statuses[-1].runs >= 3 and not watch.statuses[-1].running


def test_broken_files_are_recorded_and_logged_once_a_file_deleted_before_it_settles_never(
    make_engine, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="engine.indexing.watch")
    broken = {
        name: data for name, data in bad_image_files().items() if name in ("empty.jpg", "text.jpg", "truncated.jpg")
    }
    with watching(make_engine, tmp_path, 0.0, {"IMG_0001.jpg": sample(MINDY).read_bytes()}) as watch:
        for name, data in broken.items():
            (watch.gallery / name).write_bytes(data)
        watch.wait(lambda: all(name in watch.files() for name in broken), "the broken files recorded")
        assert all(watch.files()[name].error for name in broken)

        # a file deleted before it settles, then a good photo: the next runs read neither the broken files again
        # nor the deleted one
        doomed = watch.gallery / "IMG_0002.jpg"
        doomed.write_bytes(group_photo())
        doomed.unlink()
        (watch.gallery / "IMG_0003.jpg").write_bytes(sample(BEN).read_bytes())
        watch.wait(lambda: watch.indexed("IMG_0003.jpg"), "the good photo indexed")
        assert "IMG_0002.jpg" not in watch.files()
        assert watch.total("added") == 2
        for name in broken:
            logged = [
                r
                for r in caplog.records
                if name in r.getMessage() and "skipped until the file changes" in r.getMessage()
            ]
            assert len(logged) == 1, (name, [r.getMessage() for r in caplog.records])

        # the truncated file completed (its upload resumed): read again, and indexed
        (watch.gallery / "truncated.jpg").write_bytes(sample(BEN).read_bytes())
        watch.wait(lambda: watch.indexed("truncated.jpg"), "the completed file indexed")
        assert watch.total("updated") == 1


def test_a_renamed_upload_a_move_and_a_deletion_on_a_polled_folder(make_engine, tmp_path):
    first = {"day-1/IMG_0001.jpg": sample(MINDY).read_bytes(), "day-1/IMG_0002.jpg": sample(BEN).read_bytes()}
    with watching(make_engine, tmp_path, 0.1, first) as watch:
        # rsync writes a hidden temporary file, sets the source's mtime, then renames it into place
        temporary = watch.gallery / "day-1" / ".IMG_0003.jpg.Xa81kq"
        temporary.write_bytes(group_photo())
        os.utime(temporary, (OLD, OLD))
        temporary.rename(watch.gallery / "day-1" / "IMG_0003.jpg")
        watch.wait(lambda: watch.indexed("day-1/IMG_0003.jpg"), "the renamed upload indexed")
        assert not any(name.startswith("day-1/.") for name in watch.files())

        # a photo moved to another folder keeps its vectors; a deleted one leaves the index
        (watch.gallery / "day-2").mkdir()
        (watch.gallery / "day-1" / "IMG_0001.jpg").rename(watch.gallery / "day-2" / "IMG_0001.jpg")
        (watch.gallery / "day-1" / "IMG_0002.jpg").unlink()
        watch.wait(
            lambda: set(watch.files()) == {"day-1/IMG_0003.jpg", "day-2/IMG_0001.jpg"}, "the move and the deletion"
        )
        assert watch.total("moved") == 1 and watch.total("removed") == 1
        assert watch.total("added") == 3


def test_temporary_upload_names_are_never_listed_nor_watched(tmp_path):
    names = [
        "IMG_0001.jpg.part", "IMG_0002.jpg.tmp", "IMG_0003.jpg.filepart", "IMG_0004.jpg.crdownload", "IMG_0005.jpg~",
        ".IMG_0006.jpg.Xa81kq", ".~lock.IMG_0007.jpg#", "._IMG_0008.jpg", ".sync/IMG_0009.jpg",
    ]  # fmt: skip
    for name in [*names, "IMG_0010.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert list_gallery_images(tmp_path, "photos") == [tmp_path / "IMG_0010.jpg"]
    watcher = GalleryWatcher(_settings(), tmp_path)
    for name in names:
        watcher.changed(str(tmp_path / name))
    assert watcher.waiting == 0
    watcher.changed(str(tmp_path / "IMG_0010.jpg"))
    assert watcher.waiting == 1


def _settings() -> Any:
    from engine.settings import EngineSettings

    return EngineSettings(watch_settle_s=SETTLE_S)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_settler_waits_for_a_file_to_hold_still(tmp_path):
    clock = FakeClock()
    settler = Settler(2.0, clock=clock)
    old = tmp_path / "old.jpg"
    old.write_bytes(b"at rest")
    os.utime(old, (OLD, OLD))
    assert settler.settled(old), "a file at rest is settled at once"

    new = tmp_path / "new.jpg"
    new.write_bytes(b"part")
    assert settler.observe(new) and not settler.settled(new)
    clock.now += 1.5
    with open(new, "ab") as handle:
        handle.write(b" more")
    assert not settler.settled(new)  # it changed: the wait starts again
    clock.now += 1.5
    assert not settler.settled(new) and settler.pending == 1 and settler.take() == 0
    clock.now += 0.6
    assert settler.any_settled() and settler.settled(new)
    assert settler.take() == 1 and settler.pending == 0

    gone = tmp_path / "gone.jpg"
    gone.write_bytes(b"x")
    settler.observe(gone)
    gone.unlink()
    clock.now += 5
    assert not settler.settled(gone) and settler.pending == 0


def test_a_burst_is_indexed_in_batches(make_engine, tmp_path):
    photos = [BEN, MINDY, JERRY, MADONNA, BEN]
    first = {"IMG_0000.jpg": sample(MINDY).read_bytes()}
    with watching(make_engine, tmp_path, 0.0, first, watch_batch=2) as watch:
        for number, photo in enumerate(photos, start=1):
            (watch.gallery / f"burst/IMG_{number:04d}.jpg").parent.mkdir(exist_ok=True)
            (watch.gallery / f"burst/IMG_{number:04d}.jpg").write_bytes(sample(photo).read_bytes())
        burst = {f"burst/IMG_{number:04d}.jpg" for number in range(1, len(photos) + 1)}
        watch.wait(lambda: burst <= {path for path in watch.files() if watch.indexed(path)}, "the burst indexed")
        added = [report.added for report in watch.reports[1:]]
        assert sum(added) == len(photos) and max(added) <= 2 and len(added) >= 3, added
