"""The SQLite label store: real labelling work, kept safe from crashes, threads and a second notebook.

One file holds one image collection: the items (pool or hold-out), their labels, the model's last
confidences, and every label event (so undo is exact). Writes are one ``BEGIN IMMEDIATE`` transaction
each, in WAL mode: a crash loses at most the write in progress, two processes can label at once.

**Any thread may call any method.** JupyterLab 4.6 with ipykernel 7 runs widget callbacks in a
*subshell thread*; a plain ``sqlite3`` connection refuses every thread but its creator's. The store
opens its connection with ``check_same_thread=False`` and serialises every use of it with a lock.
Each label event records its ``labeller`` (a session id), so undo takes back the caller's own label.
"""
from __future__ import annotations

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

__all__ = ["LabelStore", "SCHEMA_VERSION"]

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
"""


class LabelStore:
    """Labels for one image collection in one SQLite file: safe to stop, resume and share.

    * ``LabelStore.create(path, refs, class_names)`` makes a new store (it refuses to replace an
      existing file unless ``reuse=True``, which opens it instead); ``LabelStore(path)`` resumes one.
    * A seeded ``holdout_fraction`` (10 %) of the images is set aside at insertion and never queried.
    * WAL journal and one transaction per write: a crash loses at most the write in progress, and
      two processes can label at once.
    * Safe from any thread (one lock around every use of the connection).
    * ``labeller`` names whoever labels through this object (default: a new id per object); undo takes
      back only that labeller's events, so two notebooks sharing a file never undo each other.
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 30.0, labeller: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise CourseError(f"no label store at {self.path}. Create one with LabelStore.create(path, refs, "
                              "class_names).")
        self.labeller = str(labeller) if labeller else uuid.uuid4().hex[:12]
        self._lock = threading.RLock()
        self._conn = self._connect(self.path, timeout)
        self._inode = self._file_id()
        self._check_schema()
        meta = self._meta()
        self.class_names: list[str] = json.loads(meta["class_names"])
        self.n_classes = len(self.class_names)

    # ---------------------------------------------------------------- creating
    @classmethod
    def create(cls, path: str | os.PathLike, refs: int | Sequence[Any], class_names: Sequence[str], *,
               holdout_fraction: float = 0.1, seed: int = 0, reuse: bool = False,
               data_id: str | None = None) -> "LabelStore":
        """A new store with one row per image (``refs``: paths, or ``n`` for array indices 0..n-1).

        An existing file is never replaced: ``reuse=True`` opens it (and checks it holds the same
        images and classes), otherwise this raises. ``data_id`` (e.g. a hash of the images) ties the
        store to its data: array indices alone cannot tell a new version of the images from the old,
        and labels given to other pixels must never be mixed in.
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
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = cls._connect(path, 30.0)
        cls._use_wal(conn)
        n_hold = int(round(holdout_fraction * len(refs)))
        holdout = np.zeros(len(refs), dtype=bool)
        holdout[np.random.default_rng(seed).choice(len(refs), size=n_hold, replace=False)] = True
        try:
            conn.execute("BEGIN IMMEDIATE")
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(stmt)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("class_names", json.dumps(class_names)),
                ("holdout_fraction", str(holdout_fraction)), ("seed", str(seed)),
                ("created_at", str(time.time())), ("holdout_evaluations", "0"),
                *([("data_id", str(data_id))] if data_id is not None else [])])
            conn.executemany("INSERT INTO items (id, ref, split) VALUES (?, ?, ?)",
                             [(i, r, "holdout" if h else "pool") for i, (r, h) in enumerate(zip(refs, holdout))])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            path.unlink(missing_ok=True)
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

    def _check_schema(self) -> None:
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise CourseError(f"{self.path} is a SQLite file but not a course label store ({exc}). Use a new "
                              "file name for a new store.") from exc
        if row is not None and row[0] == "1":          # version 1 had no labeller column: add it, in place
            self._write(lambda c: (c.execute("ALTER TABLE events ADD COLUMN labeller TEXT"),
                                   c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                                             (str(SCHEMA_VERSION),))))
            row = (str(SCHEMA_VERSION),)
        if row is None or row[0] != str(SCHEMA_VERSION):
            self._conn.close()
            raise CourseError(f"{self.path} has label-store schema version {row[0] if row else 'unknown'}, but this "
                              f"course_utils reads version {SCHEMA_VERSION}. Open it with the course_utils version "
                              "that wrote it, or start a new store under another name.")
        self._use_wal(self._conn)

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

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """One query, all rows, under the lock (any thread)."""
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` inside one IMMEDIATE transaction (taken up front, so writers queue, never deadlock).

        Under the store's lock, so any thread may write; a failure rolls back and says why.
        """
        with self._lock:
            self._check_file()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._write_error(exc) from exc
            try:
                result = fn(self._conn)
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._conn.execute("ROLLBACK")
                raise self._write_error(exc) from exc
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return result

    def _write_error(self, exc: sqlite3.OperationalError) -> CourseError:
        why = str(exc)
        if "readonly" in why or "read-only" in why:
            fix = "the file (or its folder) became read-only: make it writable again (chmod u+w) and repeat"
        elif "locked" in why or "busy" in why:
            fix = "another program holds a write lock for too long: close it and repeat"
        else:
            fix = "check the disk and the file, then repeat"
        return CourseError(f"could not save to the label store {self.path} ({why}); nothing was written. {fix}.")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
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
    def write_predictions(self, ids: Sequence[int], probs: Any) -> int:
        """Store the model's per-class probabilities for ``ids`` (one transaction); returns the count."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        p = st.check_probs(probs)
        if len(ids) != len(p):
            raise CourseError(f"write_predictions got {len(ids)} ids but {len(p)} probability rows.")
        if p.shape[1] != self.n_classes:
            raise CourseError(f"probabilities have {p.shape[1]} classes, the store has {self.n_classes} "
                              f"({', '.join(self.class_names)}).")
        self._require_ids(ids)
        now = time.time()
        rows = [(json.dumps([round(float(v), 6) for v in row]), now, i) for i, row in zip(ids, p)]
        self._write(lambda c: c.executemany("UPDATE items SET confidences = ?, predicted_at = ? WHERE id = ?", rows))
        return len(rows)

    def _require_ids(self, ids: Sequence[int]) -> None:
        known = {r for (r,) in self._read(
            f"SELECT id FROM items WHERE id IN ({','.join('?' * len(ids))})", list(ids))} if ids else set()
        missing = [i for i in ids if i not in known]
        if missing:
            raise CourseError(f"unknown item id(s) {missing[:5]}; valid ids are 0..{len(self) - 1}.")

    def label(self, item_id: int, label: int) -> None:
        """Record ``label`` for ``item_id`` at once (its own transaction). Hold-out items are refused."""
        item_id, label = _class_index(item_id, "item id"), _class_index(label, "label")
        if not 0 <= label < self.n_classes:
            raise CourseError(f"label {label} is not a class index; use 0..{self.n_classes - 1} "
                              f"({', '.join(self.class_names)}).")

        def write(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT split, label, labeled_at FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise CourseError(f"no item with id {item_id} in this store.")
            if row[0] == "holdout":
                raise CourseError(f"item {item_id} is in the hold-out set, which is never labelled through the "
                                  "labelling queue; use set_holdout_labels(...) for its reference labels.")
            now = time.time()
            c.execute("INSERT INTO events (item_id, old_label, new_label, old_labeled_at, at, labeller) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (item_id, row[1], label, row[2], now, self.labeller))
            c.execute("UPDATE items SET label = ?, labeled_at = ? WHERE id = ?", (label, now, item_id))

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
                   return_scores: bool = False) -> list[int] | list[tuple[int, float]]:
        """Ids of the next unlabelled pool images to label, chosen by a named strategy.

        With ``return_scores=True``, ``(id, score)`` pairs: the strategy's score when it picked the id.

        Probability-based strategies (random, least_confidence, margin, entropy) read the stored
        confidences; the hold-out is never a candidate. Images without predictions are skipped by
        those strategies (call :meth:`write_predictions` after each training round).
        """
        strategy = st.get_strategy(strategy_name, random_state=random_state)
        if strategy.name not in st.PROBABILITY_STRATEGIES:
            raise CourseError(f"the label store keeps class probabilities only, so it can run "
                              f"{', '.join(st.PROBABILITY_STRATEGIES)}; {strategy.name!r} needs "
                              f"{', '.join(strategy.requires)}. Query with course_utils.strategies directly and "
                              "label the returned ids.")
        rows = self._read("SELECT id, confidences FROM items WHERE split = 'pool' AND label IS NULL ORDER BY id")
        if strategy.requires:
            rows = [r for r in rows if r[1] is not None]
            if not rows:
                raise CourseError(f"no stored predictions for the unlabelled pool, which {strategy.name!r} needs: "
                                  "call store.write_predictions(ids, probs) first (or use 'random').")
        if not rows:
            raise CourseError("every pool image is labelled: nothing left to query.")
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        arrays = {"probs": np.array([json.loads(r[1]) for r in rows])} if strategy.requires else {}
        picked, util = strategy.query(**arrays, n_samples=len(ids), batch_size=min(batch_size, len(ids)),
                                      return_utilities=True)
        if not return_scores:
            return [int(i) for i in ids[picked]]
        return [(int(ids[j]), float(util[k, j])) for k, j in enumerate(picked)]

    # ---------------------------------------------------------------- the hold-out
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

        def bump(c: sqlite3.Connection) -> int:
            n = int(c.execute("SELECT value FROM meta WHERE key = 'holdout_evaluations'").fetchone()[0]) + 1
            c.execute("UPDATE meta SET value = ? WHERE key = 'holdout_evaluations'", (str(n),))
            return n

        n = self._write(bump)
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
