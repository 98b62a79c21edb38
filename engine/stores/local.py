"""The local store: FAISS segments + SQLite rows under one folder, no server, incremental and crash-safe.

Layout under `root` (DATA_DIR/index/<model>/ by default):
  store.sqlite          rows (faces), file records, meta blobs, the segment list, tombstones, header, version
  segments/<uuid>.faiss one FAISS index per segment (IndexIDMap: row id -> vector)
  write.lock            cross-process writer lock (filelock)

Vectors live in segments: at most one large *sealed* segment (HNSW from `ann_threshold` vectors on,
exact flat below) plus small *growing* flat segments, one per apply(). A search asks every segment
and merges the top-k. A removed row is deleted from SQLite and its id becomes a tombstone, filtered
at search time (a FAISS IDSelector), until a merge drops it. An apply() writes only its own new
segment; when the growing segments hold more than `max(merge_min, merge_ratio * sealed)` vectors
(defaults: 20,000 or 2%; or there are more than `max_growing` of them) they are added to a copy of
the sealed segment (HNSW insertion is incremental, so each vector is inserted once; the sealed file
is rewritten once per merge); when tombstones pass `rebuild_ratio` of the sealed segment it is
rebuilt from the live vectors (`compact()` forces that). HNSW: M=16, efSearch 96 (measured at 1M
synthetic faces: recall@10 0.96-0.97, ~0.4 ms CPU in FAISS, 640 MB resident).

Commit point: one SQLite transaction. New segment files are written and fsynced first under
uuid names; the transaction then inserts rows, records, tombstones and the new segment list and
bumps the version. A crash before it leaves the old state; its files are orphans that a later
writer deletes (only files the committed state does not name and older than its own lock).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from filelock import FileLock, Timeout

from engine.errors import IndexBusyError, IndexUnavailableError
from engine.stores.base import Changes, FaceRow, FileRecord, Hit, StoreHeader, face_fields, landmarks_from_json
from engine.stores.sqlite import shared_sqlite, write_transaction

_metadata = sa.MetaData()
_faces = sa.Table(
    "faces",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("path", sa.String, nullable=False, index=True),
    sa.Column("name", sa.String, nullable=False, index=True),
    sa.Column("x", sa.Integer, nullable=False),
    sa.Column("y", sa.Integer, nullable=False),
    sa.Column("w", sa.Integer, nullable=False),
    sa.Column("h", sa.Integer, nullable=False),
    sa.Column("confidence", sa.Float, nullable=True),  # NULL: written before detection details were kept
    sa.Column("landmarks", sa.String, nullable=True),  # JSON [[x, y] * 5]
)
# columns added after stores were first written: an older store gets them (NULL) when opened
_ADDED_FACE_COLUMNS = {"confidence": "FLOAT", "landmarks": "VARCHAR"}
_files = sa.Table(
    "files",
    _metadata,
    sa.Column("path", sa.String, primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("mtime_ns", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String, nullable=False),
    sa.Column("faces", sa.Integer, nullable=False),
    sa.Column("error", sa.String, nullable=True),
)
_meta = sa.Table("meta", _metadata, sa.Column("key", sa.String, primary_key=True), sa.Column("value", sa.LargeBinary))
_segments = sa.Table(
    "segments",
    _metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("kind", sa.String, nullable=False),  # "sealed" | "growing"
    sa.Column("vectors", sa.Integer, nullable=False),  # vectors in the file, tombstoned ones included
)
_tombstones = sa.Table("tombstones", _metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False))
# header (JSON), version, next_id, count: one row each
_state = sa.Table("state", _metadata, sa.Column("key", sa.String, primary_key=True), sa.Column("value", sa.String))


@dataclass(frozen=True)
class _Segment:
    name: str
    kind: str
    index: Any  # faiss.IndexIDMap (faiss has no type stubs)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)


@dataclass
class _Plan:
    segments: list[tuple[str, str, int]]  # (name, kind, vectors) after the commit
    tombstones: np.ndarray  # deleted ids still held by those segments
    superseded: list[str]  # segment files to delete once committed


@dataclass(frozen=True)
class _Snapshot:
    """What searches read: replaced by one assignment, never changed in place."""

    version: str
    count: int
    header: StoreHeader | None
    segments: tuple[_Segment, ...]
    deleted: np.ndarray  # sorted int64 tombstone ids
    selector: object | None  # faiss.IDSelectorNot over `deleted` (kept alive with the snapshot)


_EMPTY = _Snapshot("", 0, None, (), np.zeros(0, np.int64), None)


class LocalStore:
    """`VectorStore` in a folder: see the module docstring for the layout and the commit protocol."""

    def __init__(
        self,
        root: Path,
        *,
        ann_threshold: int = 50_000,
        hnsw_m: int = 16,
        ef_search: int = 96,
        ef_construction: int = 80,
        merge_min: int = 20_000,
        merge_ratio: float = 0.02,
        max_growing: int = 16,
        rebuild_ratio: float = 0.2,
        before_commit: Callable[[], None] | None = None,
    ):
        self.root = Path(root)
        self.ann_threshold = ann_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.merge_min = merge_min
        self.merge_ratio = merge_ratio
        self.max_growing = max_growing
        self.rebuild_ratio = rebuild_ratio
        self._before_commit = before_commit  # tests: called after the files are written, before the transaction
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "segments").mkdir(exist_ok=True)
        self._engine = shared_sqlite(self.root / "store.sqlite", _metadata)
        # thread_local=False: the builder takes writer() in one thread and may apply() from another
        self._file_lock = FileLock(str(self.root / "write.lock"), thread_local=False)
        self._apply_mutex = threading.RLock()
        self._refresh_mutex = threading.Lock()
        self._lock_since: float | None = None
        self._add_new_columns()
        self._snapshot = _EMPTY
        self.refresh()

    def __str__(self) -> str:
        return f"local store {self.root}"

    def _add_new_columns(self) -> None:
        """Columns added since a store's first version; looked for in a read, added in a write transaction."""

        def missing(conn: sa.Connection) -> list[str]:
            present = {column["name"] for column in sa.inspect(conn).get_columns("faces")}
            return [column for column in _ADDED_FACE_COLUMNS if column not in present]

        with self._engine.begin() as conn:
            if not missing(conn):
                return
        with write_transaction(self._engine) as conn:  # another process adding them waits, then finds them
            for column in missing(conn):
                conn.exec_driver_sql(f"ALTER TABLE faces ADD COLUMN {column} {_ADDED_FACE_COLUMNS[column]}")

    # --- reading -------------------------------------------------------------------------

    @property
    def header(self) -> StoreHeader | None:
        return self._snapshot.header

    @property
    def count(self) -> int:
        return self._snapshot.count

    @property
    def version(self) -> str:
        return self._snapshot.version

    def search(self, queries: np.ndarray, k: int, *, with_vectors: bool = False) -> list[list[Hit]]:
        snap = self._snapshot  # one read: a concurrent refresh() does not change what this search sees
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        k = min(k, snap.count)
        if k <= 0 or not snap.segments:
            return [[] for _ in range(len(queries))]
        import faiss

        # One OpenMP thread for a few queries: faiss' thread team costs more than the search on busy cores
        # (measured 31 ms vs 2 ms at 21k flat vectors). The setting is per calling thread; restored after.
        threads = faiss.omp_get_max_threads()
        if len(queries) < 16:
            faiss.omp_set_num_threads(1)
        try:
            sims, ids = self._search_segments(snap, queries, k)
        finally:
            faiss.omp_set_num_threads(threads)
        if not sims:
            return [[] for _ in range(len(queries))]
        sims_all, ids_all = np.concatenate(sims, axis=1), np.concatenate(ids, axis=1)
        sims_all[ids_all < 0] = -np.inf
        order = np.argsort(-sims_all, axis=1, kind="stable")[:, :k]
        top_sims = np.take_along_axis(sims_all, order, axis=1)
        top_ids = np.take_along_axis(ids_all, order, axis=1)
        rows = self._rows_by_id({int(i) for i in top_ids[top_ids >= 0]})
        vectors = _vectors_by_id(snap, top_ids[top_ids >= 0]) if with_vectors else {}
        results = []
        # python floats and ints once for the whole array: numpy scalars one at a time cost ~3x (clustering asks
        # for tens of neighbours of every face)
        for qs, qi in zip(top_sims.tolist(), top_ids.tolist()):
            # a row removed by a commit newer than this snapshot is gone from SQLite: skip it
            results.append([Hit(s, rows[i], vectors.get(i)) for s, i in zip(qs, qi) if i >= 0 and i in rows])
        return results

    def _search_segments(self, snap: _Snapshot, queries: np.ndarray, k: int) -> tuple[list, list]:
        import faiss

        sims, ids = [], []
        for segment in snap.segments:
            kk = min(k, segment.ntotal)
            if kk == 0:
                continue
            inner = faiss.downcast_index(segment.index.index)
            if isinstance(inner, faiss.IndexHNSW):
                # in faiss, but missing from the stubs it ships
                params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, kk))  # type: ignore[attr-defined]
                if snap.selector is not None:
                    params.sel = snap.selector
            else:
                # faiss's stubs lack the `sel` keyword the SWIG constructor takes
                params = faiss.SearchParameters(sel=snap.selector) if snap.selector is not None else None  # type: ignore[call-arg]
            s, i = segment.index.search(queries, kk, params=params)
            sims.append(s)
            ids.append(i)
        return sims, ids

    def _rows_by_id(self, ids: set[int]) -> dict[int, FaceRow]:
        if not ids:
            return {}
        with self._engine.connect() as conn:
            found = conn.execute(sa.select(_faces).where(_faces.c.id.in_(sorted(ids)))).all()
        return {r.id: _face_row(r) for r in found}

    def files(self) -> dict[str, FileRecord]:
        with self._engine.connect() as conn:
            return {
                r.path: FileRecord(r.path, r.size, r.mtime_ns, r.sha256, r.faces, r.error)
                for r in conn.execute(sa.select(_files))
            }

    def people(self) -> dict[str, int]:
        query = sa.select(_faces.c.name, sa.func.count(sa.distinct(_faces.c.path))).group_by(_faces.c.name)
        with self._engine.connect() as conn:
            return {row.name: int(row[1]) for row in conn.execute(query)}

    def get_meta(self, key: str) -> bytes | None:
        with self._engine.connect() as conn:
            return conn.execute(sa.select(_meta.c.value).where(_meta.c.key == key)).scalar()

    def refresh(self) -> bool:
        """Load what another writer committed: only segments not loaded yet are read from disk."""
        with self._refresh_mutex:
            for attempt in range(20):
                with self._engine.connect() as conn:  # one read transaction: state, segments and tombstones agree
                    version = conn.execute(sa.select(_state.c.value).where(_state.c.key == "version")).scalar() or ""
                    if version == self._snapshot.version:
                        return False
                    state: dict[str, str] = dict(conn.execute(sa.select(_state.c.key, _state.c.value)).all())
                    names = conn.execute(sa.select(_segments.c.name, _segments.c.kind).order_by(_segments.c.name)).all()
                    deleted = np.fromiter(
                        (r[0] for r in conn.execute(sa.select(_tombstones.c.id).order_by(_tombstones.c.id))), np.int64
                    )
                try:
                    snapshot = self._load_snapshot(state, names, deleted)
                except FileNotFoundError:
                    # a merge replaced a segment between our read and the open: read the state again
                    time.sleep(0.01 * (attempt + 1))
                    continue
                changed = snapshot.version != self._snapshot.version
                self._snapshot = snapshot
                return changed
            raise IndexUnavailableError(f"the store in {self.root} kept changing while being read; try again")

    def _load_snapshot(self, state: dict, names: Sequence, deleted: np.ndarray) -> _Snapshot:
        import faiss

        loaded = {s.name: s for s in self._snapshot.segments}
        segments = []
        for name, kind in names:
            segment = loaded.get(name)
            if segment is None:
                path = self.root / "segments" / f"{name}.faiss"
                try:
                    index = faiss.read_index(str(path))
                except RuntimeError:  # faiss says "could not open" for a missing file
                    if not path.exists():
                        raise FileNotFoundError(path) from None
                    raise
                segment = _Segment(name, kind, index)
            segments.append(segment)
        selector = None
        if len(deleted):
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(deleted))
            selector._keep = deleted  # type: ignore[attr-defined]  # the batch selector copies ids, but keep the array with it anyway
        header = StoreHeader(**json.loads(state["header"])) if state.get("header") else None
        return _Snapshot(
            state.get("version", ""), int(state.get("count", 0)), header, tuple(segments), deleted, selector
        )

    # --- writing -------------------------------------------------------------------------

    @contextmanager
    def writer(self, timeout: float | None = None) -> Iterator[LocalStore]:
        """Hold the cross-process writer lock (an index run holds it throughout; apply() nests inside)."""
        try:
            self._file_lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise IndexBusyError(
                f"another index run holds the lock on {self.root / 'write.lock'}; wait for it to finish or try again later"
            ) from None
        outer = self._lock_since is None
        if outer:
            self._lock_since = time.time()
        try:
            if outer:
                self._remove_orphans()
            yield self
        finally:
            if outer:
                self._lock_since = None
            self._file_lock.release()

    def initialise(self, header: StoreHeader) -> None:
        with self.writer(timeout=None), self._apply_mutex:
            self.refresh()
            if self._snapshot.header == header:
                return
            old = [s.name for s in self._snapshot.segments]
            with self._engine.begin() as conn:
                for table in (_faces, _files, _meta, _segments, _tombstones, _state):
                    conn.execute(table.delete())
                conn.execute(
                    _state.insert(),
                    [
                        {"key": "header", "value": json.dumps(dataclasses.asdict(header))},
                        {"key": "version", "value": uuid.uuid4().hex},
                        {"key": "next_id", "value": "1"},
                        {"key": "count", "value": "0"},
                    ],
                )
            self._snapshot = _EMPTY
            self.refresh()
            self._delete_segments(old)

    def apply(self, changes: Changes) -> None:
        if changes.is_empty():
            return
        with self.writer(timeout=None), self._apply_mutex:
            self.refresh()
            snap = self._snapshot
            if snap.header is None:
                raise IndexUnavailableError(f"the store in {self.root} has no header yet: initialise() it first")
            vectors = _check_vectors(changes, snap.header.dim)
            replaced = set(changes.remove_paths) | {r.path for r in changes.records}
            with self._engine.connect() as conn:
                next_id = int(conn.execute(sa.select(_state.c.value).where(_state.c.key == "next_id")).scalar() or 1)
                # a move onto a path that holds rows (not itself moved away): those rows go
                move_targets = {new for new, _ in changes.moves.values()} - set(changes.moves)
                gone = _ids_for_paths(conn, replaced | move_targets)
            new_ids = np.arange(next_id, next_id + len(changes.rows), dtype=np.int64)
            deleted = np.union1d(snap.deleted, gone)
            plan = self._plan_segments(snap, vectors, new_ids, deleted)
            count = snap.count - len(gone) + len(new_ids)
            if self._before_commit is not None:
                self._before_commit()
            with self._engine.begin() as conn:
                _delete_paths(conn, replaced | move_targets)
                for old, (new, name) in changes.moves.items():
                    conn.execute(_faces.update().where(_faces.c.path == old).values(path=new, name=name))
                    conn.execute(_files.update().where(_files.c.path == old).values(path=new))
                # a record for a moved file replaces the record that moved with it
                _delete_paths(
                    conn, {f.path for f in changes.records} & {new for new, _ in changes.moves.values()}, rows=False
                )
                for start in range(0, len(changes.rows), 50_000):
                    conn.execute(
                        _faces.insert(),
                        [
                            {"id": int(i), **face_fields(r)}
                            for i, r in zip(new_ids[start : start + 50_000], changes.rows[start : start + 50_000])
                        ],
                    )
                if changes.records:
                    conn.execute(
                        _files.insert(),
                        [
                            {
                                "path": f.path,
                                "size": f.size,
                                "mtime_ns": f.mtime_ns,
                                "sha256": f.sha256,
                                "faces": f.faces,
                                "error": f.error,
                            }
                            for f in changes.records
                        ],
                    )
                for f in changes.touched:  # same content seen anew: the record changes, its rows stay
                    conn.execute(
                        _files.update()
                        .where(_files.c.path == f.path)
                        .values(size=f.size, mtime_ns=f.mtime_ns, sha256=f.sha256, faces=f.faces, error=f.error)
                    )
                for key, value in changes.meta.items():
                    conn.execute(_meta.delete().where(_meta.c.key == key))
                    conn.execute(_meta.insert().values(key=key, value=value))
                # tombstones: every deleted id still held by a segment file
                dropped = np.setdiff1d(snap.deleted, plan.tombstones)
                for start in range(0, len(dropped), 500):
                    conn.execute(
                        _tombstones.delete().where(_tombstones.c.id.in_(dropped[start : start + 500].tolist()))
                    )
                added = np.setdiff1d(plan.tombstones, snap.deleted)
                if len(added):
                    conn.execute(_tombstones.insert(), [{"id": int(i)} for i in added])
                conn.execute(_segments.delete())
                if plan.segments:
                    conn.execute(
                        _segments.insert(), [{"name": n, "kind": k, "vectors": v} for n, k, v in plan.segments]
                    )
                for key, state_value in (
                    ("version", uuid.uuid4().hex),
                    ("next_id", str(next_id + len(new_ids))),
                    ("count", str(count)),
                ):
                    conn.execute(_state.update().where(_state.c.key == key).values(value=state_value))
            self.refresh()
            self._delete_segments(plan.superseded)

    def _plan_segments(self, snap: _Snapshot, vectors: np.ndarray, new_ids: np.ndarray, deleted: np.ndarray) -> _Plan:
        """Write the segment files this apply needs (fsynced) and say what the committed list will be."""
        sealed = [s for s in snap.segments if s.kind == "sealed"]
        growing = [s for s in snap.segments if s.kind == "growing"]
        sealed_n = sum(s.ntotal for s in sealed)
        growing_n = sum(s.ntotal for s in growing) + len(new_ids)
        keep = [(s.name, s.kind, s.ntotal) for s in snap.segments]
        live_total = sealed_n + growing_n - len(deleted)
        merge = growing_n > 0 and (
            (len(new_ids) > 0 and len(growing) + 1 > self.max_growing)
            or growing_n > max(self.merge_min, self.merge_ratio * sealed_n)
            or ((not sealed or not _is_hnsw(sealed[0].index)) and live_total >= self.ann_threshold)
        )
        if not merge:
            if len(new_ids) == 0:
                return _Plan(keep, deleted, [])
            name = self._write_segment(_flat_index(vectors, new_ids), "growing")
            segments = keep + [(name, "growing", len(new_ids))]
            return _Plan(segments, deleted, [])
        # merge: the growing segments' live vectors (and the new ones) go into the sealed segment
        parts_x, parts_i = [vectors], [new_ids]
        for s in growing:
            x, i = _vectors_of(s.index)
            live = ~np.isin(i, deleted)
            parts_x.append(x[live])
            parts_i.append(i[live])
        add_x, add_i = np.concatenate(parts_x), np.concatenate(parts_i)
        sealed_dead = int(np.isin(_ids_of(sealed[0].index), deleted).sum()) if sealed else 0
        if sealed and sealed_dead <= self.rebuild_ratio * sealed_n and _is_hnsw(sealed[0].index):
            import faiss

            # HNSW insertion is incremental: add to a fresh copy of the sealed file (searches keep the old one)
            index = faiss.read_index(str(self.root / "segments" / f"{sealed[0].name}.faiss"))
            index.add_with_ids(add_x, add_i)
        else:
            if sealed:
                x, i = _vectors_of(sealed[0].index)
                live = ~np.isin(i, deleted)
                add_x, add_i = np.concatenate([x[live], add_x]), np.concatenate([i[live], add_i])
            index = self._sealed_index(add_x, add_i)
        name = self._write_segment(index, "sealed")
        segments = [(name, "sealed", int(index.ntotal))]
        return _Plan(segments, _held_ids(_ids_of(index), deleted), [s.name for s in snap.segments])

    def _sealed_index(self, x: np.ndarray, ids: np.ndarray) -> Any:
        import faiss

        if len(ids) < self.ann_threshold:
            return _flat_index(x, ids)
        hnsw = faiss.IndexHNSWFlat(x.shape[1], self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.ef_construction
        hnsw.hnsw.efSearch = self.ef_search
        index = faiss.IndexIDMap(hnsw)
        index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), ids)
        return index

    def _write_segment(self, index: Any, kind: str) -> str:
        import faiss

        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{kind}-{uuid.uuid4().hex[:12]}"
        path = self.root / "segments" / f"{name}.faiss"
        faiss.write_index(index, str(path))
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        _fsync_dir(path.parent)
        return name

    def _delete_segments(self, names: list[str]) -> None:
        for name in names:
            (self.root / "segments" / f"{name}.faiss").unlink(missing_ok=True)

    def _remove_orphans(self) -> None:
        """Delete segment files no committed state names, written before this lock was taken (a crashed writer's)."""
        since = self._lock_since
        assert since is not None, "_remove_orphans runs only under the write lock"
        with self._engine.connect() as conn:
            if not sa.inspect(conn).has_table("segments"):
                return
            referenced = {n for (n,) in conn.execute(sa.select(_segments.c.name))}
        for path in (self.root / "segments").glob("*.faiss"):
            try:
                if path.stem not in referenced and path.stat().st_mtime < since:
                    path.unlink()
            except FileNotFoundError:
                pass

    def compact(self) -> None:
        """Fold every segment into one sealed segment without tombstones (for example after a large removal)."""
        with self.writer(timeout=None), self._apply_mutex:
            self.refresh()
            snap = self._snapshot
            if not snap.segments:
                return
            parts_x, parts_i = [], []
            for s in snap.segments:
                x, i = _vectors_of(s.index)
                live = ~np.isin(i, snap.deleted)
                parts_x.append(x[live])
                parts_i.append(i[live])
            index = self._sealed_index(np.concatenate(parts_x), np.concatenate(parts_i))
            name = self._write_segment(index, "sealed")
            with self._engine.begin() as conn:
                conn.execute(_tombstones.delete())
                conn.execute(_segments.delete())
                conn.execute(_segments.insert().values(name=name, kind="sealed", vectors=int(index.ntotal)))
                conn.execute(_state.update().where(_state.c.key == "version").values(value=uuid.uuid4().hex))
            self.refresh()
            self._delete_segments([s.name for s in snap.segments])

    def purge_removed(self) -> None:
        """Removed rows' vectors stay in segment files as tombstones until a merge rewrites them: fold the
        segments into one without them when there are any (the whole sealed segment is rebuilt)."""
        self.refresh()
        if len(self._snapshot.deleted):
            self.compact()

    def close(self) -> None:
        self._snapshot = _EMPTY
        self._engine.dispose()

    def face_vectors(
        self, paths: Iterable[str] | None = None, chunk: int = 20_000
    ) -> Iterator[tuple[list[FaceRow], np.ndarray]]:
        """The rows and stored vectors of the faces of `paths` (None: every face), in chunks of at most `chunk`.

        Reads the committed state as of this call's refresh(); a row committed after it is left out.
        """
        self.refresh()
        snap = self._snapshot
        if paths is None:
            where: list[list[str] | None] = [None]
        else:
            wanted_paths = sorted(set(paths))
            where = [wanted_paths[i : i + 500] for i in range(0, len(wanted_paths), 500)]
        # per segment: its row ids sorted, with their positions in the segment's storage
        located = []
        for segment in snap.segments:
            ids = _ids_of(segment.index)
            order = np.argsort(ids, kind="stable")
            located.append((segment, ids[order], order))
        for part in where:
            query = sa.select(_faces).order_by(_faces.c.id)
            if part is not None:
                query = query.where(_faces.c.path.in_(part))
            with self._engine.connect() as conn:
                found = conn.execute(query).all()
            for start in range(0, len(found), chunk):
                rows = found[start : start + chunk]
                wanted = np.array([r.id for r in rows], np.int64)
                vectors = np.full((len(rows), snap.header.dim if snap.header else 0), np.nan, np.float32)
                held = np.zeros(len(rows), bool)
                for segment, ids, order in located:
                    at = np.clip(np.searchsorted(ids, wanted), 0, max(len(ids) - 1, 0))
                    hit = (ids[at] == wanted) if len(ids) else np.zeros(len(rows), bool)
                    hit &= ~np.isin(wanted, snap.deleted)
                    if hit.any():
                        vectors[hit] = _storage_of(segment.index).reconstruct_batch(order[at[hit]].astype(np.int64))
                        held |= hit
                yield (
                    [_face_row(r) for r, h in zip(rows, held) if h],
                    vectors[held],
                )


def _face_row(r: Any) -> FaceRow:
    landmarks = None if r.landmarks is None else landmarks_from_json(r.landmarks)
    return FaceRow(r.path, r.name, (r.x, r.y, r.w, r.h), r.confidence, landmarks)


def _check_vectors(changes: Changes, dim: int) -> np.ndarray:
    if not changes.rows:
        return np.zeros((0, dim), np.float32)
    if changes.vectors is None or changes.vectors.shape != (len(changes.rows), dim):
        shape = None if changes.vectors is None else changes.vectors.shape
        raise ValueError(f"{len(changes.rows)} rows need vectors of shape ({len(changes.rows)}, {dim}), got {shape}")
    return np.ascontiguousarray(changes.vectors, dtype=np.float32)


def _ids_for_paths(conn: sa.Connection, paths: set[str]) -> np.ndarray:
    found: list[int] = []
    ordered = sorted(paths)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        found.extend(conn.execute(sa.select(_faces.c.id).where(_faces.c.path.in_(chunk))).scalars())
    return np.array(sorted(found), np.int64)


def _delete_paths(conn: sa.Connection, paths: set[str], *, rows: bool = True) -> None:
    ordered = sorted(paths)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        if rows:
            conn.execute(_faces.delete().where(_faces.c.path.in_(chunk)))
        conn.execute(_files.delete().where(_files.c.path.in_(chunk)))


def _flat_index(x: np.ndarray, ids: np.ndarray) -> Any:
    import faiss

    index = faiss.IndexIDMap(faiss.IndexFlatIP(x.shape[1]))
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return index


def _ids_of(index: Any) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(index.id_map).astype(np.int64)


def _vectors_of(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, ids) stored in a segment (flat or HNSW-flat: exact copies)."""
    import faiss

    inner = faiss.downcast_index(index.index)
    storage = faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
    return storage.reconstruct_n(0, storage.ntotal), _ids_of(index)


def _vectors_by_id(snap: _Snapshot, ids: np.ndarray) -> dict[int, np.ndarray]:
    """Stored vectors of `ids`, reconstructed from the segments that hold them (flat or HNSW-flat: exact copies)."""
    import faiss

    wanted = np.unique(ids)
    found: dict[int, np.ndarray] = {}
    for segment in snap.segments:
        held = _ids_of(segment.index)
        positions = np.flatnonzero(np.isin(held, wanted))
        if not len(positions):
            continue
        inner = faiss.downcast_index(segment.index.index)
        storage = faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
        for position in positions:
            found[int(held[position])] = storage.reconstruct(int(position))
    return found


def _is_hnsw(index: Any) -> bool:
    import faiss

    return isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW)


def _held_ids(ids: np.ndarray, deleted: np.ndarray) -> np.ndarray:
    return deleted[np.isin(deleted, ids)] if len(deleted) else deleted


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_of(index: Any) -> Any:
    """The flat index holding a segment's vectors in insertion order (the HNSW graph's storage, or the flat index)."""
    import faiss

    inner = faiss.downcast_index(index.index)
    return faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
