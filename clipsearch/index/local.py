"""The embedded index: SQLite for products, an in-memory matrix (and HNSW) for vectors.

Why this shape:
- SQLite is the source of truth (metadata, words *and* vectors as float32
  blobs), so a restart or a crash mid-ingest never leaves them out of step,
  and WAL mode lets other processes read while one writes.
- A product has several vectors (one per image, one for its title), kept in
  their own table. In memory every vector is one row of a contiguous float32
  matrix that knows its owner: exact search is then a single BLAS matmul
  followed by "best row per product", which beats any ANN index on small
  catalogs and is exact by construction.
- Above `ann_threshold` vectors a faiss HNSW graph over the rows takes over
  (inner product on unit vectors equals cosine). It is grown incrementally on
  upsert; a replaced or deleted product leaves tombstones that searches skip,
  and the graph is compacted when tombstones pile up. The graph is saved
  beside the database together with the generation it reflects, so a restart
  reuses it instead of rebuilding. A search asks it for k x (most vectors any
  product has) rows, which always holds k distinct products.
- Crashes and concurrent writers (issue #18). The in-memory state always
  reflects exactly the generation it is labelled with: every write re-checks
  the stored generation *inside* its `BEGIN IMMEDIATE` transaction and
  reloads first if another process committed meanwhile, and reloads read one
  snapshot. A saved graph is used only when its generation and row layout
  match the database, else rebuilt; its files are replaced atomically with
  the metadata written last. The model is recorded by `set_model` before the
  first vector is written and re-checked in every write transaction, so a
  crash never leaves vectors without their model and two writers with
  different models cannot both write.
- Filters are evaluated on in-memory attribute columns (one cell per product)
  into a mask, spread to the rows. A selective filter (few matches) is
  answered by exact search over the matching rows, a broad one by HNSW
  restricted to the mask; either way k hits come back whenever k products
  match.
- Words live in an FTS5 table (porter stemming, unicode61) whose rowid is the
  product's, written in the same transaction as the product; `lexical` ranks
  it with FTS5's built-in BM25.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch import config
from clipsearch.catalog import Product
from clipsearch.errors import ConfigurationError
from clipsearch.filters import Condition, FieldType, Filters, field_type_of
from clipsearch.index import (
    Hit,
    IndexRecord,
    RecordFailure,
    UpsertResult,
    image_vector_key,
    main_vector,
)
from clipsearch.index.rwlock import RWLock
from clipsearch.index.text import attribute_text, query_terms

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    image TEXT,
    attributes TEXT NOT NULL,
    images TEXT,
    description TEXT
);
CREATE TABLE IF NOT EXISTS vectors (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    product_rowid INTEGER NOT NULL,
    key TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS vectors_by_product ON vectors (product_rowid);
CREATE VIRTUAL TABLE IF NOT EXISTS lexical USING fts5(
    id, title, description, attributes, tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS fields (name TEXT PRIMARY KEY, type TEXT NOT NULL);
"""
# BM25 weight of each lexical column (id, title, description, attributes): the
# title says what the product is, a description also says what it goes with.
_BM25_WEIGHTS = (1.0, 2.0, 1.0, 1.0)
_DB_NAME = "products.sqlite3"
# How long a connection waits for another process's lock (SQLite's busy timeout), and
# how long switching to WAL retries (`_set_wal`).
_BUSY_TIMEOUT_S = 30.0
_ANN_NAME = "hnsw.faiss"
_ANN_META = "hnsw.json"
_ANN_ROWIDS = "hnsw-rowids.npy"
# Compact the HNSW graph once this share of its nodes are tombstones.
_COMPACT_DEAD_FRACTION = 0.3


class _Arrays:
    """Growable, position-addressed copies of what SQLite holds.

    Rows are vectors (matrix, liveness, SQLite vector rowid, owner, key);
    slots are products. `owner[row]` is the row's product slot, -1 for a
    tombstone restored from a saved graph.
    """

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.n = 0
        self.matrix = np.zeros((capacity, dim), dtype=np.float32)
        self.alive = np.zeros(capacity, dtype=bool)
        self.rowids = np.full(capacity, -1, dtype=np.int64)
        self.owner = np.full(capacity, -1, dtype=np.int64)
        self.keys: list[str | None] = []
        self.products: list[Product | None] = []
        self.slot_alive = np.zeros(max(16, capacity // 2), dtype=bool)
        self.slot_of: dict[str, int] = {}
        self.slot_by_prowid: dict[int, int] = {}
        self.prowids: list[int] = []
        self.rows_of: list[list[int]] = []
        self.live_rows = 0
        # The most vectors any product has had: k x this many rows always hold
        # k distinct products. An upper bound is enough, so it never shrinks.
        self.max_rows = 1

    def _grow(self, needed: int) -> None:
        cap = self.matrix.shape[0]
        if needed <= cap:
            return
        new_cap = max(needed, cap * 2)
        self.matrix = np.resize(self.matrix, (new_cap, self.dim))
        self.alive = np.concatenate([self.alive, np.zeros(new_cap - cap, dtype=bool)])
        self.rowids = np.concatenate([self.rowids, np.full(new_cap - cap, -1, dtype=np.int64)])
        self.owner = np.concatenate([self.owner, np.full(new_cap - cap, -1, dtype=np.int64)])

    def add_product(self, prowid: int, product: Product) -> int:
        slot = len(self.products)
        if slot >= len(self.slot_alive):
            self.slot_alive = np.concatenate([self.slot_alive,
                                              np.zeros(len(self.slot_alive), dtype=bool)])
        self.products.append(product)
        self.prowids.append(prowid)
        self.slot_alive[slot] = True
        self.slot_of[product.id] = slot
        self.slot_by_prowid[prowid] = slot
        self.rows_of.append([])
        return slot

    def append_row(self, slot: int, rowid: int, key: str, vector: np.ndarray) -> int:
        self._grow(self.n + 1)
        pos = self.n
        self.keys.append(None)
        self.n += 1
        self.set_row(pos, slot, rowid, key, vector)
        return pos

    def set_row(self, pos: int, slot: int, rowid: int, key: str, vector: np.ndarray) -> None:
        self.matrix[pos] = vector
        self.alive[pos] = True
        self.rowids[pos] = rowid
        self.owner[pos] = slot
        self.keys[pos] = key
        self.rows_of[slot].append(pos)
        self.live_rows += 1
        self.max_rows = max(self.max_rows, len(self.rows_of[slot]))

    def place_dead(self) -> int:
        """A tombstone row, used when restoring a saved HNSW layout."""
        self._grow(self.n + 1)
        self.keys.append(None)
        self.n += 1
        return self.n - 1

    def kill(self, product_id: str) -> bool:
        slot = self.slot_of.pop(product_id, None)
        if slot is None:
            return False
        for pos in self.rows_of[slot]:
            self.alive[pos] = False
        self.live_rows -= len(self.rows_of[slot])
        self.rows_of[slot] = []
        self.products[slot] = None
        self.slot_alive[slot] = False
        return True

    @property
    def live(self) -> int:
        """Live vectors: what exact search scans and HNSW holds."""
        return self.live_rows

    def product_mask(self) -> np.ndarray:
        """Live product slots, plus one False cell that owner -1 (a tombstone) lands on."""
        slots = len(self.products)
        mask = np.zeros(slots + 1, dtype=bool)
        mask[:slots] = self.slot_alive[:slots]
        return mask


class LocalIndex:
    """Embedded, persistent `VectorIndex` in a directory. Thread-safe."""

    def __init__(
        self,
        directory: str | Path,
        *,
        ann_threshold: int = config.DEFAULT_ANN_THRESHOLD,
        hnsw_m: int = config.HNSW_M,
        ef_construction: int = config.HNSW_EF_CONSTRUCTION,
        ef_search: int = config.HNSW_EF_SEARCH,
        filter_exact_fraction: float = config.FILTER_EXACT_FRACTION,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ann_threshold = ann_threshold
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.filter_exact_fraction = filter_exact_fraction
        self._local = threading.local()
        self._lock = RWLock()
        self._arrays: _Arrays | None = None
        self._fields: dict[str, FieldType] = {}
        self._ann: Any = None  # faiss.IndexHNSWFlat over rows 0..n-1
        self._columns: dict[str, np.ndarray] = {}
        self._generation = -1
        self._writer_model: str | None = None
        db = self._db()
        db.executescript(_SCHEMA)
        self._migrate_one_vector_schema(db)
        self._fill_lexical(db)
        self._reload()

    # ------------------------------------------------------------------ storage

    def _db(self) -> sqlite3.Connection:
        """One connection per thread: sqlite3 connections are not shareable."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.directory / _DB_NAME, timeout=_BUSY_TIMEOUT_S,
                                   isolation_level=None)
            _set_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def _migrate_one_vector_schema(self, db: sqlite3.Connection) -> None:
        """Indexes written before products had several vectors kept the one vector in
        `products.vector`. Move it to `vectors` as the main image's vector, so an
        existing index keeps working without re-encoding anything."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(products)")}
        if "vector" not in columns:
            return
        log.info("migrating %s to one row per vector", self.directory)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("ALTER TABLE products ADD COLUMN images TEXT")
            db.execute("ALTER TABLE products ADD COLUMN description TEXT")
            for rowid, image, blob in db.execute(
                    "SELECT rowid, image, vector FROM products ORDER BY rowid").fetchall():
                db.execute("INSERT INTO vectors (product_rowid, key, vector) VALUES (?, ?, ?)",
                           (rowid, image_vector_key(image), blob))
            db.execute("ALTER TABLE products DROP COLUMN vector")
            self._bump_generation(db)  # a saved HNSW layout no longer matches
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _fill_lexical(self, db: sqlite3.Connection) -> None:
        """Give products that predate the lexical table their words."""
        if db.execute("SELECT 1 FROM lexical LIMIT 1").fetchone() is not None:
            return
        rows = db.execute("SELECT rowid, id, title, image, attributes, images, description "
                          "FROM products").fetchall()
        if not rows:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for rowid, *fields in rows:
                _insert_lexical(db, rowid, _product(*fields))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _stored_generation(self) -> int:
        return int(self._meta("generation") or 0)

    @property
    def dimension(self) -> int | None:
        value = self._meta("dimension")
        return int(value) if value else None

    def set_model(self, model_id: str) -> None:
        """Record which model makes the vectors this instance writes, before it writes any.

        Refused when the index already holds vectors of another model. Every
        later upsert re-checks it inside its transaction, so a writer with a
        different model that started at the same time fails instead of mixing
        two models' vectors.
        """
        with self._lock.write():
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                self._check_model(db, model_id)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?)", (model_id,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._writer_model = model_id

    def _check_model(self, db: sqlite3.Connection, model_id: str) -> None:
        current = self._meta("model")
        if current is None or current == model_id:
            return
        if db.execute("SELECT 1 FROM products LIMIT 1").fetchone() is not None:
            raise ConfigurationError(
                f"the index holds vectors of model {current!r}, not {model_id!r}; "
                "use that model, or delete the index directory and re-ingest")

    @property
    def model(self) -> str | None:
        return self._meta("model")

    def _reload(self) -> None:
        """Rebuild in-memory state from one snapshot of SQLite (start-up, or another
        process wrote); inside a write transaction, from that transaction's view."""
        db = self._db()
        if db.in_transaction:
            self._reload_snapshot(db)
            return
        db.execute("BEGIN")
        try:
            self._reload_snapshot(db)
        finally:
            db.execute("COMMIT")

    def _reload_snapshot(self, db: sqlite3.Connection, use_saved: bool = True) -> None:
        generation = self._stored_generation()
        self._fields = dict(db.execute("SELECT name, type FROM fields").fetchall())
        dim = self.dimension
        self._ann = None
        self._columns = {}
        if dim is None:
            self._arrays = None
            self._generation = generation
            return
        total = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        arrays = _Arrays(dim, capacity=max(1024, total))
        for prowid, *fields in db.execute(
                "SELECT rowid, id, title, image, attributes, images, description "
                "FROM products ORDER BY rowid"):
            arrays.add_product(prowid, _product(*fields))
        rows = db.execute("SELECT rowid, product_rowid, key, vector FROM vectors ORDER BY rowid")
        saved_ann = self._load_saved_ann(generation) if use_saved else None
        if saved_ann is None:
            for rowid, prowid, key, blob in rows:
                slot = arrays.slot_by_prowid.get(prowid)
                if slot is not None:
                    arrays.append_row(slot, rowid, key, _vector(blob, dim))
        else:
            ann, rowid_layout = saved_ann
            by_rowid = {int(r): i for i, r in enumerate(rowid_layout) if r >= 0}
            for _ in range(len(rowid_layout)):
                arrays.place_dead()
            for rowid, prowid, key, blob in rows:
                slot = arrays.slot_by_prowid.get(prowid)
                pos = by_rowid.get(rowid)
                if pos is None:  # the saved layout does not match: never fatal, rebuild
                    log.warning("saved HNSW graph does not match the database; rebuilding")
                    self._reload_snapshot(db, use_saved=False)
                    return
                if slot is not None:
                    arrays.set_row(pos, slot, rowid, key, _vector(blob, dim))
            self._ann = ann
        self._arrays = arrays
        self._generation = generation

    def _load_saved_ann(self, generation: int) -> tuple[Any, np.ndarray] | None:
        meta_path = self.directory / _ANN_META
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("generation") != generation:
                return None
            import faiss

            ann = faiss.read_index(str(self.directory / _ANN_NAME))
            rowids = np.load(self.directory / _ANN_ROWIDS)
            if ann.ntotal != len(rowids):
                return None
            live = self._db().execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            if int((rowids >= 0).sum()) != live:
                return None
            return ann, rowids
        except Exception as exc:  # a stale or corrupt cache is rebuilt, never fatal
            log.warning("ignoring saved HNSW graph: %s", exc)
            return None

    def _refresh_if_stale(self) -> None:
        """Pick up writes committed by another process (or another LocalIndex)."""
        if self._stored_generation() != self._generation:
            with self._lock.write():
                if self._stored_generation() != self._generation:
                    self._reload()

    # ------------------------------------------------------------------ writes

    def upsert(self, records: Sequence[IndexRecord]) -> UpsertResult:
        result = UpsertResult()
        if not records:
            return result
        with self._lock.write():
            db = self._db()
            # Validation and the in-memory update need the state of *this*
            # transaction: another process may have committed since we last looked.
            db.execute("BEGIN IMMEDIATE")
            try:
                if self._stored_generation() != self._generation:
                    self._reload()
                if self._writer_model is not None:
                    self._check_model(db, self._writer_model)
                accepted, new_fields, dim = self._validate(records, result)
                if not accepted:
                    db.execute("ROLLBACK")
                    return result
                # Last write wins within one batch, as it would across batches.
                latest = {p.id: (p, v) for p, v in accepted}
                db.execute("INSERT OR IGNORE INTO meta VALUES ('dimension', ?)", (str(dim),))
                if self._writer_model is not None:
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('model', ?)",
                               (self._writer_model,))
                for name, ftype in new_fields.items():
                    db.execute("INSERT OR IGNORE INTO fields VALUES (?, ?)", (name, ftype))
                inserted = []
                for product, vectors in latest.values():
                    _remove(db, product.id)
                    cur = db.execute(
                        "INSERT INTO products (id, title, image, attributes, images, "
                        "description) VALUES (?, ?, ?, ?, ?, ?)",
                        (product.id, product.title, product.image,
                         json.dumps(dict(product.attributes)),
                         json.dumps(list(product.images)), product.description),
                    )
                    prowid = cur.lastrowid
                    _insert_lexical(db, prowid, product)
                    rows = []
                    for key, vector in vectors.items():
                        vcur = db.execute(
                            "INSERT INTO vectors (product_rowid, key, vector) VALUES (?, ?, ?)",
                            (prowid, key, vector.tobytes()))
                        rows.append((vcur.lastrowid, key, vector))
                    inserted.append((prowid, product, rows))
                generation = self._bump_generation(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            assert dim is not None
            if self._arrays is None:
                self._arrays = _Arrays(dim)
            self._fields.update(new_fields)
            first_new = self._arrays.n
            for prowid, product, rows in inserted:
                self._arrays.kill(product.id)
                slot = self._arrays.add_product(prowid, product)
                for rowid, key, vector in rows:
                    self._arrays.append_row(slot, rowid, key, vector)
            self._columns = {}
            if self._ann is not None:
                self._ann.add(self._arrays.matrix[first_new : self._arrays.n])
            self._generation = generation
            result.indexed = len(inserted)
            # Duplicates inside the batch count once per record the caller sent.
            result.indexed += len(accepted) - len(latest)
        return result

    def _validate(self, records: Sequence[IndexRecord], result: UpsertResult
                  ) -> tuple[list[tuple[Product, dict[str, np.ndarray]]], dict[str, FieldType],
                             int | None]:
        dim = self.dimension
        accepted: list[tuple[Product, dict[str, np.ndarray]]] = []
        new_fields: dict[str, FieldType] = {}
        for record in records:
            vectors: dict[str, np.ndarray] = {}
            reason = None if record.vectors else "no vectors"
            for key, raw in record.vectors.items():
                vector = np.asarray(raw, dtype=np.float32).reshape(-1)
                if dim is None:
                    dim = vector.shape[0]
                reason = _check_vector(vector, dim)
                if reason:
                    reason = f"{_key_label(key)}: {reason}"
                    break
                vectors[key] = vector / float(np.linalg.norm(vector))
            reason = reason or self._check_fields(record.product, new_fields)
            if reason:
                result.failures.append(RecordFailure(record.product.id, reason))
                continue
            accepted.append((record.product, vectors))
        return accepted, new_fields, dim

    def _check_fields(self, product: Product, pending: dict[str, FieldType]) -> str | None:
        for name, value in product.attributes.items():
            ftype = field_type_of(value)
            known = self._fields.get(name) or pending.get(name)
            if known is not None and known != ftype:
                return f"attribute {name!r} is {ftype} but the index holds it as {known}"
        for name, value in product.attributes.items():
            pending.setdefault(name, field_type_of(value))
        return None

    def _bump_generation(self, db: sqlite3.Connection) -> int:
        generation = self._stored_generation() + 1
        db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(generation),))
        return generation

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with self._lock.write():
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                if self._stored_generation() != self._generation:
                    self._reload()
                removed = sum(_remove(db, pid) for pid in dict.fromkeys(ids))
                generation = self._bump_generation(db) if removed else self._generation
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if self._arrays is not None:
                for pid in ids:
                    self._arrays.kill(pid)
            self._columns = {}
            self._generation = generation
            return removed

    def flush(self) -> None:
        """Build (or compact) the HNSW graph if due, and save it beside the database."""
        self._refresh_if_stale()
        with self._lock.write():
            arrays = self._arrays
            if arrays is None or arrays.live < self.ann_threshold:
                return
            dead = arrays.n - arrays.live
            if self._ann is None or dead > _COMPACT_DEAD_FRACTION * arrays.n:
                self._rebuild_ann()
            self._save_ann()

    def _rebuild_ann(self) -> None:
        """Compact the arrays to live rows and build a fresh HNSW over them."""
        import faiss

        old = self._arrays
        assert old is not None
        fresh = _Arrays(old.dim, capacity=max(1024, old.live))
        for slot, product in enumerate(old.products):
            if product is None:
                continue
            new_slot = fresh.add_product(old.prowids[slot], product)
            for pos in old.rows_of[slot]:
                fresh.append_row(new_slot, int(old.rowids[pos]), old.keys[pos] or "",
                                 old.matrix[pos])
        log.info("building HNSW graph over %d vectors (M=%d, efConstruction=%d)",
                 fresh.n, self.hnsw_m, self.ef_construction)
        ann = faiss.IndexHNSWFlat(fresh.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        ann.hnsw.efConstruction = self.ef_construction
        ann.add(fresh.matrix[: fresh.n])
        self._arrays = fresh
        self._ann = ann
        self._columns = {}

    def _save_ann(self) -> None:
        import faiss

        arrays = self._arrays
        assert arrays is not None and self._ann is not None
        rowids = np.where(arrays.alive[: arrays.n], arrays.rowids[: arrays.n], -1)
        # The metadata goes first and comes back last, each file by an atomic
        # rename: a crash in between leaves no metadata, so the graph is rebuilt
        # rather than read with a layout that belongs to another generation.
        (self.directory / _ANN_META).unlink(missing_ok=True)
        # Per-process temporary names: two writers saving at once must not rename
        # each other's half-written files.
        suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"
        tmp_index = self.directory / (_ANN_NAME + suffix)
        faiss.write_index(self._ann, str(tmp_index))
        with open(self.directory / (_ANN_ROWIDS + suffix), "wb") as handle:
            np.save(handle, rowids)
        os.replace(tmp_index, self.directory / _ANN_NAME)
        os.replace(self.directory / (_ANN_ROWIDS + suffix), self.directory / _ANN_ROWIDS)
        tmp_meta = self.directory / (_ANN_META + suffix)
        tmp_meta.write_text(json.dumps({"generation": self._generation}))
        os.replace(tmp_meta, self.directory / _ANN_META)

    # ------------------------------------------------------------------ reads

    def count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM products").fetchone()[0]

    def iter_products(self, page: int = 1000) -> Iterator[Product]:
        """Every product in insertion order, read a page at a time (reindexing walks
        the whole catalog without holding it in memory twice)."""
        last = -1
        while True:
            rows = self._db().execute(
                "SELECT rowid, id, title, image, attributes, images, description FROM products "
                "WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, page)).fetchall()
            if not rows:
                return
            for rowid, *fields in rows:
                last = rowid
                yield _product(*fields)

    def ids(self) -> set[str]:
        return {row[0] for row in self._db().execute("SELECT id FROM products")}

    def fields(self) -> Mapping[str, FieldType]:
        self._refresh_if_stale()
        return dict(self._fields)

    def get(self, product_id: str) -> Product | None:
        row = self._db().execute(
            "SELECT id, title, image, attributes, images, description FROM products "
            "WHERE id=?", (product_id,)
        ).fetchone()
        return _product(*row) if row else None

    def get_vectors(self, ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db().execute(
                "SELECT p.id, v.key, v.vector FROM vectors v JOIN products p "
                f"ON p.rowid = v.product_rowid WHERE p.id IN ({marks}) ORDER BY v.rowid",
                chunk,
            )
            for pid, key, blob in rows:
                out.setdefault(pid, {})[key] = _vector(blob, len(blob) // 4)
        return out

    def get_vector(self, product_id: str) -> np.ndarray | None:
        return main_vector(self.get_vectors([product_id]).get(product_id, {}))

    @property
    def mode(self) -> str:
        """'ann' once the index holds enough vectors for HNSW to pay off, else 'exact'."""
        arrays = self._arrays
        return "ann" if arrays is not None and arrays.live >= self.ann_threshold else "exact"

    def _allowed(self, arrays: _Arrays, filters: Filters,
                 exclude_ids: Sequence[str]) -> np.ndarray:
        """Product slots a search may return (live, matching, not excluded), plus the
        trailing False cell tombstone rows point at."""
        mask = arrays.product_mask()
        slots = len(arrays.products)
        for cond in filters:
            mask[:slots] &= self._condition_mask(cond, arrays)
        for pid in exclude_ids:
            slot = arrays.slot_of.get(pid)
            if slot is not None:
                mask[slot] = False
        return mask

    def knn(
        self,
        vector: np.ndarray,
        k: int,
        filters: Filters = (),
        exclude_ids: Sequence[str] = (),
    ) -> list[Hit]:
        if k < 1:
            return []
        self._refresh_if_stale()
        if self.mode == "ann" and self._ann is None:
            with self._lock.write():
                if self._ann is None:
                    self._rebuild_ann()
        with self._lock.read():
            arrays = self._arrays
            if arrays is None or arrays.live == 0:
                return []
            query = np.asarray(vector, dtype=np.float32).reshape(-1)
            if query.shape[0] != arrays.dim:
                raise ValueError(f"query has dimension {query.shape[0]}, index {arrays.dim}")
            n = arrays.n
            allowed = self._allowed(arrays, filters, exclude_ids)
            matches = int(allowed.sum())
            if matches == 0:
                return []
            row_mask = allowed[arrays.owner[:n]] & arrays.alive[:n]
            want = min(k, matches)
            depth = min(int(row_mask.sum()), want * arrays.max_rows)
            restricted = bool(filters) or bool(exclude_ids) or arrays.live != n
            use_ann = self._ann is not None and self.mode == "ann" and (
                not restricted or depth > self.filter_exact_fraction * n
            )
            best: list[tuple[int, float]] = []
            if use_ann:
                best = _best_per_product(arrays, *self._ann_search(
                    query, depth, row_mask if restricted else None), want)
            if len(best) < want:  # exact mode, or HNSW came up short under a filter
                best = _best_per_product(arrays, *_exact_search(
                    arrays.matrix[:n], query, depth, row_mask), want)
            return [
                Hit(arrays.products[arrays.owner[row]],  # type: ignore[arg-type]
                    float(min(1.0, max(-1.0, score))))
                for row, score in best
            ]

    def lexical(
        self,
        text: str,
        k: int,
        filters: Filters = (),
        exclude_ids: Sequence[str] = (),
    ) -> list[Hit]:
        terms = query_terms(text)
        if k < 1 or not terms:
            return []
        self._refresh_if_stale()
        with self._lock.read():
            arrays = self._arrays
            if arrays is None:
                return []
            allowed = self._allowed(arrays, filters, exclude_ids)
            # Terms are \w+ runs, so quoting each makes it a plain FTS5 string:
            # no operator a user types can reach the query parser.
            match = " OR ".join(f'"{term}"' for term in terms)
            weights = ", ".join(str(w) for w in _BM25_WEIGHTS)
            rows = self._db().execute(
                f"SELECT rowid, -bm25(lexical, {weights}) AS score FROM lexical "
                "WHERE lexical MATCH ? ORDER BY score DESC, rowid", (match,))
            hits: list[Hit] = []
            for prowid, score in rows:
                slot = arrays.slot_by_prowid.get(prowid)
                if slot is None or not allowed[slot]:
                    continue
                hits.append(Hit(arrays.products[slot], float(score)))  # type: ignore[arg-type]
                if len(hits) == k:
                    break
            return hits

    def hybrid(
        self,
        vector: np.ndarray,
        text: str,
        k: int,
        filters: Filters = (),
        exclude_ids: Sequence[str] = (),
    ) -> tuple[list[Hit], list[Hit]]:
        return (self.knn(vector, k, filters, exclude_ids),
                self.lexical(text, k, filters, exclude_ids))

    def _ann_search(self, query: np.ndarray, k: int, mask: np.ndarray | None):
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        if mask is not None:
            bits = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
            params.sel = selector
        distances, labels = self._ann.search(query[None, :], k, params=params)
        keep = labels[0] >= 0
        return labels[0][keep].tolist(), distances[0][keep].tolist()

    def _condition_mask(self, cond: Condition, arrays: _Arrays) -> np.ndarray:
        column = self._column(cond.field, arrays)
        if cond.is_range:
            if column.dtype != np.float64:  # a range on a non-numeric field matches nothing
                return np.zeros(len(column), dtype=bool)
            mask = ~np.isnan(column)
            with np.errstate(invalid="ignore"):
                if cond.gt is not None:
                    mask &= column > cond.gt
                if cond.gte is not None:
                    mask &= column >= cond.gte
                if cond.lt is not None:
                    mask &= column < cond.lt
                if cond.lte is not None:
                    mask &= column <= cond.lte
            return mask
        mask = np.zeros(len(column), dtype=bool)
        for value in cond.values:
            mask |= column == _cell(value, column.dtype)
        return mask

    def _column(self, name: str, arrays: _Arrays) -> np.ndarray:
        """One attribute as a typed array over product slots, built once per write and
        reused by every query.

        A field has one type (upserts that contradict it are rejected), so a
        number column is float64 with NaN for "absent" and a boolean column is
        int8 with -1 for "absent": filters then run as vectorised comparisons
        instead of a Python loop over the catalog on each query.
        """
        column = self._columns.get(name)
        if column is not None and len(column) == len(arrays.products):
            return column
        values = [None if p is None else p.attributes.get(name) for p in arrays.products]
        ftype = self._fields.get(name)
        if ftype == "number":
            column = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif ftype == "boolean":
            column = np.array([-1 if v is None else int(v) for v in values], dtype=np.int8)
        else:
            column = np.empty(len(values), dtype=object)
            column[:] = values
        self._columns[name] = column
        return column

    def describe(self) -> dict[str, Any]:
        arrays = self._arrays
        return {
            "backend": "local",
            "directory": str(self.directory.resolve()),
            "count": self.count(),
            "vectors": 0 if arrays is None else arrays.live,
            "dimension": self.dimension,
            "model": self.model,
            "mode": self.mode,
            "ann_threshold": self.ann_threshold,
            "hnsw_nodes": None if self._ann is None else int(self._ann.ntotal),
            "tombstones": 0 if arrays is None else arrays.n - arrays.live,
            "fields": dict(self._fields),
        }

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _remove(db: sqlite3.Connection, product_id: str) -> bool:
    """Delete a product with its vectors and words; True if it existed."""
    row = db.execute("SELECT rowid FROM products WHERE id=?", (product_id,)).fetchone()
    if row is None:
        return False
    db.execute("DELETE FROM vectors WHERE product_rowid=?", (row[0],))
    db.execute("DELETE FROM lexical WHERE rowid=?", (row[0],))
    db.execute("DELETE FROM products WHERE rowid=?", (row[0],))
    return True


def _insert_lexical(db: sqlite3.Connection, rowid: int, product: Product) -> None:
    db.execute("INSERT INTO lexical (rowid, id, title, description, attributes) "
               "VALUES (?, ?, ?, ?, ?)",
               (rowid, product.id, product.title, product.description or "",
                attribute_text(product)))


def _best_per_product(arrays: _Arrays, rows: list[int], scores: list[float],
                      want: int) -> list[tuple[int, float]]:
    """Rows best first -> each product's best row, until `want` products are found."""
    seen: set[int] = set()
    best: list[tuple[int, float]] = []
    for row, score in zip(rows, scores, strict=True):
        slot = int(arrays.owner[row])
        if slot < 0 or slot in seen:
            continue
        seen.add(slot)
        best.append((row, score))
        if len(best) == want:
            break
    return best


def _key_label(key: str) -> str:
    return "title vector" if key == "title" else f"vector {key!r}"


def _cell(value: Any, dtype: np.dtype) -> Any:
    """A filter value in its column's representation; a type mismatch matches nothing."""
    if dtype == np.float64:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if numeric else np.nan
    if dtype == np.int8:
        return int(value) if isinstance(value, bool) else -2
    return value


def _exact_search(matrix: np.ndarray, query: np.ndarray, k: int, mask: np.ndarray):
    """Brute-force cosine over the masked rows; ties break by position for stability."""
    if mask.all():
        candidates = None
        scores = matrix @ query
    else:
        candidates = np.flatnonzero(mask)
        scores = matrix[candidates] @ query
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = top[np.lexsort((top, -scores[top]))]
    positions = order if candidates is None else candidates[order]
    return positions.tolist(), scores[order].tolist()


def _check_vector(vector: np.ndarray, dim: int) -> str | None:
    if vector.shape[0] != dim:
        return f"vector has dimension {vector.shape[0]}, the index holds {dim}"
    if not np.all(np.isfinite(vector)):
        return "vector holds NaN or infinity"
    if float(np.linalg.norm(vector)) < 1e-6:
        return "vector is all zeros"
    return None


def _product(pid: str, title: str, image: str | None, attrs: str, images: str | None,
             description: str | None) -> Product:
    return Product(id=pid, title=title, image=image, attributes=json.loads(attrs),
                   images=tuple(json.loads(images)) if images else (), description=description)


def _vector(blob: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32, count=dim)


def _set_wal(conn: sqlite3.Connection, *, wait_s: float = _BUSY_TIMEOUT_S) -> None:
    """Switch to WAL, waiting out other processes opening the same file.

    Switching the journal mode needs the file to itself for a moment, and SQLite
    can answer "database is locked" at once, without its busy timeout, while
    another process is opening or creating the same index (CI saw it in
    test_overlapping_writers_in_hnsw_mode_leave_an_openable_index). So retry with
    backoff, within the same time the connection's busy timeout allows.
    """
    deadline, delay = time.monotonic() + wait_s, 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
