"""The persons registry: which indexed face belongs to which person, kept in its own SQLite file per model.

Works beside either vector store: a face is keyed by its gallery-relative path and its box, as the
store's `FaceRow` has them, and the registry reads rows and vectors through the store
(`face_vectors`, `search`). Layout of DATA_DIR/people/<model>.sqlite:

  persons  id (never reused), name (null: not named yet), hidden
  faces    path, x, y, w, h (the key), person_id (null: waiting to be clustered), excluded (taken out by hand)
  files    path -> sha256 of the gallery files the registry has seen (what changed since the last sync)
  state    next person id, the store fingerprint and the naming mode the faces were grouped under

Where names come from (`names`): "folders" (the people layout: each person folder is a named person,
its name the folder's) or "clusters" (any photo tree: faces grouped by `engine.people.cluster`, named
by hand). Writers are serialised across processes by a file lock next to the database; each sync,
re-cluster or edit is one SQLite transaction at its end, so a run killed half-way changes nothing.
"""

from __future__ import annotations

import builtins  # the class's own `list` method shadows the builtin in its body
import json
import logging
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import sqlalchemy as sa
from filelock import FileLock

from engine.errors import BadInputError, BadPersonNameError, FaceNamedError, PersonNotFoundError, PersonOptedOutError
from engine.people.cluster import EXCLUDED, NO_PERSON, ClusterParams, Neighbours, assign
from engine.stores.base import FaceRow, VectorStore
from engine.stores.sqlite import shared_sqlite, write_transaction
from engine.types import PersonRef

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
Key = tuple[str, Box]
Kept = tuple[int | None, bool]  # a face's person (or None), and whether it was taken out by hand
Grouping = tuple[dict[Key, int | None], dict[int, str | None], int]  # (each face's person, persons created, next id)
NameSource = Literal["folders", "clusters"]

MAX_NAME_CHARS = 64
MAX_NAME_BYTES = 256
SEARCH_BATCH = 4096

_metadata = sa.MetaData()
_persons = sa.Table(
    "persons",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String, nullable=True),
    sa.Column("hidden", sa.Boolean, nullable=False, default=False),
)
_faces = sa.Table(
    "faces",
    _metadata,
    sa.Column("path", sa.String, primary_key=True),
    sa.Column("x", sa.Integer, primary_key=True),
    sa.Column("y", sa.Integer, primary_key=True),
    sa.Column("w", sa.Integer, primary_key=True),
    sa.Column("h", sa.Integer, primary_key=True),
    sa.Column("person_id", sa.Integer, nullable=True, index=True),
    sa.Column("excluded", sa.Boolean, nullable=False, default=False),
)
_files = sa.Table(
    "files", _metadata, sa.Column("path", sa.String, primary_key=True), sa.Column("sha256", sa.String, nullable=False)
)
_opted_out = sa.Table(  # hidden persons who opted out themselves (the bot's /optout): unhidden only on purpose
    "opted_out",
    _metadata,
    sa.Column("person_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Float, nullable=False),
)
_state = sa.Table("state", _metadata, sa.Column("key", sa.String, primary_key=True), sa.Column("value", sa.String))


@dataclass(frozen=True)
class FaceRef:
    path: str  # relative to the gallery root
    box: Box

    def to_dict(self) -> dict:
        return {"path": self.path, "box": list(self.box)}


@dataclass(frozen=True)
class Person:
    id: int
    name: str | None
    hidden: bool
    faces: list[FaceRef]  # the representative face first (the largest), then by path

    @property
    def photos(self) -> int:
        return len({face.path for face in self.faces})

    @property
    def representative(self) -> FaceRef | None:
        return self.faces[0] if self.faces else None

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "faces": [f.to_dict() for f in self.faces], "photos": self.photos}


@dataclass(frozen=True)
class NamedFace:
    """What `PeopleRegistry.name_face` did: the face's person now, called by the name given, and how it came to be."""

    person: PersonRef
    change: Literal["new person", "joined", "named", "merged", "unchanged"]


@dataclass
class SyncReport:
    """What one sync or re-cluster changed."""

    added: int = 0  # faces new to the registry
    removed: int = 0  # faces whose photo left the gallery or changed
    moved: int = 0  # photos that moved (same content at a new path): their faces keep their person
    assigned: int = 0  # faces given a person by this run
    new_persons: int = 0
    waiting: int = 0  # faces without a person after the run (retried when new faces come near them)
    persons: int = 0  # persons after the run (hidden ones included)
    reclustered: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def clean_name(name: str) -> str:
    """A person's name as stored: NFKC-normalised, spaces collapsed; BadPersonNameError when unusable."""
    if not isinstance(name, str):
        raise BadPersonNameError("a person's name must be text")
    text = " ".join(unicodedata.normalize("NFKC", name).split())
    if not text:
        raise BadPersonNameError("a person's name cannot be empty")
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp") or c in _BIDI_CONTROLS]
    if bad:
        raise BadPersonNameError(f"a person's name cannot hold control characters ({bad[0]!a})")
    if len(text) > MAX_NAME_CHARS or len(text.encode()) > MAX_NAME_BYTES:
        raise BadPersonNameError(f"a person's name can be at most {MAX_NAME_CHARS} characters ({MAX_NAME_BYTES} bytes)")
    return text


_UPDATE_PERSON = (
    _faces.update()
    .where(
        _faces.c.path == sa.bindparam("k_path"), _faces.c.x == sa.bindparam("k_x"), _faces.c.y == sa.bindparam("k_y"),
        _faces.c.w == sa.bindparam("k_w"), _faces.c.h == sa.bindparam("k_h"),
    )
    .values(person_id=sa.bindparam("person"))
)  # fmt: skip
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


class PeopleRegistry:
    """Persons of one model's gallery (see the module docstring). Safe to share between processes."""

    def __init__(
        self, path: Path, *, names: NameSource = "folders", params: ClusterParams, lock_timeout: float = 600.0
    ):
        self.path = Path(path)
        self.names = names
        self.params = params
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._engine = shared_sqlite(self.path, _metadata)
        self._lock = FileLock(str(self.path.with_suffix(".lock")), thread_local=False)
        self._lock_timeout = lock_timeout

    def __str__(self) -> str:
        return f"people registry {self.path}"

    def close(self) -> None:
        self._engine.dispose()

    # --- reading -------------------------------------------------------------------------

    def list(self, *, hidden: bool = False) -> list[Person]:
        """Persons with at least one face, largest first (hidden ones only when asked)."""
        with self._engine.connect() as conn:
            persons = conn.execute(sa.select(_persons)).all()
            faces = conn.execute(
                sa.select(_faces.c.path, _faces.c.x, _faces.c.y, _faces.c.w, _faces.c.h, _faces.c.person_id).where(
                    _faces.c.person_id.is_not(None)
                )
            ).all()
        by_person: dict[int, list[FaceRef]] = {}
        for f in faces:
            by_person.setdefault(f.person_id, []).append(FaceRef(f.path, (f.x, f.y, f.w, f.h)))
        out = [
            Person(p.id, p.name, bool(p.hidden), _ordered(by_person[p.id]))
            for p in persons
            if p.id in by_person and (hidden or not p.hidden)
        ]
        out.sort(key=lambda p: (-len(p.faces), p.id))
        return out

    def get(self, person_id: int) -> Person:
        """One person, hidden or not; PersonNotFoundError when there is none with that id."""
        person_id = _check_id(person_id)
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(_persons).where(_persons.c.id == person_id)).first()
            faces = conn.execute(
                sa.select(_faces.c.path, _faces.c.x, _faces.c.y, _faces.c.w, _faces.c.h).where(
                    _faces.c.person_id == person_id
                )
            ).all()
        if row is None:
            raise PersonNotFoundError(f"no person with id {person_id} (python -m engine people lists them)")
        return Person(
            row.id, row.name, bool(row.hidden), _ordered([FaceRef(f.path, (f.x, f.y, f.w, f.h)) for f in faces])
        )

    def person_of(self, faces: Sequence[FaceRow | FaceRef]) -> builtins.list[PersonRef | None]:
        """The visible person of each face (a store row or a FaceRef), or None: waiting, taken out, hidden, unknown."""
        keys = [_key(f) for f in faces]
        found: dict[Key, PersonRef] = {}
        with self._engine.connect() as conn:
            for part in _chunks(sorted({k[0] for k in keys}), 500):
                query = (
                    sa.select(
                        _faces.c.path, _faces.c.x, _faces.c.y, _faces.c.w, _faces.c.h, _persons.c.id, _persons.c.name
                    )
                    .join(_persons, _persons.c.id == _faces.c.person_id)
                    .where(_faces.c.path.in_(part), _persons.c.hidden.is_(False))
                )
                for r in conn.execute(query):
                    found[(r.path, (r.x, r.y, r.w, r.h))] = PersonRef(r.id, r.name)
        return [found.get(k) for k in keys]

    def photos_of(self, person_id: int) -> builtins.list[str]:
        """The gallery photos (relative paths, sorted) a visible person appears in."""
        person = self.get(person_id)
        if person.hidden:
            raise PersonNotFoundError(f"no person with id {person_id} (it is hidden)")
        return sorted({f.path for f in person.faces})

    def waiting(self) -> int:
        """Faces waiting for a person (not taken out by hand)."""
        with self._engine.connect() as conn:
            query = (
                sa.select(sa.func.count())
                .select_from(_faces)
                .where(_faces.c.person_id.is_(None), _faces.c.excluded.is_(False))
            )
            return int(conn.execute(query).scalar() or 0)

    # --- editing by hand -----------------------------------------------------------------

    def name(self, person_id: int, name: str) -> PersonRef:
        """Name a visible person (renames a named one). A name another person has is refused: merge them instead."""
        text = clean_name(name)
        self._editable("named")
        with self._writing() as conn:
            person = self._visible(conn, person_id)
            other = conn.execute(
                sa.select(_persons.c.id).where(_persons.c.name == text, _persons.c.id != person.id)
            ).scalar()
            if other is not None:
                raise BadPersonNameError(
                    f"person {other} is already named {text!r}: merge them with `people merge {other} {person.id}`"
                )
            conn.execute(_persons.update().where(_persons.c.id == person.id).values(name=text))
        return PersonRef(person.id, text)

    def merge(self, into: int, other: int) -> PersonRef:
        """Move every face of person `other` into person `into`; `into` keeps its id and name (or takes `other`'s)."""
        self._editable("merged")
        with self._writing() as conn:
            target = self._visible(conn, into)
            source = self._visible(conn, other)
            if target.id == source.id:
                raise BadInputError(f"cannot merge person {target.id} with itself")
            if target.name and source.name and target.name != source.name:
                log.info("merging %s (%s) into %s (%s)", source.id, source.name, target.id, target.name)
            name = target.name or source.name
            conn.execute(_faces.update().where(_faces.c.person_id == source.id).values(person_id=target.id))
            conn.execute(_persons.delete().where(_persons.c.id == source.id))
            conn.execute(_persons.update().where(_persons.c.id == target.id).values(name=name))
        return PersonRef(target.id, name)

    def name_face(self, path: str, box: Box, name: str) -> NamedFace:
        """Say whose face this is (what `/add Name` does in the photos layout), in one transaction:

        - the face waits for a person (or was taken out by hand): it joins the person called `name`, or founds a
          new person of that name ("joined", "new person");
        - its person is not named: that person is named `name`, or merged into the person called `name` when there
          is one ("named", "merged");
        - its person is called `name` already: nothing changes ("unchanged");
        - its person has another name, or is hidden (or the person called `name` is): FaceNamedError, nothing changes.
        The face then belongs to a named person, which syncs and re-clusters keep together.
        """
        text = clean_name(name)
        self._editable("named")
        x, y, w, h = box
        with self._writing() as conn:
            face = conn.execute(
                sa.select(_faces).where(
                    _faces.c.path == path, _faces.c.x == x, _faces.c.y == y, _faces.c.w == w, _faces.c.h == h
                )
            ).first()
            if face is None:
                raise BadInputError(f"no indexed face at {list(box)} in {path}")
            owner = None
            if face.person_id is not None:
                owner = conn.execute(sa.select(_persons).where(_persons.c.id == face.person_id)).first()
            if owner is not None and owner.hidden:
                raise FaceNamedError(f"that face is in person {owner.id}, which is hidden: nothing named")
            if owner is not None and owner.name is not None and owner.name.casefold() == text.casefold():
                return NamedFace(PersonRef(owner.id, owner.name), "unchanged")  # a name differing in case only
            if owner is not None and owner.name is not None:
                raise FaceNamedError(
                    f"that face is already {owner.name}'s (person {owner.id}): rename or merge that person to change it",
                    PersonRef(owner.id, owner.name),
                )
            # the person called `name`, whatever the case (as folder names are matched in the people layout)
            named = conn.execute(sa.select(_persons).where(_persons.c.name.is_not(None))).all()
            called = next((p for p in named if p.name.casefold() == text.casefold()), None)
            if called is not None:
                text = called.name
            if called is not None and called.hidden:
                raise FaceNamedError(f"the person called {text} ({called.id}) is hidden: nothing named")
            if owner is not None and called is None:
                conn.execute(_persons.update().where(_persons.c.id == owner.id).values(name=text))
                return NamedFace(PersonRef(owner.id, text), "named")
            if owner is not None and called is not None:
                conn.execute(_faces.update().where(_faces.c.person_id == owner.id).values(person_id=called.id))
                conn.execute(_persons.delete().where(_persons.c.id == owner.id))
                return NamedFace(PersonRef(called.id, text), "merged")
            change: Literal["joined", "new person"] = "joined"
            if called is None:
                state: dict[str, str] = dict(conn.execute(sa.select(_state.c.key, _state.c.value)).tuples().all())
                person_id = max(int(state.get("next_person", "1")), _largest_id(conn) + 1)
                conn.execute(_persons.insert().values(id=person_id, name=text, hidden=False))
                conn.execute(_state.delete().where(_state.c.key == "next_person"))
                conn.execute(_state.insert().values(key="next_person", value=str(person_id + 1)))
                change = "new person"
            else:
                person_id = called.id
            conn.execute(
                _faces.update()
                .where(_faces.c.path == path, _faces.c.x == x, _faces.c.y == y, _faces.c.w == w, _faces.c.h == h)
                .values(person_id=person_id, excluded=False)
            )
        return NamedFace(PersonRef(person_id, text), change)

    def hide(self, person_id: int) -> None:
        """Hide a person: never listed, never named in answers; its faces stay with it (they are not clustered again)."""
        with self._writing() as conn:
            person = self._visible(conn, person_id)
            conn.execute(_persons.update().where(_persons.c.id == person.id).values(hidden=True))

    def opt_out(self, person_id: int) -> None:
        """A person who opted out: hidden (hidden already, or not), and marked so that only `unhide(...,
        opted_out=True)` shows them again. Faces that join them later stay hidden with them."""
        person_id = _check_id(person_id)
        with self._writing() as conn:
            if conn.execute(sa.select(_persons.c.id).where(_persons.c.id == person_id)).first() is None:
                raise PersonNotFoundError(f"no person with id {person_id}")
            conn.execute(_persons.update().where(_persons.c.id == person_id).values(hidden=True))
            if conn.execute(sa.select(_opted_out).where(_opted_out.c.person_id == person_id)).first() is None:
                conn.execute(_opted_out.insert().values(person_id=person_id, at=time.time()))

    def opted_out(self) -> set[int]:
        """The ids of the persons who opted out."""
        with self._engine.connect() as conn:
            ids: builtins.list[int] = builtins.list(conn.scalars(sa.select(_opted_out.c.person_id)))
        return set(ids)

    def opted_out_faces(self) -> set[Key]:
        """The faces (gallery-relative path, box) of the persons who opted out."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(_faces.c.path, _faces.c.x, _faces.c.y, _faces.c.w, _faces.c.h).join(
                    _opted_out, _opted_out.c.person_id == _faces.c.person_id
                )
            ).all()
        return {(r.path, (r.x, r.y, r.w, r.h)) for r in rows}

    def unhide(self, person_id: int, *, opted_out: bool = False) -> None:
        """Show a hidden person again. One who opted out stays hidden (PersonOptedOutError) unless `opted_out`."""
        person_id = _check_id(person_id)
        with self._writing() as conn:
            row = conn.execute(sa.select(_persons).where(_persons.c.id == person_id)).first()
            if row is None:
                raise PersonNotFoundError(f"no person with id {person_id}")
            marked = conn.execute(sa.select(_opted_out).where(_opted_out.c.person_id == person_id)).first()
            if marked is not None and not opted_out:
                raise PersonOptedOutError(
                    f"person {person_id} opted out (asked not to be found): nothing changed; to show them again "
                    "anyway, say so with --opted-out"
                )
            conn.execute(_persons.update().where(_persons.c.id == person_id).values(hidden=False))
            conn.execute(_opted_out.delete().where(_opted_out.c.person_id == person_id))

    def unassign(self, path: str, box: Box | None = None) -> builtins.list[FaceRef]:
        """Take the faces of photo `path` (or only the one with `box`) out of their persons for good.

        They are never put back by a sync or a re-cluster (until the photo changes). Returns the faces taken out.
        """
        with self._writing() as conn:
            query = sa.select(_faces.c.path, _faces.c.x, _faces.c.y, _faces.c.w, _faces.c.h).where(
                _faces.c.path == path
            )
            if box is not None:
                x, y, w, h = box
                query = query.where(_faces.c.x == x, _faces.c.y == y, _faces.c.w == w, _faces.c.h == h)
            found = conn.execute(query).all()
            if not found:
                what = f"no face at {list(box)} in {path}" if box is not None else f"no indexed face in {path}"
                raise BadInputError(f"{what} (python -m engine people --json lists faces with their boxes)")
            for f in found:
                conn.execute(
                    _faces.update()
                    .where(
                        _faces.c.path == f.path,
                        _faces.c.x == f.x,
                        _faces.c.y == f.y,
                        _faces.c.w == f.w,
                        _faces.c.h == f.h,
                    )
                    .values(person_id=None, excluded=True)
                )
            _drop_empty_persons(conn)
        return [FaceRef(f.path, (f.x, f.y, f.w, f.h)) for f in found]

    def _editable(self, verb: str) -> None:
        if self.names == "folders":
            raise BadInputError(
                f"in the people layout each person folder is a person named after it: persons cannot be {verb} here; "
                "rename or move the folders (or /rename in the bot) and index again"
            )

    def _visible(self, conn: sa.Connection, person_id: int) -> sa.Row[Any]:
        person_id = _check_id(person_id)
        row = conn.execute(sa.select(_persons).where(_persons.c.id == person_id)).first()
        if row is None or row.hidden:
            raise PersonNotFoundError(f"no person with id {person_id} (python -m engine people lists them)")
        return row

    # --- following the store -------------------------------------------------------------

    def sync(self, store: VectorStore) -> SyncReport:
        """Follow the store after an index run: faces of removed or changed photos go, moved photos keep their
        persons, new faces are named from their folder or clustered. A changed model or naming mode re-clusters."""
        started = time.perf_counter()
        with self._locked():
            report = self._sync(store)
        report.seconds = time.perf_counter() - started
        return report

    def recluster(self, store: VectorStore) -> SyncReport:
        """Group every face again from scratch (clusters mode); named and hidden persons keep their faces, ids and
        names, and new groups take the ids of the persons they overlap most. One transaction at the end."""
        started = time.perf_counter()
        with self._locked():
            report = self._sync(store, full=True)
        report.seconds = time.perf_counter() - started
        return report

    def _sync(self, store: VectorStore, full: bool = False) -> SyncReport:
        report = SyncReport()
        store.refresh()
        header, version = store.header, store.version
        current = {p: r.sha256 for p, r in store.files().items()} if header is not None else {}
        fingerprint = json.dumps([header.fingerprint, header.gallery] if header is not None else None)
        with self._engine.connect() as conn:
            known: dict[str, str] = dict(conn.execute(sa.select(_files.c.path, _files.c.sha256)).tuples().all())
            state: dict[str, str] = dict(conn.execute(sa.select(_state.c.key, _state.c.value)).tuples().all())
        full = (
            full or state.get("fingerprint", fingerprint) != fingerprint or state.get("names", self.names) != self.names
        )
        if not full and state.get("store_version") == store.version and header is not None:
            return report  # nothing written to the store since the last sync
        gone = {p for p in known if current.get(p) != known[p]}
        new = {p for p in current if known.get(p) != current[p]}
        # a removed photo whose content appears at exactly one new path moved there (the store kept its vectors)
        new_by_sha: dict[str, list[str]] = {}
        for p in new - set(known):
            new_by_sha.setdefault(current[p], []).append(p)
        moves = {
            old: new_by_sha[known[old]][0] for old in gone - set(current) if len(new_by_sha.get(known[old], [])) == 1
        }
        if len(set(moves.values())) != len(moves) or self.names == "folders":
            # two old paths onto one new one: removed and added; in the people layout the folder is the person
            moves = {}
        gone -= set(moves)
        new -= set(moves.values())
        report.moved = len(moves)

        with self._engine.connect() as conn:
            faces = conn.execute(sa.select(_faces)).all()
            persons = {r.id: r for r in conn.execute(sa.select(_persons))}
        next_id = int(state.get("next_person", "1"))
        report.removed = sum(1 for f in faces if f.path in gone)
        # the registry's faces after removals and moves, by key: (person or None, taken out by hand)
        kept: dict[Key, tuple[int | None, bool]] = {}
        for f in faces:
            if f.path not in gone:
                kept[(moves.get(f.path, f.path), (f.x, f.y, f.w, f.h))] = (f.person_id, bool(f.excluded))
        folder_of: dict[Key, str] = {}  # the person folder of each new face (used in the people layout)
        if header is not None and new:
            for rows, _ in store.face_vectors(sorted(new), chunk=50_000):
                for row in rows:
                    key = _key(row)
                    if key not in kept:
                        kept[key] = (None, False)
                        folder_of[key] = row.name
        new_keys = set(folder_of)
        report.added = len(new_keys)

        grouped_at = int(state.get("grouped_at", "0"))
        growth = self.params.regroup_growth
        if self.names == "clusters" and not full and growth > 0 and len(kept) >= (1 + growth) * grouped_at and new_keys:
            full = True  # the faces have grown enough since the last full clustering: group them all again
        if full:
            grouped_at = len(kept)
        if self.names == "folders":
            if full and header is not None:  # another model or mode before: every face is named from its folder again
                for rows, _ in store.face_vectors(None, chunk=50_000):
                    folder_of.update({_key(r): r.name for r in rows})
            assignment, created, next_id = self._by_folder(kept, folder_of, persons, next_id)
        elif full:
            assignment, created, next_id = self._cluster_all(store, kept, persons, next_id)
        else:
            assignment, created, next_id = self._cluster_new(store, kept, new_keys, next_id)
        report.reclustered = full
        report.new_persons = len(created)
        report.assigned = sum(1 for k, p in assignment.items() if p is not None and kept[k][0] != p)

        with self._writing() as conn:
            dropped = sorted(gone | set(moves))
            _delete_paths(conn, set(dropped))
            for part in _chunks(dropped + sorted(new), 500):
                conn.execute(_files.delete().where(_files.c.path.in_(part)))
            files = [{"path": target, "sha256": known[old]} for old, target in moves.items()]
            files += [{"path": p, "sha256": current[p]} for p in sorted(new)]
            if files:
                conn.execute(_files.insert(), files)
            if created:
                conn.execute(
                    _persons.insert(), [{"id": i, "name": name, "hidden": False} for i, name in sorted(created.items())]
                )
            targets = set(moves.values())
            arrived = new_keys | ({k for k in kept if k[0] in targets} if targets else set())
            inserts = [
                {"path": k[0], "x": k[1][0], "y": k[1][1], "w": k[1][2], "h": k[1][3],
                 "person_id": assignment.get(k, kept[k][0]), "excluded": kept[k][1]}
                for k in arrived
            ]  # fmt: skip
            for start in range(0, len(inserts), 50_000):
                conn.execute(_faces.insert(), inserts[start : start + 50_000])
            updates = [
                {"k_path": k[0], "k_x": k[1][0], "k_y": k[1][1], "k_w": k[1][2], "k_h": k[1][3], "person": p}
                for k, p in assignment.items()
                if k not in arrived and p != kept[k][0]
            ]
            if updates:
                conn.execute(_UPDATE_PERSON, updates)
            _drop_empty_persons(conn)
            settled = (
                ("next_person", str(next_id)), ("fingerprint", fingerprint), ("names", self.names), ("store_version", version),
                ("grouped_at", str(grouped_at)),
            )  # fmt: skip
            for state_key, value in settled:
                conn.execute(_state.delete().where(_state.c.key == state_key))
                conn.execute(_state.insert().values(key=state_key, value=value))
            report.persons = int(conn.execute(sa.select(sa.func.count()).select_from(_persons)).scalar() or 0)
            report.waiting = int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(_faces)
                    .where(_faces.c.person_id.is_(None), _faces.c.excluded.is_(False))
                ).scalar()
                or 0
            )
        return report

    def _by_folder(
        self, kept: dict[Key, Kept], names_of: dict[Key, str], persons: dict[int, Any], next_id: int
    ) -> Grouping:
        """People layout: each face's person is the person named after its folder (created when new)."""
        by_name = {p.name: p.id for p in persons.values() if p.name is not None}
        created: dict[int, str | None] = {}
        assignment: dict[Key, int | None] = {}
        for key, name in names_of.items():
            if kept[key][1]:
                continue  # taken out by hand
            if name not in by_name:
                by_name[name] = next_id
                created[next_id] = name
                next_id += 1
            assignment[key] = by_name[name]
        return assignment, created, next_id

    def _cluster_new(self, store: VectorStore, kept: dict[Key, Kept], new_keys: set[Key], next_id: int) -> Grouping:
        """Cluster the new faces, and the waiting faces near them (their neighbourhood changed), until nothing changes."""
        first_new = next_id
        universe: dict[Key, int] = {}
        person: list[int] = []

        def position(key: Key) -> int:
            if key not in universe:
                universe[key] = len(person)
                owner, excluded = kept.get(key, (None, False))
                person.append(EXCLUDED if excluded else (NO_PERSON if owner is None else owner))
            return universe[key]

        neighbours = Neighbours({}, {})
        todo = sorted(k for k in new_keys if not kept[k][1])
        array = np.zeros(0, np.int64)
        for _ in range(10):
            vectors = _vectors_for(store, todo) if todo else {}
            todo = [k for k in todo if k in vectors]
            if todo:
                _search_into(store, todo, np.stack([vectors[k] for k in todo]), self.params, position, neighbours)
            array = np.array(person, dtype=np.int64)
            searched = sorted(neighbours.index)
            keys = list(universe)
            _, next_id = assign(searched, neighbours, array, self.params, next_id, keys)
            person[:] = array.tolist()
            todo = sorted(
                {
                    keys[j]
                    for i in searched
                    for j in neighbours.index[i]
                    if person[j] == NO_PERSON and j not in neighbours.index
                }
            )
            if not todo:
                break
        keys = list(universe)
        assignment = {
            keys[i]: (p if p >= 0 else None) for i, p in enumerate(person) if keys[i] in kept and p != EXCLUDED
        }
        created: dict[int, str | None] = {p: None for p in set(assignment.values()) if p is not None and p >= first_new}
        return assignment, created, next_id

    def _cluster_all(
        self, store: VectorStore, kept: dict[Key, Kept], persons: dict[int, Any], next_id: int
    ) -> Grouping:
        """Re-cluster: named and hidden persons keep their faces (which vote for them); every other face is grouped
        anew, and each new group takes the id of the unnamed person it shares most faces with."""
        keys: list[Key] = []
        chunks = []
        for rows, vectors in store.face_vectors(None, chunk=50_000):
            for row in rows:
                keys.append(_key(row))
            chunks.append(vectors)
        universe = {k: i for i, k in enumerate(keys)}
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
        kept_persons = {i for i, p in persons.items() if p.name is not None or p.hidden}
        person = np.full(len(keys), NO_PERSON, np.int64)
        old = np.full(len(keys), NO_PERSON, np.int64)
        for k, i in universe.items():
            owner, excluded = kept.get(k, (None, False))
            old[i] = NO_PERSON if owner is None else owner
            if excluded:
                person[i] = EXCLUDED
            elif owner in kept_persons:
                person[i] = owner
        neighbours = Neighbours({}, {})
        pending = [i for i in range(len(keys)) if person[i] == NO_PERSON]
        _search_into(store, [keys[i] for i in pending], vectors[pending], self.params, universe.__getitem__, neighbours)
        first_temporary = max(next_id, int(old.max(initial=0)) + 1)
        assign(pending, neighbours, person, self.params, first_temporary, keys)
        # new groups take the ids of the unnamed persons they overlap most (largest overlaps first)
        overlap = Counter(
            (int(person[i]), int(old[i]))
            for i in pending
            if person[i] >= first_temporary and old[i] >= 0 and old[i] not in kept_persons
        )
        renumber: dict[int, int] = {}
        taken: set[int] = set()
        for (group, previous), _count in sorted(overlap.items(), key=lambda item: (-item[1], item[0])):
            if group not in renumber and previous not in taken:
                renumber[group] = previous
                taken.add(previous)
        created: dict[int, str | None] = {}
        for group in sorted({int(p) for p in person if p >= first_temporary}):
            if group not in renumber:
                renumber[group] = next_id
                created[next_id] = None
                next_id += 1
        assignment: dict[Key, int | None] = {}
        for k, i in universe.items():
            if k not in kept or person[i] == EXCLUDED:
                continue
            p = int(person[i])
            assignment[k] = renumber.get(p, p) if p >= 0 else None
        for k in kept:  # faces the store no longer holds (should not happen after a sync): no person
            if k not in universe and not kept[k][1]:
                assignment[k] = None
        return assignment, created, next_id

    # --- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock.acquire(timeout=self._lock_timeout)
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """One write transaction under the cross-process lock (re-entrant within a sync)."""
        with self._locked(), write_transaction(self._engine) as conn:
            yield conn


def _vectors_for(store: VectorStore, keys: list[Key]) -> dict[Key, np.ndarray]:
    wanted = set(keys)
    out: dict[Key, np.ndarray] = {}
    for rows, vectors in store.face_vectors(sorted({k[0] for k in keys})):
        for row, vector in zip(rows, vectors):
            key = _key(row)
            if key in wanted:
                out[key] = vector
    return out


def _search_into(
    store: VectorStore,
    keys: list[Key],
    vectors: np.ndarray,
    params: ClusterParams,
    position: Callable[[Key], int],
    neighbours: Neighbours,
) -> None:
    """Ask the store for each face's neighbours and keep the close ones (itself left out)."""
    for start in range(0, len(keys), SEARCH_BATCH):
        hits = store.search(vectors[start : start + SEARCH_BATCH], params.neighbours + 1)
        for key, found in zip(keys[start : start + SEARCH_BATCH], hits):
            me = position(key)
            close = [
                (position((h.row.path, cast(Box, tuple(h.row.box)))), h.similarity)
                for h in found
                if h.similarity >= params.threshold
            ]
            close = [(j, s) for j, s in close if j != me][: params.neighbours]
            neighbours.index[me] = np.array([j for j, _ in close], np.int64)
            neighbours.similarity[me] = np.array([s for _, s in close], np.float32)


def _key(face: FaceRow | FaceRef) -> Key:
    """A face's key: its path and its box as a 4-tuple."""
    x, y, w, h = face.box
    return (face.path, (x, y, w, h))


def _ordered(faces: list[FaceRef]) -> list[FaceRef]:
    """The largest face first (the person's representative), then by path and box."""
    if not faces:
        return faces
    biggest = max(faces, key=lambda f: (f.box[2] * f.box[3], f.path))
    return [biggest] + sorted((f for f in faces if f != biggest), key=lambda f: (f.path, f.box))


def _check_id(person_id: object) -> int:
    if isinstance(person_id, bool) or not isinstance(person_id, int) or person_id < 1:
        raise PersonNotFoundError(f"no person with id {person_id!r}: ids are whole numbers from 1")
    return person_id


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _delete_paths(conn: sa.Connection, paths: set[str]) -> None:
    for part in _chunks(sorted(paths), 500):
        conn.execute(_faces.delete().where(_faces.c.path.in_(part)))


def _largest_id(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.max(_persons.c.id))).scalar() or 0)


def _drop_empty_persons(conn: sa.Connection) -> None:
    used = sa.select(_faces.c.person_id).where(_faces.c.person_id.is_not(None))
    conn.execute(_persons.delete().where(_persons.c.id.not_in(used)))
