"""The SQLite label store: real labelling work, kept safe from crashes, threads and a second notebook.

One file holds one image collection: the items (pool or hold-out), their labels, the model's last
confidences, and every label event (so undo is exact). Writes are one ``BEGIN IMMEDIATE`` transaction
each, in WAL mode: a crash loses at most the write in progress, two processes can label at once.

**Any thread may call any method.** JupyterLab 4.6 with ipykernel 7 runs widget callbacks in a
*subshell thread*; a plain ``sqlite3`` connection refuses every thread but its creator's. The store
opens its connection with ``check_same_thread=False`` and serialises every use of it with a lock.
Each label event records its ``labeller`` (a person's name; by default the login name), so undo takes back
the caller's own label, also after a kernel restart. Each open store is also a *session*: the images a session
was given to label are claimed for it for a while, so a second notebook or kernel on the same file gets other
images, never the same queue.
"""
from __future__ import annotations

import contextlib
import getpass
import json
import os
import sqlite3
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .. import metrics
from . import strategies as st
from ..runtime import CourseError

__all__ = ["LabelStore", "ReadOnlyStore", "SCHEMA_VERSION", "CLAIM_SECONDS", "combination_probs", "label_probs", "label_bits"]

CLAIM_SECONDS = 15 * 60   # how long images handed to one session stay off every other session's queue

SCHEMA_VERSION = 2   # 2: events record their labeller; version-1 files are upgraded on open
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    ref TEXT NOT NULL,                              -- a file path, or the index into an image array
    split TEXT NOT NULL CHECK (split IN ('pool', 'holdout')),
    label INTEGER,                                  -- NULL until someone labels it
    confidences TEXT,                               -- JSON list: the model's per-class probabilities
    predicted_at REAL,
    labeled_at REAL
);
CREATE TABLE events (                               -- every label action, so undo is exact
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id),
    old_label INTEGER, new_label INTEGER, old_labeled_at REAL,
    at REAL NOT NULL, undone INTEGER NOT NULL DEFAULT 0,
    labeller TEXT                                   -- who labelled: undo only takes back one's own events
);
CREATE INDEX items_split_label ON items(split, label);
CREATE TABLE IF NOT EXISTS contents (               -- a file's SHA-256, where refs are files: one row per content
    item_id INTEGER PRIMARY KEY REFERENCES items(id), sha256 TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS unreadable (             -- files that went missing or cannot be read: never queried
    item_id INTEGER PRIMARY KEY REFERENCES items(id), reason TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (                 -- images on one session's screen, off every other queue
    item_id INTEGER PRIMARY KEY, session TEXT NOT NULL, labeller TEXT, until REAL NOT NULL
);
"""


class LabelStore:
    """Labels for one image collection in one SQLite file: safe to stop, resume and share.

    * ``LabelStore.create(path, refs, class_names)`` makes a new store (it refuses to replace an
      existing file unless ``reuse=True``, which opens it instead); ``LabelStore(path)`` resumes one.
    * A seeded ``holdout_fraction`` (10 %) of the images is set aside at insertion and never queried.
    * WAL journal and one transaction per write: a crash loses at most the write in progress, and
      two processes can label at once.
    * Safe from any thread (one lock around every use of the connection).
    * ``labeller`` names whoever labels through this object (default: the login name, so undo works after a
      kernel restart); undo takes back only that labeller's events, so two people sharing a file, each with
      their own name, never undo each other.
    * Each object is one session: :meth:`next_batch` claims the images it hands out for ``CLAIM_SECONDS``, and
      another session on the same file is given other images (or told that the rest are on someone's screen).
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 30.0, labeller: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise CourseError(f"no label store at {self.path}. Create one with LabelStore.create(path, refs, "
                              "class_names).")
        self.labeller = str(labeller) if labeller else _login_name()
        self.session = uuid.uuid4().hex[:12]
        self._lock = threading.RLock()
        self._closed = False
        self._read_only_v1 = False
        self._conn = self._connect(self.path, timeout)
        self._inode = self._file_id()
        self.class_names: list[str] = self._check_schema()
        self.n_classes = len(self.class_names)
        meta = self._meta()
        self.mode: str = meta.get("mode", "single-label")
        self.label_names: list[str] | None = json.loads(meta["label_names"]) if "label_names" in meta else None
        # the folder relative file refs start from (recorded relative to the store, so both can move together)
        self.root: Path | None = (self.path.resolve().parent / meta["root"]).resolve() if "root" in meta else None

    # ---------------------------------------------------------------- creating
    @classmethod
    def create(cls, path: str | os.PathLike, refs: int | Sequence[Any], class_names: Sequence[str], *,
               holdout_fraction: float = 0.1, seed: int = 0, reuse: bool = False,
               data_id: str | None = None, holdout: Sequence[bool] | None = None,
               sha256: Sequence[str] | None = None, label_names: Sequence[str] | None = None,
               root: str | os.PathLike | None = None) -> "LabelStore":
        """A new store with one row per image (``refs``: paths, or ``n`` for array indices 0..n-1).

        An existing file is never replaced: ``reuse=True`` opens it (and checks it holds the same
        images and classes), otherwise this raises. ``data_id`` (e.g. a hash of the images) ties the
        store to its data: array indices alone cannot tell a new version of the images from the old,
        and labels given to other pixels must never be mixed in.

        For a folder of files (see :mod:`course_utils.project`): ``holdout`` gives each image's split (e.g. by
        its content hash, so adding images never moves one), ``sha256`` each file's content digest, and
        ``label_names`` makes a multi-label store whose classes are the combinations of those yes/no labels.
        ``root`` is the folder that relative file refs start from; it is recorded relative to the store's own
        folder, so the two can move together.
        """
        path = Path(path)
        refs = [str(i) for i in range(refs)] if isinstance(refs, (int, np.integer)) else [str(r) for r in refs]
        class_names = [str(c) for c in class_names]
        if len(class_names) < 2:
            raise CourseError(f"a label store needs at least two class names, got {class_names}.")
        if not refs:
            raise CourseError("a label store needs at least one image reference.")
        if len(set(refs)) != len(refs):
            raise CourseError("image references must be unique (two images share a path or index).")
        if not 0.0 <= holdout_fraction < 1.0:
            raise CourseError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}.")
        if path.exists() and _is_empty_sqlite(path):   # the leftover of a create() that failed: no work in it
            print(f"{path} is an empty SQLite file (the leftover of an interrupted create): replaced by a new store")
            _remove_store_files(path)
        if path.exists():
            if not reuse:
                raise CourseError(f"{path} already exists and holds labelling work; it is never overwritten. Open "
                                  "it with LabelStore(path) to resume, pass reuse=True, or choose a new file name.")
            store = cls(path)
            stored = [r for (r,) in store._read("SELECT ref FROM items ORDER BY id")]
            if stored != refs or store.class_names != class_names:
                store.close()
                raise CourseError(f"{path} holds a different image list or class names; choose a new file name.")
            held = store._meta().get("data_id")
            if data_id is not None and held is not None and held != str(data_id):
                store.close()
                raise CourseError(f"{path} holds labels for other images (data {held}, not {data_id}): the data "
                                  "changed since it was labelled. Its labels are kept; use a new file name for "
                                  "this data (e.g. one that contains the data id).")
            if data_id is not None and held is None:   # made without one: tie it to this data from now on
                store._write(lambda c: c.execute("INSERT INTO meta VALUES ('data_id', ?)", (str(data_id),)))
                print(f"{path} recorded no data id; it now belongs to data {data_id} (other data will be refused)")
            return store
        if holdout is None:
            n_hold = int(round(holdout_fraction * len(refs)))
            holdout = np.zeros(len(refs), dtype=bool)
            holdout[np.random.default_rng(seed).choice(len(refs), size=n_hold, replace=False)] = True
        holdout = _aligned(holdout, refs, "holdout", bool)
        digests = None if sha256 is None else _aligned(sha256, refs, "sha256", str)
        mode = [("mode", "single-label")]
        if label_names is not None:
            label_names = [str(n) for n in label_names]
            if len(class_names) != 2 ** len(label_names):
                raise CourseError(f"{len(label_names)} yes/no labels make {2 ** len(label_names)} combinations, but "
                                  f"{len(class_names)} class names were given (see project.combination_names).")
            mode = [("mode", "multi-label"), ("label_names", json.dumps(label_names))]
        if root is not None:
            mode.append(("root", os.path.relpath(Path(root).resolve(), path.resolve().parent)))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = cls._connect(path, 30.0)
        except (OSError, sqlite3.OperationalError) as exc:
            raise CourseError(f"cannot create the label store {path} ({exc}): its folder {path.parent} is not "
                              "writable (or not there). Choose a folder you can write to.") from exc
        try:
            cls._use_wal(conn)
            conn.execute("BEGIN IMMEDIATE")
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(stmt)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("class_names", json.dumps(class_names)),
                ("holdout_fraction", str(holdout_fraction)), ("seed", str(seed)),
                ("created_at", str(time.time())), ("holdout_evaluations", "0"),
                *([("data_id", str(data_id))] if data_id is not None else []), *mode])
            conn.executemany("INSERT INTO items (id, ref, split) VALUES (?, ?, ?)",
                             [(i, r, "holdout" if h else "pool") for i, (r, h) in enumerate(zip(refs, holdout))])
            if digests is not None:
                conn.executemany("INSERT INTO contents VALUES (?, ?)", list(enumerate(digests)))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:               # SQLite may have rolled back itself (a full disk does)
                conn.execute("ROLLBACK")
            conn.close()
            _remove_store_files(path)             # nothing half-made is left to be refused later
            if isinstance(exc, sqlite3.DatabaseError):
                raise CourseError(f"could not create the label store {path} ({exc}); nothing was left behind. "
                                  f"{_fix_for(str(exc))}.") from exc
            raise
        conn.close()
        return cls(path)

    @staticmethod
    def _connect(path: Path, timeout: float) -> sqlite3.Connection:
        # explicit transactions; any thread may use it, serialised by the store's lock
        # (WAL is switched on only once the schema is accepted: a foreign file is never changed)
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA schema_version").fetchone()   # reads the header: fails on a non-SQLite file
        except sqlite3.OperationalError as exc:
            conn.close()
            if "readonly" not in str(exc) or os.access(path.parent, os.W_OK):
                raise CourseError(f"cannot open the label store {path} ({exc}). {_fix_for(str(exc))}.") from exc
            # a WAL file in a read-only folder: SQLite cannot make its -shm file, so read it as a fixed snapshot
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, timeout=timeout,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise CourseError(f"{path} is not a SQLite label store ({exc}); choose another file.") from exc
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @staticmethod
    def _use_wal(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:             # a read-only file: reading works, a write says why
            return
        conn.execute("PRAGMA synchronous=NORMAL")   # with WAL: durable across process crashes

    def _check_schema(self) -> list[str]:
        """Accept only an undamaged course label store of this schema (a version-1 file is upgraded in place,
        or read as it is where it cannot be written); returns its class names."""
        try:
            ok = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r for (r,) in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            meta = dict(self._conn.execute("SELECT key, value FROM meta")) if "meta" in tables else None
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise CourseError(f"{self.path} is a damaged SQLite file ({exc}). Restore it from a copy; "
                              "`sqlite3 FILE .recover` may rescue its labels.") from exc
        if ok != "ok":
            self._conn.close()
            raise CourseError(f"{self.path} is damaged (SQLite's check says: {ok}). Restore it from a copy; "
                              "`sqlite3 FILE .recover` may rescue its labels.")
        if meta is None or "schema_version" not in meta:
            self._conn.close()
            raise CourseError(f"{self.path} is a SQLite file but not a course label store (it has no schema "
                              "version). Use a new file name for a new store.")
        if meta["schema_version"] not in ("1", str(SCHEMA_VERSION)):
            self._conn.close()
            raise CourseError(f"{self.path} has label-store schema version {meta['schema_version']}, but this "
                              f"course_utils reads version {SCHEMA_VERSION}. Open it with the course_utils version "
                              "that wrote it, or start a new store under another name.")
        try:
            names = json.loads(meta["class_names"])
            int(meta["holdout_evaluations"])
            missing = {"items", "events"} - tables
            if missing or not isinstance(names, list) or len(names) < 2:
                raise ValueError(f"missing tables {sorted(missing)}" if missing else f"class names {names!r}")
        except (KeyError, ValueError, TypeError) as exc:
            self._conn.close()
            what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CourseError(f"{self.path} is a damaged label store ({what}). Restore it from a copy; its labels "
                              "are in the table `items`.") from exc
        if meta["schema_version"] == "1":
            self._upgrade_v1()
        self._use_wal(self._conn)
        return [str(c) for c in names]

    def _upgrade_v1(self) -> None:
        """Version 1 had no labeller column: add it, once, however many kernels open the file at the same time.
        Where the file cannot be written it is read as it is (labelling then says why it cannot save)."""
        def upgrade(c: sqlite3.Connection) -> None:
            version = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            if version != "1":                    # another kernel upgraded it while we waited for the lock
                return
            if "labeller" not in {r[1] for r in c.execute("PRAGMA table_info(events)")}:
                c.execute("ALTER TABLE events ADD COLUMN labeller TEXT")
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

        try:
            self._write(upgrade)
        except ReadOnlyStore:
            self._read_only_v1 = True
        except CourseError:
            self._conn.close()
            raise
        if self._read_only_v1:
            warnings.warn(f"{self.path} is a version-1 label store in a place that cannot be written, so it was not "
                          "upgraded: its labels can be read, not changed. Copy it somewhere writable to label.",
                          stacklevel=3)

    def _meta(self) -> dict[str, str]:
        return dict(self._read("SELECT key, value FROM meta"))

    def _file_id(self) -> tuple[int, int] | None:
        try:
            st_ = os.stat(self.path)
        except OSError:
            return None
        return st_.st_dev, st_.st_ino

    def _check_file(self) -> None:
        """Refuse to write into a file that was deleted or replaced under us (the write would vanish)."""
        if self._file_id() != self._inode:
            raise CourseError(f"the label store file {self.path} was deleted or replaced while it was open, so this "
                              "label could not be saved. Labels saved before are in the file that was there; restore "
                              "it (or create a new store) and open it again with LabelStore(path).")

    def _check_open(self) -> None:
        if self._closed:
            raise CourseError(f"the label store {self.path} was closed; every label saved before is in the file. "
                              "Open it again with LabelStore(path).")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """One query, all rows, under the lock (any thread)."""
        with self._lock:
            self._check_open()
            try:
                return self._conn.execute(sql, tuple(args)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise CourseError(f"could not read the label store {self.path} ({exc}). {_fix_for(str(exc))}.") \
                    from exc

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` inside one IMMEDIATE transaction (taken up front, so writers queue, never deadlock).

        Under the store's lock, so any thread may write; a failure rolls back and says why.
        """
        with self._lock:
            self._check_open()
            self._check_file()
            if self._read_only_v1:
                raise ReadOnlyStore(f"{self.path} is a version-1 label store that could not be upgraded because it is "
                                  "read-only, so nothing can be saved to it: copy it somewhere writable and open the "
                                  "copy.")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise self._write_error(exc) from exc
            try:
                result = fn(self._conn)
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:      # a full disk makes SQLite roll back on its own
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise self._write_error(exc) from exc
                raise
            return result

    def _write_error(self, exc: sqlite3.DatabaseError) -> CourseError:
        kind = ReadOnlyStore if _is_read_only(exc) else CourseError
        return kind(f"could not save to the label store {self.path} ({exc}); nothing was written, and every "
                           f"label saved before is kept. {_fix_for(str(exc))}.")

    def copy_to(self, path: str | os.PathLike) -> "LabelStore":
        """A consistent copy of this store at ``path``, opened: SQLite's online backup (a plain file copy can miss
        what is still in the write-ahead log), with its image refs still pointing at the same folder and no
        image claimed. For a control experiment, or a snapshot before a risky change; never replaces a file."""
        path = Path(path)
        if path.exists():
            raise CourseError(f"{path} exists: copy_to never replaces a label store; choose a new file.")
        path.parent.mkdir(parents=True, exist_ok=True)
        dst = sqlite3.connect(path)
        try:
            with self._lock:
                self._check_open()
                self._conn.backup(dst)
            if self.root is not None:
                dst.execute("UPDATE meta SET value = ? WHERE key = 'root'",
                            (os.path.relpath(self.root, path.resolve().parent),))
            if _has_table(dst, "claims"):
                dst.execute("DELETE FROM claims")
            dst.commit()
        finally:
            dst.close()
        return LabelStore(path)

    def close(self) -> None:
        """Release this session's claimed images and close the file (labels are already saved)."""
        with self._lock:
            if self._closed:
                return
            try:
                if not self._read_only_v1:
                    self._write(lambda c: c.execute("DELETE FROM claims WHERE session = ?", (self.session,))
                                if _has_table(c, "claims") else None)
            except CourseError:
                pass                               # read-only or full: the claims expire on their own
            self._closed = True
            self._conn.close()

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"LabelStore({str(self.path)!r}, closed)"
        c = self.counts()
        return (f"LabelStore({str(self.path)!r}: {c['labelled']}/{c['pool']} pool images labelled, "
                f"{c['holdout']} held out)")

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM items")[0][0])

    def counts(self) -> dict[str, int]:
        """How many images are in the pool, held out, labelled (pool only) and predicted."""
        row = self._read("SELECT SUM(split='pool'), SUM(split='holdout'), SUM(split='pool' AND label IS NOT NULL), "
                         "SUM(split='pool' AND confidences IS NOT NULL) FROM items")[0]
        return dict(zip(("pool", "holdout", "labelled", "predicted"), (int(v or 0) for v in row)))

    def ids(self, split: str | None = "pool", labelled: bool | None = None) -> np.ndarray:
        """Item ids, optionally of one split (``pool`` / ``holdout`` / ``None`` for all) and labelled state."""
        sql, args = "SELECT id FROM items WHERE 1=1", []
        if split is not None:
            if split not in ("pool", "holdout"):
                raise CourseError(f"split must be 'pool', 'holdout' or None, not {split!r}.")
            sql += " AND split = ?"
            args.append(split)
        if labelled is not None:
            sql += " AND label IS NOT NULL" if labelled else " AND label IS NULL"
        return np.array([r for (r,) in self._read(sql + " ORDER BY id", args)], dtype=np.int64)

    def refs(self, ids: Iterable[int]) -> list[str]:
        """The stored path / array index of each id."""
        ids = [int(i) for i in ids]
        rows = dict(self._read(f"SELECT id, ref FROM items WHERE id IN ({','.join('?' * len(ids))})", ids))
        return [rows[i] for i in ids]

    def sha256s(self) -> dict[int, str]:
        """``{id: SHA-256}`` of the items whose content digest was recorded (stores of files)."""
        with self._lock:
            self._check_open()
            if not _has_table(self._conn, "contents"):
                return {}
        return dict(self._read("SELECT item_id, sha256 FROM contents ORDER BY item_id"))

    def unreadable(self) -> dict[int, str]:
        """``{id: reason}`` of the images whose file went missing or cannot be read (they are never queried)."""
        with self._lock:
            self._check_open()
            if not _has_table(self._conn, "unreadable"):
                return {}
        return dict(self._read("SELECT item_id, reason FROM unreadable ORDER BY item_id"))

    def mark_unreadable(self, reasons: dict[int, str], *, clear: Iterable[int] = ()) -> None:
        """Record why images cannot be read (``{id: reason}``), and clear those in ``clear`` (found again), in one
        transaction. Their labels are kept; the queues skip them until they are cleared."""
        now = time.time()
        rows = [(int(i), str(r), now) for i, r in reasons.items()]
        back = [(int(i),) for i in clear]

        def write(c: sqlite3.Connection) -> None:
            c.execute("CREATE TABLE IF NOT EXISTS unreadable (item_id INTEGER PRIMARY KEY REFERENCES items(id), "
                      "reason TEXT NOT NULL, at REAL NOT NULL)")
            c.executemany("INSERT OR REPLACE INTO unreadable VALUES (?, ?, ?)", rows)
            c.executemany("DELETE FROM unreadable WHERE item_id = ?", back)

        if rows or back:
            self._write(write)

    def relink(self, moves: dict[int, str]) -> None:
        """Point images at their new paths (``{id: new ref}``: a file renamed or moved inside the folder, found
        again by its content hash), and clear their "missing" mark, in one transaction. Labels, split and
        predictions stay with the image."""
        rows = [(str(r), int(i)) for i, r in moves.items()]

        def write(c: sqlite3.Connection) -> None:
            c.executemany("UPDATE items SET ref = ? WHERE id = ?", rows)
            if _has_table(c, "unreadable"):
                c.executemany("DELETE FROM unreadable WHERE item_id = ?", [(i,) for _, i in rows])

        if rows:
            self._write(write)

    def labels(self, split: str | None = "pool") -> dict[int, int]:
        """``{id: label}`` of every labelled item in ``split``."""
        sql = "SELECT id, label FROM items WHERE label IS NOT NULL" + (" AND split = ?" if split else "")
        return dict(self._read(sql, (split,) if split else ()))

    def confidences(self, ids: Iterable[int]) -> dict[int, list[float] | None]:
        """The model's stored per-class probabilities of each id (``None`` where none were written)."""
        ids = [int(i) for i in ids]
        rows = self._read(f"SELECT id, confidences FROM items WHERE id IN ({','.join('?' * len(ids))})", ids)
        return {i: (json.loads(c) if c else None) for i, c in rows}

    def table(self):
        """All items as a pandas DataFrame (confidences parsed)."""
        import pandas as pd  # noqa: PLC0415

        with self._lock:
            df = pd.read_sql_query("SELECT * FROM items ORDER BY id", self._conn)
        df["confidences"] = df["confidences"].map(lambda s: json.loads(s) if isinstance(s, str) else None)
        return df

    # ---------------------------------------------------------------- writing
    def write_predictions(self, ids: Sequence[int], probs: Any, *, model_round: int | None = None) -> int:
        """Store the model's per-class probabilities for ``ids`` (one transaction); returns the count.
        ``model_round``: the project round whose model made them, kept with them (:meth:`prediction_rounds`).

        A multi-label store also takes one sigmoid probability per yes/no label (``N x K``): they become the
        probabilities of the 2**K combinations (:func:`combination_probs`), which the strategies rank."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if self.label_names is not None and np.ndim(probs) == 2 and np.shape(probs)[1] == len(self.label_names) \
                and len(self.label_names) != self.n_classes:
            probs = combination_probs(probs)
        p = st.check_probs(probs)
        if len(ids) != len(p):
            raise CourseError(f"write_predictions got {len(ids)} ids but {len(p)} probability rows.")
        if p.shape[1] != self.n_classes:
            raise CourseError(f"probabilities have {p.shape[1]} classes, the store has {self.n_classes} "
                              f"({', '.join(self.class_names)}).")
        self._require_ids(ids)
        now = time.time()
        stored = np.round(np.asarray(p, dtype=np.float64), 6)             # what the file keeps, and ranks
        rows = [(json.dumps(row.tolist()), now, i) for i, row in zip(ids, stored)]
        scores = _strategy_scores(stored)

        def write(c: sqlite3.Connection) -> None:
            c.executemany("UPDATE items SET confidences = ?, predicted_at = ? WHERE id = ?", rows)
            _ensure_scores_table(c)                       # each strategy's score, indexed: refills stay fast
            c.executemany(f"INSERT OR REPLACE INTO scores (item_id, {', '.join(SCORED)}) VALUES "
                          f"(?{', ?' * len(SCORED)})", [(i, *(float(scores[s][k]) for s in SCORED))
                                                        for k, i in enumerate(ids)])
            if model_round is not None or _has_table(c, "prediction_rounds"):   # never a stale round beside them
                c.execute("CREATE TABLE IF NOT EXISTS prediction_rounds (item_id INTEGER PRIMARY KEY, "
                          "round INTEGER)")
                c.executemany("INSERT OR REPLACE INTO prediction_rounds VALUES (?, ?)",
                              [(i, model_round) for i in ids])

        self._write(write)
        return len(rows)

    def prediction_rounds(self, ids: Iterable[int]) -> dict[int, int | None]:
        """The round whose model wrote each id's stored confidences (``None``: not known, or none written)."""
        ids = [int(i) for i in ids]
        with self._lock:
            self._check_open()
            if not _has_table(self._conn, "prediction_rounds"):
                return dict.fromkeys(ids)
        found = dict(self._read(f"SELECT item_id, round FROM prediction_rounds WHERE item_id IN "
                                f"({','.join('?' * len(ids))})", ids))
        return {i: found.get(i) for i in ids}

    def add(self, refs: Sequence[Any], *, holdout: Sequence[bool], sha256: Sequence[str] | None = None) -> list[int]:
        """Insert new images (one transaction) and return their ids; each gets its split now and keeps it.

        A ref (or content digest) already in the store is refused: adding never duplicates an image.
        """
        refs = [str(r) for r in refs]
        holdout = _aligned(holdout, refs, "holdout", bool)
        digests = None if sha256 is None else _aligned(sha256, refs, "sha256", str)
        if len(set(refs)) != len(refs) or (digests is not None and len(set(digests)) != len(digests)):
            raise CourseError("the images to add must be unique (two share a path or a content digest).")

        def write(c: sqlite3.Connection) -> list[int]:
            c.execute("CREATE TABLE IF NOT EXISTS contents (item_id INTEGER PRIMARY KEY REFERENCES items(id), "
                      "sha256 TEXT NOT NULL UNIQUE)")
            known = {r for (r,) in c.execute("SELECT ref FROM items")}
            again = [r for r in refs if r in known]
            if digests is not None:
                held = {d for (d,) in c.execute("SELECT sha256 FROM contents")}
                again += [r for r, d in zip(refs, digests) if d in held and r not in known]
            if again:
                raise CourseError(f"{len(again)} of the images to add are already in the store (e.g. {again[0]}); "
                                  "nothing was added.")
            start = c.execute("SELECT COALESCE(MAX(id), -1) + 1 FROM items").fetchone()[0]
            ids = list(range(start, start + len(refs)))
            c.executemany("INSERT INTO items (id, ref, split) VALUES (?, ?, ?)",
                          [(i, r, "holdout" if h else "pool") for i, r, h in zip(ids, refs, holdout)])
            if digests is not None:
                c.executemany("INSERT INTO contents VALUES (?, ?)", list(zip(ids, digests)))
            return ids

        return self._write(write) if refs else []

    def _require_ids(self, ids: Sequence[int]) -> None:
        known = {r for (r,) in self._read(
            f"SELECT id FROM items WHERE id IN ({','.join('?' * len(ids))})", list(ids))} if ids else set()
        missing = [i for i in ids if i not in known]
        if missing:
            raise CourseError(f"unknown item id(s) {missing[:5]}; valid ids are 0..{len(self) - 1}.")

    def label(self, item_id: int, label: int, *, holdout: bool = False) -> None:
        """Record ``label`` for ``item_id`` at once (its own transaction). Hold-out items are refused, unless
        ``holdout=True``: a blind hold-out session, which labels hold-out items only (undo works the same)."""
        item_id, label = _class_index(item_id, "item id"), _class_index(label, "label")
        if not 0 <= label < self.n_classes:
            raise CourseError(f"label {label} is not a class index; use 0..{self.n_classes - 1} "
                              f"({', '.join(self.class_names)}).")

        def write(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT split, label, labeled_at FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise CourseError(f"no item with id {item_id} in this store.")
            if row[0] == "holdout" and not holdout:
                raise CourseError(f"item {item_id} is in the hold-out set, which is never labelled through the "
                                  "labelling queue; label it in a blind hold-out session (Labeller(store, "
                                  "blind=True)) or with set_holdout_labels(...).")
            if row[0] == "pool" and holdout:
                raise CourseError(f"item {item_id} is in the pool, not the hold-out: a blind hold-out session labels "
                                  "hold-out images only.")
            now = time.time()
            c.execute("INSERT INTO events (item_id, old_label, new_label, old_labeled_at, at, labeller) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (item_id, row[1], label, row[2], now, self.labeller))
            c.execute("UPDATE items SET label = ?, labeled_at = ? WHERE id = ?", (label, now, item_id))
            if _has_table(c, "claims"):                     # done with this image; the rest of the batch stays ours
                c.execute("DELETE FROM claims WHERE item_id = ? AND session = ?", (item_id, self.session))
                c.execute("UPDATE claims SET until = ? WHERE session = ?", (now + CLAIM_SECONDS, self.session))

        self._write(write)

    def undo(self) -> int | None:
        """Undo this labeller's most recent label not yet undone; returns its item id (``None``: nothing to undo).

        Another labeller's later label on the same image is not overwritten: then the undo is refused.
        """
        def write(c: sqlite3.Connection) -> int | None:
            row = c.execute("SELECT seq, item_id, old_label, old_labeled_at, new_label FROM events WHERE undone = 0 "
                            "AND labeller = ? ORDER BY seq DESC LIMIT 1", (self.labeller,)).fetchone()
            if row is None:
                return None
            seq, item_id, old, old_at, new = row
            later = c.execute("SELECT COUNT(*) FROM events WHERE item_id = ? AND seq > ? AND undone = 0",
                              (item_id, seq)).fetchone()[0]
            if later:
                raise CourseError(f"image {item_id} was labelled again by someone else after your label, so your "
                                  "undo would overwrite their work; nothing was changed.")
            c.execute("UPDATE items SET label = ?, labeled_at = ? WHERE id = ?", (old, old_at, item_id))
            c.execute("UPDATE events SET undone = 1 WHERE seq = ?", (seq,))
            return int(item_id)

        return self._write(write)

    def set_holdout_labels(self, labels: dict[int, int] | Sequence[int]) -> None:
        """Reference labels for the hold-out (e.g. from an expert panel), in one transaction.

        ``labels`` is ``{id: label}`` or a sequence aligned with ``ids("holdout")``.
        """
        hold = self.ids("holdout")
        pairs = labels.items() if isinstance(labels, dict) else zip(hold, labels)
        pairs = [(int(i), int(y)) for i, y in pairs]
        if not isinstance(labels, dict) and len(pairs) != len(hold):
            raise CourseError(f"got {len(pairs)} labels for {len(hold)} hold-out items.")
        bad = [i for i, _ in pairs if i not in set(hold.tolist())]
        if bad:
            raise CourseError(f"ids {bad[:5]} are not in the hold-out set.")
        if any(not 0 <= y < self.n_classes for _, y in pairs):
            raise CourseError(f"hold-out labels must be class indices 0..{self.n_classes - 1}.")
        now = time.time()
        self._write(lambda c: c.executemany("UPDATE items SET label = ?, labeled_at = ? WHERE id = ?",
                                            [(y, now, i) for i, y in pairs]))

    # ---------------------------------------------------------------- querying
    def next_batch(self, strategy_name: str = "entropy", batch_size: int = 8, *, random_state: Any = None,
                   return_scores: bool = False, claim: bool = True, split: str = "pool",
                   embeddings: tuple[Any, Any] | None = None) -> list[int] | list[tuple[int, float]]:
        """Ids of the next unlabelled pool images to label, chosen by a named strategy.

        With ``return_scores=True``, ``(id, score)`` pairs: the strategy's score when it picked the id.
        With ``claim=True`` the ids are this session's for ``CLAIM_SECONDS`` (each label renews them): another
        session on the same file (a second notebook or kernel) is given other images, so no two people label
        the same image without knowing. A read-only store hands out ids without claiming them.
        ``split="holdout"`` gives unlabelled hold-out images, in random order only (a blind session: no model
        has any say in which hold-out images are labelled).

        Probability-based strategies (random, least_confidence, margin, entropy, confident) read the stored
        confidences; Coreset and BADGE also need ``embeddings``, ``(ids, vectors)`` from the last prediction
        pass (``course_utils.project.load_embeddings``). The hold-out is never a candidate. Images without predictions are skipped by
        those strategies (call :meth:`write_predictions` after each training round).
        """
        strategy = st.get_strategy(strategy_name, random_state=random_state)
        if split not in ("pool", "holdout"):
            raise CourseError(f"split must be 'pool' or 'holdout', not {split!r}.")
        if split == "holdout" and strategy.name != "random":
            raise CourseError(f"the hold-out is labelled blind, in random order; {strategy.name!r} would let a model "
                              "choose which hold-out images get labels. Use strategy 'random'.")
        diverse = embeddings is not None and set(strategy.requires) <= {"probs", "embeddings"}
        if strategy.name not in st.PROBABILITY_STRATEGIES and not diverse:
            raise CourseError(f"the label store keeps class probabilities only, so it can run "
                              f"{', '.join(st.PROBABILITY_STRATEGIES)}; {strategy.name!r} needs "
                              f"{', '.join(strategy.requires)}. Query with course_utils.strategies directly and "
                              "label the returned ids.")

        def hold(c: sqlite3.Connection, out: list[tuple[int, float]]) -> None:
            c.executemany("INSERT INTO claims VALUES (?, ?, ?, ?)",
                          [(i, self.session, self.labeller, time.time() + CLAIM_SECONDS) for i, _ in out])

        def pick(c: sqlite3.Connection, claiming: bool) -> list[tuple[int, float]]:
            taken: dict[int, str] = {}
            if claiming:
                now = time.time()
                c.execute("CREATE TABLE IF NOT EXISTS claims (item_id INTEGER PRIMARY KEY, session TEXT NOT NULL, "
                          "labeller TEXT, until REAL NOT NULL)")
                c.execute("DELETE FROM claims WHERE until < ? OR session = ?", (now, self.session))
                taken = dict(c.execute("SELECT item_id, labeller FROM claims").fetchall())
            gone = {i for (i,) in c.execute("SELECT item_id FROM unreadable")} if _has_table(c, "unreadable") else set()
            fast = _top_scored(c, strategy, split, batch_size, claiming, gone) if strategy.name in SCORED else None
            if fast:                                       # the indexed scores: no pass over the whole pool
                if claiming:
                    hold(c, fast)
                return fast
            rows = c.execute("SELECT id, confidences FROM items WHERE split = ? AND label IS NULL "
                             "ORDER BY id", (split,)).fetchall()
            if not rows:
                raise CourseError(f"every {split} image is labelled: nothing left to query.")
            rows = [r for r in rows if r[0] not in gone]                # a missing or broken file is never shown
            if not rows:
                raise CourseError(f"every readable {split} image is labelled: nothing left to query"
                                  + (f" ({len(gone)} image(s) cannot be read: see store.unreadable())." if gone
                                     else "."))
            free = [r for r in rows if r[0] not in taken]
            if not free:
                who = ", ".join(sorted({str(w) for w in taken.values()}))
                raise CourseError(f"the {len(rows)} unlabelled pool image(s) left are all on another labelling "
                                  f"session's screen (labeller {who}: another notebook or kernel on this file). "
                                  f"They come back when that session labels them, closes, or after "
                                  f"{CLAIM_SECONDS // 60} minutes.")
            if diverse:
                out = _diverse_pick(c, strategy, split, free, embeddings, batch_size, self.n_classes)
                if claiming:
                    hold(c, out)
                return out
            if strategy.requires:
                free = [r for r in free if r[1] is not None]
                if not free:
                    raise CourseError(f"no stored predictions for the unlabelled pool, which {strategy.name!r} "
                                      "needs: call store.write_predictions(ids, probs) first (or use 'random').")
            ids = np.array([r[0] for r in free], dtype=np.int64)
            arrays = {"probs": np.array([json.loads(r[1]) for r in free])} if strategy.requires else {}
            chosen, util = strategy.query(**arrays, n_samples=len(ids), batch_size=min(batch_size, len(ids)),
                                          return_utilities=True)
            out = [(int(ids[j]), float(util[k, j])) for k, j in enumerate(chosen)]
            if claiming:
                hold(c, out)
            return out

        out = None
        if claim and not self._read_only_v1:
            with contextlib.suppress(ReadOnlyStore):
                out = self._write(lambda c: pick(c, True))
        if out is None:                            # read-only: nothing can be labelled here anyway
            with self._lock:
                self._check_open()
                out = pick(self._conn, False)
        return out if return_scores else [i for i, _ in out]

    # ---------------------------------------------------------------- the hold-out
    def holdout_evaluations(self) -> int:
        """How many times the hold-out has been evaluated (every look spends some of its honesty)."""
        return int(self._meta()["holdout_evaluations"])

    def record_holdout_evaluation(self, what: str | None = None) -> int:
        """Count one more look at the hold-out (``what``: e.g. the model round used, kept as the last one);
        returns the new count."""
        def bump(c: sqlite3.Connection) -> int:
            n = int(c.execute("SELECT value FROM meta WHERE key = 'holdout_evaluations'").fetchone()[0]) + 1
            c.execute("UPDATE meta SET value = ? WHERE key = 'holdout_evaluations'", (str(n),))
            if what is not None:
                c.execute("INSERT OR REPLACE INTO meta VALUES ('last_holdout_evaluation', ?)", (str(what),))
            return n

        return self._write(bump)

    def evaluate_holdout(self, probs: Any, labels: Sequence[int] | None = None) -> dict[str, float]:
        """Accuracy / AUC of ``probs`` (rows aligned with ``ids("holdout")``) on the hold-out.

        Labels come from ``labels`` or the stored hold-out labels. The number of evaluations is
        recorded in the file: every look at the hold-out spends some of its honesty, so a second
        evaluation warns.
        """
        hold = self.ids("holdout")
        p = st.check_probs(probs)
        if len(p) != len(hold):
            raise CourseError(f"probs has {len(p)} rows but the hold-out has {len(hold)} images "
                              "(use store.ids('holdout') to get them, in order).")
        if labels is None:
            stored = self.labels("holdout")
            if len(stored) != len(hold):
                raise CourseError(f"{len(hold) - len(stored)} hold-out images have no reference label; pass "
                                  "labels=... or call set_holdout_labels first.")
            labels = [stored[int(i)] for i in hold]
        y = np.asarray(labels, dtype=np.int64)
        if len(y) != len(hold):
            raise CourseError(f"labels has {len(y)} entries, the hold-out has {len(hold)}.")

        n = self.record_holdout_evaluation()
        if n > 1:
            warnings.warn(f"the hold-out of {self.path.name} has now been evaluated {n} times. Choosing models by "
                          "hold-out scores makes them optimistic: tune on a validation split and look at the "
                          "hold-out once, at the end.", stacklevel=2)
        task = "binary" if p.shape[1] == 2 else "multi-class"
        acc, auc = metrics.accuracy(y, p, task), metrics.roc_auc(y, p, task)
        return {"accuracy": acc, "auc": auc, "n": int(len(y)), "evaluations": n}


def _class_index(value: Any, what: str) -> int:
    """An integer (Python or numpy; a float only when whole); 1.7 or "2" is refused, never truncated."""
    if isinstance(value, (bool, np.bool_)):
        raise CourseError(f"{what} must be an integer, not {value!r}.")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise CourseError(f"{what} must be an integer class index, not {value!r} ({type(value).__name__}).")


def _login_name() -> str:
    """Who labels, by default: the login name (the same after a kernel restart, so undo still finds one's labels)."""
    try:
        return getpass.getuser() or "labeller"
    except (OSError, KeyError):                 # no login name in some containers
        return "labeller"


class ReadOnlyStore(CourseError):
    """The label store cannot be written (a read-only file or folder): reading still works."""


def _is_read_only(exc: sqlite3.DatabaseError) -> bool:
    """SQLite said SQLITE_READONLY (8, in any of its extended forms)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code & 0xFF) == 8 if isinstance(code, int) else "readonly" in str(exc).lower()


def _fix_for(why: str) -> str:
    """What to do about a SQLite error, in the user's terms."""
    why = why.lower()
    if "full" in why:
        return "The disk is full: free some space and repeat"
    if "readonly" in why or "read-only" in why:
        return "The file (or its folder) is read-only: make it writable (chmod u+w) and repeat"
    if "locked" in why or "busy" in why:
        return "Another program holds a write lock for too long: close it and repeat"
    if "malformed" in why or "not a database" in why:
        return "The file is damaged: restore it from a copy (`sqlite3 FILE .recover` may rescue its labels)"
    return "Check the disk and the file, then repeat"


def _is_empty_sqlite(path: Path) -> bool:
    """Is ``path`` an empty file, or a SQLite file without a single table (what a failed create leaves)?"""
    if path.stat().st_size == 0:
        return True
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def _remove_store_files(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        p.unlink(missing_ok=True)


SCORED = ("least_confidence", "margin", "entropy", "confident")   # kept per item at write time, indexed


def _diverse_pick(c: sqlite3.Connection, strategy: Any, split: str, free: list, embeddings: tuple[Any, Any],
                  k: int, n_classes: int) -> list[tuple[int, float]]:
    """Coreset / BADGE over the stored embeddings: the labelled images (those with a vector) are the centres,
    the free unlabelled ones (with a vector, and with predictions where the strategy needs them) the candidates."""
    ids, vectors = np.asarray(embeddings[0], dtype=np.int64), np.asarray(embeddings[1])
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise CourseError(f"embeddings must be (ids, vectors) with one vector per id; got {len(ids)} ids and an "
                          f"array of shape {vectors.shape}.")
    row = {int(i): j for j, i in enumerate(ids)}
    needs_probs = "probs" in strategy.requires
    cands = [r for r in free if r[0] in row and (r[1] is not None or not needs_probs)]
    if not cands:
        raise CourseError(f"none of the unlabelled {split} images has an embedding{' and predictions' * needs_probs}: "
                          "predict with the latest round first, then load its embeddings.")
    done = [(i, conf) for i, conf in c.execute("SELECT id, confidences FROM items WHERE split = 'pool' AND "
                                               "label IS NOT NULL") if i in row]
    rows = done + [(r[0], r[1]) for r in cands]
    arrays = {"embeddings": vectors[[row[i] for i, _ in rows]]}
    if needs_probs:                         # a labelled image predicted before any round: uniform, never picked
        arrays["probs"] = np.array([json.loads(cf) if cf else [1.0 / n_classes] * n_classes for _, cf in rows])
    labelled = np.arange(len(rows)) < len(done)
    chosen, util = strategy.query(**arrays, labelled=labelled, batch_size=min(k, len(cands)), return_utilities=True)
    return [(int(rows[j][0]), float(util[n, j])) for n, j in enumerate(chosen)]


def _strategy_scores(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Each probability strategy's score of every row, as the strategy itself computes it."""
    return {name: np.asarray(st.get_strategy(name).score({"probs": probs}, len(probs)), dtype=np.float64)
            for name in SCORED}


def _ensure_scores_table(c: sqlite3.Connection) -> None:
    """Make the scores table, filled for every prediction already stored (by an older version): from then on
    every predicted image has its scores."""
    if _has_table(c, "scores"):
        return
    c.execute(f"CREATE TABLE scores (item_id INTEGER PRIMARY KEY, {', '.join(f'{s} REAL' for s in SCORED)})")
    for s in SCORED:
        c.execute(f"CREATE INDEX scores_{s} ON scores ({s} DESC)")
    old = c.execute("SELECT id, confidences FROM items WHERE confidences IS NOT NULL").fetchall()
    if old:
        scores = _strategy_scores(np.array([json.loads(r[1]) for r in old]))
        c.executemany(f"INSERT INTO scores (item_id, {', '.join(SCORED)}) VALUES (?{', ?' * len(SCORED)})",
                      [(r[0], *(float(scores[s][k]) for s in SCORED)) for k, r in enumerate(old)])


def _top_scored(c: sqlite3.Connection, strategy: Any, split: str, k: int, claims: bool,
                gone: set[int]) -> list[tuple[int, float]] | None:
    """The top ``k`` unlabelled, unclaimed, readable ``split`` images by the strategy's stored score (ties at
    random, as the strategy breaks them), read through the score's index; ``None`` when there are none (the
    caller then scores the pool in full, and says why nothing is left)."""
    if not _has_table(c, "scores"):             # no prediction written by this version yet
        return None
    col = strategy.name
    # CROSS JOIN + INDEXED BY: walk the score's index from the top (SQLite would otherwise sort the whole pool)
    where = (f"FROM scores s INDEXED BY scores_{col} CROSS JOIN items i ON i.id = s.item_id "
             "WHERE i.split = ? AND i.label IS NULL"
             + (" AND s.item_id NOT IN (SELECT item_id FROM claims)" if claims else ""))
    picked: list[tuple[int, float]] = []
    offset = 0
    while len(picked) < k:                               # a few unreadable ones may have to be stepped over
        rows = c.execute(f"SELECT s.item_id, s.{col} {where} ORDER BY s.{col} DESC LIMIT ? OFFSET ?",
                         (split, k + len(gone), offset)).fetchall()
        picked += [r for r in rows if r[0] not in gone]
        if len(rows) < k + len(gone):
            break
        offset += len(rows)
    if not picked:
        return None
    last = picked[min(k, len(picked)) - 1][1]
    ties = c.execute(f"SELECT s.item_id, s.{col} {where} AND s.{col} = ?", (split, last)).fetchall()
    sure = [r for r in picked if r[1] > last]
    tied = sorted({r for r in picked + ties if r[1] == last and r[0] not in gone})
    order = np.argsort(strategy.tie_break(len(tied)), kind="stable")      # ties at random
    return [(int(i), float(s)) for i, s in sure + [tied[j] for j in order][:k - len(sure)]]


def _has_table(c: sqlite3.Connection, name: str) -> bool:
    """Does the store have this table? (claims, contents, unreadable: added by later versions, made when needed)"""
    return c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def label_bits(classes: Any, n_labels: int) -> np.ndarray:
    """The yes/no labels (``N x K``, 0/1) that multi-label class indices stand for: label i is bit i of the index
    (``combination_names`` lists them; key 1 is index 0, "none")."""
    return (np.asarray(classes, dtype=np.int64).reshape(-1, 1) >> np.arange(int(n_labels))) & 1


def combination_probs(label_probs: Any) -> np.ndarray:
    """Per-label sigmoid probabilities ``N x K`` -> the probabilities of the ``2**K`` yes/no combinations (label i
    is bit i of the combination's index), taking the labels as independent given the image: rows sum to 1."""
    p = np.asarray(label_probs, dtype=np.float64)
    if p.ndim != 2 or not np.isfinite(p).all() or p.min(initial=0) < 0 or p.max(initial=0) > 1:
        raise CourseError(f"per-label probabilities must be an N x K array of numbers in [0, 1] (sigmoid outputs); "
                          f"got shape {p.shape}" + ("" if p.ndim != 2 or np.isfinite(p).all() else " with NaN"))
    bits = label_bits(np.arange(2 ** p.shape[1]), p.shape[1])                  # [2**K, K]
    return np.prod(np.where(bits[None], p[:, None, :], 1.0 - p[:, None, :]), axis=2)


def label_probs(combo_probs: Any, n_labels: int) -> np.ndarray:
    """The other way: each label's probability (the sum over the combinations where it is yes), ``N x K``."""
    c = np.asarray(combo_probs, dtype=np.float64)
    return c @ label_bits(np.arange(c.shape[1]), n_labels)


def _aligned(values: Any, refs: Sequence[str], what: str, kind: type) -> list:
    """``values`` as a list of ``kind``, one per ref, or a CourseError that says how many there are."""
    values = [kind(v) for v in np.asarray(values).reshape(-1).tolist()] if not isinstance(values, list) else \
        [kind(v) for v in values]
    if len(values) != len(refs):
        raise CourseError(f"{what} has {len(values)} entries for {len(refs)} images: give one per image.")
    return values
