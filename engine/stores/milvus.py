"""`VectorStore` on Milvus through `pymilvus.MilvusClient`: Milvus Lite (a local `*.db` path) or a server (http(s)://).

Three collections per model (`<prefix>` is `faces_<model>`):
  <prefix>          one row per face: auto id, vector (metric IP, HNSW), path, name, x, y, w, h, confidence
                    (-1: unknown), landmarks (JSON, "": unknown). A collection made before confidence and
                    landmarks were kept reads as another pipeline's store: the next index run rebuilds it
  <prefix>_files    one row per gallery file: path (primary key), size, mtime_ns, sha256, faces, error,
                    and a 2-d dummy vector (Milvus wants a vector field in every collection)
  <prefix>_meta     header, version and meta blobs: key (primary key), value (base64 text, chunked), dummy vector

Milvus has no multi-statement transactions, so apply() orders its writes for crash safety: the
records of files about to be re-added are deleted first, rows are deleted before the records of
removed files, a moved file's rows and record are written under the new path before the old ones
are deleted (rows, then the record), new rows are inserted before their records are upserted, and
the version is written last. A crash part-way therefore leaves a file's record missing or stale
(the builder re-embeds that file on its next run and replaces its rows by path), or a removed
file's record (the removal is retried), never a record whose rows are missing; readers may see a
half-applied change until then. Rows left without a record (their file gone before that next run)
match under a name nothing lists: apply() marks the store while it writes (meta key `applying`),
and the next writer that finds the mark (an index run, an edit) deletes every row without a record.

Milvus Lite allows one process per `.db` file (a second one fails to open it): share a store
between processes (bot + index runs) through a Milvus server URI, or use the local store.

Writers take a cross-process lock file (`filelock`), as the local store's do; Milvus itself has
none. Its path comes from the URI and the collection prefix (`writer_lock_path`): beside a Milvus
Lite file, `<file>.<prefix>.write.lock`; for a server, DATA_DIR/locks/milvus-<sha256>.lock. So
processes writing one server's collection are serialised only when they share DATA_DIR (one
volume, as deploy/compose.yaml mounts it) and spell the URI the same way; processes on machines
without a shared DATA_DIR must leave writing to one of them (one indexer, edits on one replica).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from engine.errors import IndexBusyError, IndexUnavailableError, StoreUnavailableError
from engine.stores.base import Changes, FaceRow, FileRecord, Hit, StoreHeader, face_fields, landmarks_from_json

_CHUNK = 60_000  # base64 characters per meta row (VARCHAR max 65,535)
_MAX_PATH = 4096
_DUMMY = [0.0, 0.0]
_ROW_FIELDS = ["path", "name", "x", "y", "w", "h", "confidence", "landmarks"]
_OLD_SCHEMA = "+old-row-schema"  # appended to the fingerprint of a collection without confidence/landmarks
_APPLYING = "applying"  # blob present while apply() writes: a crash leaves it, the next writer sweeps orphan rows


class _NoMvccWarning(logging.Filter):
    """Milvus Lite has no MVCC timestamp for iterators; pymilvus warns on every files()/people() call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_NoMvccWarning())
log = logging.getLogger(__name__)


def is_server_uri(uri: str) -> bool:
    return uri.strip().startswith(("http://", "https://"))


def writer_lock_path(uri: str, collection: str, data_dir: Path | None) -> Path:
    """The writer lock file of the collections `collection`(_files, _meta) at `uri`: see the module docstring.

    A server URI needs `data_dir` (DATA_DIR): its lock lives there, named by a hash of the URI (trailing
    slashes dropped) and the collection prefix.
    """
    if is_server_uri(uri):
        if data_dir is None:
            raise ValueError(f"the writer lock of a Milvus server store ({uri}) lives in DATA_DIR: pass data_dir")
        key = f"{uri.strip().rstrip('/')}\n{collection}"
        return Path(data_dir) / "locks" / f"milvus-{hashlib.sha256(key.encode()).hexdigest()}.lock"
    db = Path(uri).resolve()
    return db.with_name(f"{db.name}.{collection}.write.lock")


class MilvusStore:
    """See the module docstring. `uri`: a Milvus Lite file path (`*.db`) or http(s)://host:port;
    `data_dir`: DATA_DIR, where a server store's writer lock lives (required for a server URI)."""

    def __init__(
        self,
        uri: str,
        *,
        model: str,
        collection: str | None = None,
        hnsw_m: int = 16,
        ef_construction: int = 80,
        ef_search: int = 96,
        timeout: float = 10.0,
        data_dir: Path | None = None,
    ):
        from pymilvus import MilvusClient

        self.uri = uri
        self.faces = collection or f"faces_{model}"
        self.files_c = f"{self.faces}_files"
        self.meta_c = f"{self.faces}_meta"
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self._mutex = threading.RLock()  # writers of this process (the file lock counts re-entries, not threads)
        self._holds = 0  # writer() entries now held by this process (re-entrant): the outermost one sweeps
        lite = not is_server_uri(uri)
        if lite:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = writer_lock_path(uri, self.faces, data_dir)
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        # one lock file descriptor for the store: the mutex above orders its threads
        self._file_lock = FileLock(str(self.lock_path), thread_local=False)
        try:
            self.client = _connect(MilvusClient, uri, timeout)
        except Exception as error:  # pymilvus raises several types (ConnectionConfigException, MilvusException)
            if lite:
                raise StoreUnavailableError(
                    f"cannot open the Milvus Lite file {uri} ({error}); Milvus Lite lets one process open a file at a "
                    f"time: is another index run or bot using it? Share a store between processes with a Milvus "
                    f"server (VECTOR_STORE_URI=http://host:19530) or the local store (VECTOR_STORE_URI unset)"
                ) from error
            raise StoreUnavailableError(f"the Milvus server at {uri} does not answer ({error})") from error
        for name in (self.faces, self.files_c, self.meta_c):  # a reopened file or a restarted server: released
            if self.client.has_collection(name):
                self.client.load_collection(name)
        self.header: StoreHeader | None = None
        self._schema_current: bool | None = None  # whether the faces collection has every row field
        self._version = ""
        self._count: int | None = None  # per version: the bot reads it on every answer, on its event loop
        self.refresh()

    def __str__(self) -> str:
        return f"Milvus {self.uri} (collection {self.faces})"

    # --- reading -------------------------------------------------------------------------

    @property
    def version(self) -> str:
        return self._version

    @property
    def count(self) -> int:
        """Faces in the collection, asked of Milvus once per store version (refresh() and apply() renew it)."""
        if self._count is None:
            if self.header is None or not self.client.has_collection(self.faces):
                return 0
            result = self.client.query(self.faces, filter="", output_fields=["count(*)"])
            self._count = int(result[0]["count(*)"])
        return self._count

    def refresh(self) -> bool:
        if not self.client.has_collection(self.meta_c):
            changed = self.header is not None
            self.header, self._version, self._count = None, "", None
            return changed
        header = self._get_blob("header")
        version = (self._get_blob("version") or b"").decode()
        changed = version != self._version
        self.header = StoreHeader(**json.loads(header)) if header else None
        if self.header is not None and not self._has_row_fields():
            # rows without confidence and landmarks: a store of another pipeline, rebuilt by the next index run
            self.header = dataclasses.replace(self.header, fingerprint=self.header.fingerprint + _OLD_SCHEMA)
        self._version = version
        if changed:
            self._count = None
        return changed

    def _has_row_fields(self) -> bool:
        if self._schema_current is None:
            fields = set()
            if self.client.has_collection(self.faces):
                fields = {f["name"] for f in self.client.describe_collection(self.faces).get("fields", [])}
            self._schema_current = set(_ROW_FIELDS) <= fields
        return self._schema_current

    def search(self, queries: np.ndarray, k: int, *, with_vectors: bool = False) -> list[list[Hit]]:
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if self.header is None or k <= 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        results = self.client.search(
            self.faces,
            data=queries.tolist(),
            limit=k,
            output_fields=_ROW_FIELDS + (["vector"] if with_vectors else []),
            search_params={"metric_type": "IP", "params": {"ef": max(self.ef_search, k)}},
        )
        out = []
        for hits in results:
            row_hits = []
            for hit in hits:
                vector = np.asarray(hit["entity"]["vector"], np.float32) if with_vectors else None
                row_hits.append(Hit(float(hit["distance"]), _face_row(hit["entity"]), vector))
            row_hits.sort(key=lambda h: -h.similarity)
            out.append(row_hits)
        return out

    def files(self) -> dict[str, FileRecord]:
        if self.header is None:
            return {}
        fields = ["path", "size", "mtime_ns", "sha256", "faces", "error"]
        return {
            r["path"]: FileRecord(
                r["path"], int(r["size"]), int(r["mtime_ns"]), r["sha256"], int(r["faces"]), json.loads(r["error"])
            )
            for r in self._iterate(self.files_c, "", fields)
        }

    def people(self) -> dict[str, int]:
        if self.header is None:
            return {}
        paths: dict[str, set[str]] = {}
        for r in self._iterate(self.faces, "", ["path", "name"]):
            paths.setdefault(r["name"], set()).add(r["path"])
        return {name: len(p) for name, p in paths.items()}

    def get_meta(self, key: str) -> bytes | None:
        if self.header is None:
            return None
        return self._get_blob(f"meta:{key}")

    # --- writing -------------------------------------------------------------------------

    @contextmanager
    def writer(self, timeout: float | None = None) -> Iterator[MilvusStore]:
        """Hold the writer lock: other threads of this process, then other processes through the lock file
        `lock_path` (see the module docstring). Re-entrant (apply() nests inside an index run's writer).
        Not held within `timeout` seconds (None: wait as long as it takes): IndexBusyError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._mutex.acquire(timeout=-1 if timeout is None else timeout):
            raise self._busy()
        try:
            try:
                self._file_lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic()))
            except Timeout:
                raise self._busy() from None
            self._holds += 1
            try:
                if self._holds == 1:
                    self._sweep_orphans()
                yield self
            finally:
                self._holds -= 1
                self._file_lock.release()
        finally:
            self._mutex.release()

    def _sweep_orphans(self) -> None:
        """After an apply() a crash stopped part-way (its `applying` mark is left; writer lock held): delete the rows
        whose file has no record. The builder sees files only through their records, so it would never remove those
        rows, and searches would keep finding them. Nothing to do (one small query) after a clean apply."""
        if not self.client.has_collection(self.meta_c) or self._get_blob(_APPLYING) is None:
            return
        self.refresh()
        if self.header is not None:
            recorded = set(self.files())
            orphans = {r["path"] for r in self._iterate(self.faces, "", ["path"])} - recorded
            if orphans:
                log.warning(
                    "the Milvus store %s at %s: an earlier write was interrupted (a crash?); deleting the rows of %d "
                    "files without a record", self.faces, self.uri, len(orphans),
                )  # fmt: skip
                self._delete_in(self.faces, "path", orphans)
                self.client.flush(self.faces)
                self._put_blob("version", uuid.uuid4().hex.encode())
        self.client.delete(self.meta_c, filter=_in("key", [_APPLYING]))
        self.refresh()

    def _busy(self) -> IndexBusyError:
        return IndexBusyError(
            f"another index run holds the lock on {self.lock_path} (the Milvus store {self.faces} at {self.uri}); "
            "wait for it to finish or try again later"
        )

    def initialise(self, header: StoreHeader) -> None:
        with self.writer():
            self.refresh()
            if self.header == header:
                return
            from pymilvus import DataType, MilvusClient

            for name in (self.meta_c, self.files_c, self.faces):  # meta first: a crash mid-way reads as "no store"
                if self.client.has_collection(name):
                    self.client.drop_collection(name)
            schema = MilvusClient.create_schema(auto_id=True)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=header.dim)
            schema.add_field("path", DataType.VARCHAR, max_length=_MAX_PATH)
            schema.add_field("name", DataType.VARCHAR, max_length=1024)
            for field in ("x", "y", "w", "h"):
                schema.add_field(field, DataType.INT32)
            schema.add_field("confidence", DataType.DOUBLE)
            schema.add_field("landmarks", DataType.VARCHAR, max_length=512)
            index = self.client.prepare_index_params()
            index.add_index(
                field_name="vector",
                index_type="HNSW",
                metric_type="IP",
                params={"M": self.hnsw_m, "efConstruction": self.ef_construction},
            )
            index.add_index(field_name="path", index_type="INVERTED")  # apply() deletes and moves rows by path
            self.client.create_collection(self.faces, schema=schema, index_params=index)

            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("path", DataType.VARCHAR, is_primary=True, max_length=_MAX_PATH)
            schema.add_field("size", DataType.INT64)
            schema.add_field("mtime_ns", DataType.INT64)
            schema.add_field("sha256", DataType.VARCHAR, max_length=128)
            schema.add_field("faces", DataType.INT64)
            schema.add_field("error", DataType.VARCHAR, max_length=8192)  # JSON: null or a string
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
            self._create_small(self.files_c, schema)

            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("chunk", DataType.VARCHAR, is_primary=True, max_length=512)  # "<key>#<n>"
            schema.add_field("key", DataType.VARCHAR, max_length=512)
            schema.add_field("value", DataType.VARCHAR, max_length=65_535)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
            self._create_small(self.meta_c, schema)
            self._put_blob("header", json.dumps(dataclasses.asdict(header)).encode())
            self._put_blob("version", uuid.uuid4().hex.encode())
            self._schema_current = None
            self.refresh()

    def _create_small(self, name: str, schema: Any) -> None:
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
        self.client.create_collection(name, schema=schema, index_params=index)

    def apply(self, changes: Changes) -> None:
        if changes.is_empty():
            return
        with self.writer():
            self.refresh()
            if self.header is None:
                raise IndexUnavailableError(
                    f"the Milvus store {self.faces} at {self.uri} has no header yet: initialise() it first"
                )
            dim = self.header.dim
            if changes.rows and (changes.vectors is None or changes.vectors.shape != (len(changes.rows), dim)):
                raise ValueError(f"{len(changes.rows)} rows need vectors of shape ({len(changes.rows)}, {dim})")
            re_added = {f.path for f in changes.records}
            move_targets = {new for new, _ in changes.moves.values()} - set(changes.moves)
            self._put_blob(_APPLYING, b"1")  # a crash from here on: the next writer sweeps rows without a record
            # 1. files about to be rewritten lose their record first: after a crash they are re-embedded
            self._delete_in(self.files_c, "path", re_added)
            # 2. old rows go (before the records of removed files: a crash keeps the record, so the removal is retried)
            self._delete_in(self.faces, "path", set(changes.remove_paths) | re_added | move_targets)
            self._delete_in(self.files_c, "path", set(changes.remove_paths) | move_targets)
            # 3. moves: rows re-inserted under the new path with their vectors, the record after them, then the old
            #    rows deleted, the old record last (a crash keeps it: the next run moves the file again)
            for old, (new, name) in changes.moves.items():
                moved = list(
                    self._iterate(
                        self.faces, _in("path", [old]), ["id", "vector", "x", "y", "w", "h", "confidence", "landmarks"]
                    )
                )
                record = self.client.get(
                    self.files_c, ids=[old], output_fields=["size", "mtime_ns", "sha256", "faces", "error"]
                )
                if moved:
                    self._insert(
                        self.faces,
                        [
                            {
                                "vector": list(r["vector"]),
                                "path": new,
                                "name": name,
                                "x": r["x"],
                                "y": r["y"],
                                "w": r["w"],
                                "h": r["h"],
                                "confidence": r["confidence"],
                                "landmarks": r["landmarks"],
                            }
                            for r in moved
                        ],
                    )
                if record and new not in re_added:
                    record[0].pop("path", None)
                    self.client.upsert(self.files_c, [{**record[0], "path": new, "vector": _DUMMY}])
                if moved:
                    self.client.delete(self.faces, ids=[r["id"] for r in moved])
                self.client.delete(self.files_c, ids=[old])
            # 4. new rows, then their records
            if changes.rows:
                vectors = np.asarray(changes.vectors, dtype=np.float32)
                self._insert(
                    self.faces, [{"vector": v.tolist(), **_face_fields(r)} for r, v in zip(changes.rows, vectors)]
                )
            if changes.records:
                records = [
                    {
                        "path": f.path,
                        "size": f.size,
                        "mtime_ns": f.mtime_ns,
                        "sha256": f.sha256,
                        "faces": f.faces,
                        "error": json.dumps(f.error),
                        "vector": _DUMMY,
                    }
                    for f in changes.records
                ]
                for start in range(0, len(records), 5_000):
                    self.client.upsert(self.files_c, records[start : start + 5_000])
            for key, value in changes.meta.items():
                self._put_blob(f"meta:{key}", value)
            # seal what was written into indexed segments (Milvus Lite otherwise scans its in-memory
            # table in Python on every search: seconds per query at 100k rows)
            self.client.flush(self.faces)
            self.client.flush(self.files_c)
            self._put_blob("version", uuid.uuid4().hex.encode())
            self.client.delete(self.meta_c, filter=_in("key", [_APPLYING]))
            self.refresh()

    def purge_removed(self) -> None:
        """Milvus drops deleted rows' vectors from its segments when it compacts them: ask for that now. Milvus
        Lite may not compact on request; then its own compaction does it later (logged)."""
        with self.writer(timeout=None):
            try:
                self.client.compact(self.faces)
            except Exception as error:  # pymilvus' types vary by version and backend
                log.warning("Milvus at %s did not compact %s on request (%s): deleted vectors go at its own "
                            "compaction", self.uri, self.faces, error)  # fmt: skip

    def close(self) -> None:
        self.client.close()

    def face_vectors(
        self, paths: Iterable[str] | None = None, chunk: int = 20_000
    ) -> Iterator[tuple[list[FaceRow], np.ndarray]]:
        """The rows and stored vectors of the faces of `paths` (None: every face), in chunks of at most `chunk`."""
        if self.header is None or not self.client.has_collection(self.faces):
            return
        fields = ["vector", *_ROW_FIELDS]
        if paths is None:
            filters = [""]
        else:
            wanted = sorted(set(paths))
            filters = [_in("path", wanted[i : i + 1_000]) for i in range(0, len(wanted), 1_000)]
        rows: list[FaceRow] = []
        vectors: list = []
        for filter in filters:
            for r in self._iterate(self.faces, filter, fields):
                rows.append(_face_row(r))
                vectors.append(r["vector"])
                if len(rows) >= chunk:
                    yield rows, np.asarray(vectors, dtype=np.float32)
                    rows, vectors = [], []
        if rows:
            yield rows, np.asarray(vectors, dtype=np.float32)

    # --- helpers -------------------------------------------------------------------------

    def _insert(self, collection: str, rows: list[dict]) -> None:
        for start in range(0, len(rows), 5_000):
            self.client.insert(collection, rows[start : start + 5_000])

    def _delete_in(self, collection: str, field: str, values: set[str]) -> None:
        ordered = sorted(values)
        for start in range(0, len(ordered), 5_000):  # each delete scans (Milvus Lite: in Python): few, large ones
            self.client.delete(collection, filter=_in(field, ordered[start : start + 5_000]))

    def _iterate(self, collection: str, filter: str, fields: list[str]) -> Iterator[dict]:
        iterator = self.client.query_iterator(collection, batch_size=5_000, filter=filter, output_fields=fields)
        try:
            while batch := iterator.next():
                yield from batch
        finally:
            iterator.close()

    def _get_blob(self, key: str) -> bytes | None:
        rows = self.client.query(self.meta_c, filter=_in("key", [key]), output_fields=["chunk", "value"])
        if not rows:
            return None
        rows.sort(key=lambda r: int(r["chunk"].rsplit("#", 1)[1]))
        return base64.b64decode("".join(r["value"] for r in rows))

    def _put_blob(self, key: str, value: bytes) -> None:
        text = base64.b64encode(value).decode()
        chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
        self.client.upsert(
            self.meta_c,
            [{"chunk": f"{key}#{n}", "key": key, "value": chunk, "vector": _DUMMY} for n, chunk in enumerate(chunks)],
        )
        # a shorter blob than before: drop the old tail chunks
        self.client.delete(
            self.meta_c,
            filter=f"{_in('key', [key])} and chunk not in {json.dumps([f'{key}#{n}' for n in range(len(chunks))])}",
        )


def _connect(client_type: Any, uri: str, timeout: float, attempts: int = 3) -> Any:
    """A connected MilvusClient. A refused handshake is tried again: on a loaded machine Milvus Lite's fresh
    server has answered gRPC's first calls with GOAWAY "too many pings" (UNAVAILABLE), and served the next."""
    attempt = 1
    while True:
        try:
            client = client_type(uri, timeout=timeout)
            client.list_collections()
            return client
        except Exception as error:
            transient = any(word in str(error).lower() for word in ("unavailable", "too many pings"))
            if attempt == attempts or not transient:
                raise
            log.warning("Milvus at %s refused the connection (%s); trying again", uri, error)
            time.sleep(0.5 * attempt)
            attempt += 1


def _face_fields(row: FaceRow) -> dict:
    """Milvus has no nulls in these fields: no landmarks are "", no confidence is -1."""
    fields = face_fields(row)
    fields["landmarks"] = fields["landmarks"] or ""
    fields["confidence"] = -1.0 if row.confidence is None else float(row.confidence)
    return fields


def _face_row(e: dict) -> FaceRow:
    confidence = None if e["confidence"] < 0 else float(e["confidence"])
    landmarks = landmarks_from_json(e["landmarks"]) if e["landmarks"] else None
    return FaceRow(e["path"], e["name"], (e["x"], e["y"], e["w"], e["h"]), confidence, landmarks)


def _in(field: str, values: list[str]) -> str:
    """A Milvus filter `field in [...]` with the values quoted as JSON strings."""
    return f"{field} in {json.dumps(list(values), ensure_ascii=False)}"
