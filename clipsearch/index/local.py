"""The embedded index: SQLite for products, an in-memory matrix (and HNSW) for vectors.

Why this shape:
- SQLite is the source of truth (metadata *and* vectors as float32 blobs), so
  a restart or a crash mid-ingest never leaves the two out of step, and WAL
  mode lets other processes read while one writes.
- Vectors are also held in memory as one contiguous float32 matrix: exact
  search is then a single BLAS matmul, which beats any ANN index on small
  catalogs and is exact by construction.
- Above `ann_threshold` vectors a faiss HNSW graph takes over (inner product
  on unit vectors equals cosine). It is grown incrementally on upsert; a
  replaced or deleted product leaves a tombstone that searches skip, and the
  graph is compacted when tombstones pile up. The graph is saved beside the
  database together with the generation it reflects, so a restart reuses it
  instead of rebuilding.
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
- Filters are evaluated on in-memory attribute columns into a mask. A
  selective filter (few matches) is answered by exact search over the
  matching rows, a broad one by HNSW restricted to the mask; either way k
  hits come back whenever k products match.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch import config
from clipsearch.catalog import Product
from clipsearch.errors import ConfigurationError
from clipsearch.filters import Condition, FieldType, Filters, field_type_of
from clipsearch.index import Hit, IndexRecord, RecordFailure, UpsertResult
from clipsearch.index.rwlock import RWLock

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    image TEXT,
    attributes TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS fields (name TEXT PRIMARY KEY, type TEXT NOT NULL);
"""
_DB_NAME = "products.sqlite3"
_ANN_NAME = "hnsw.faiss"
_ANN_META = "hnsw.json"
_ANN_ROWIDS = "hnsw-rowids.npy"
# Compact the HNSW graph once this share of its nodes are tombstones.
_COMPACT_DEAD_FRACTION = 0.3


class _Arrays:
    """Growable, position-addressed copies of what SQLite holds."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.n = 0
        self.matrix = np.zeros((capacity, dim), dtype=np.float32)
        self.alive = np.zeros(capacity, dtype=bool)
        self.rowids = np.full(capacity, -1, dtype=np.int64)
        self.products: list[Product | None] = []
        self.pos_of: dict[str, int] = {}

    def _grow(self, needed: int) -> None:
        cap = self.matrix.shape[0]
        if needed <= cap:
            return
        new_cap = max(needed, cap * 2)
        self.matrix = np.resize(self.matrix, (new_cap, self.dim))
        self.alive = np.concatenate([self.alive, np.zeros(new_cap - cap, dtype=bool)])
        self.rowids = np.concatenate([self.rowids, np.full(new_cap - cap, -1, dtype=np.int64)])

    def append(self, rowid: int, product: Product, vector: np.ndarray) -> int:
        self._grow(self.n + 1)
        pos = self.n
        self.matrix[pos] = vector
        self.alive[pos] = True
        self.rowids[pos] = rowid
        self.products.append(product)
        self.pos_of[product.id] = pos
        self.n += 1
        return pos

    def place_dead(self) -> int:
        """A tombstone slot, used when restoring a saved HNSW layout."""
        self._grow(self.n + 1)
        self.products.append(None)
        self.n += 1
        return self.n - 1

    def kill(self, product_id: str) -> bool:
        pos = self.pos_of.pop(product_id, None)
        if pos is None:
            return False
        self.alive[pos] = False
        self.products[pos] = None
        return True

    @property
    def live(self) -> int:
        return len(self.pos_of)


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
        self._ann: Any = None  # faiss.IndexHNSWFlat over positions 0..n-1
        self._columns: dict[str, np.ndarray] = {}
        self._generation = -1
        self._writer_model: str | None = None
        with self._db() as db:
            db.executescript(_SCHEMA)
        self._reload()

    # ------------------------------------------------------------------ storage

    def _db(self) -> sqlite3.Connection:
        """One connection per thread: sqlite3 connections are not shareable."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.directory / _DB_NAME, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

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
        total = db.execute("SELECT COUNT(*) FROM products").fetchone()[0]
        arrays = _Arrays(dim, capacity=max(1024, total))
        saved_ann = self._load_saved_ann(generation) if use_saved else None
        rows = db.execute("SELECT rowid, id, title, image, attributes, vector FROM products "
                          "ORDER BY rowid")
        if saved_ann is None:
            for rowid, pid, title, image, attrs, blob in rows:
                arrays.append(rowid, _product(pid, title, image, attrs), _vector(blob, dim))
        else:
            ann, rowid_layout = saved_ann
            by_rowid = {int(r): i for i, r in enumerate(rowid_layout) if r >= 0}
            for _ in range(len(rowid_layout)):
                arrays.place_dead()
            for rowid, pid, title, image, attrs, blob in rows:
                pos = by_rowid.get(rowid)
                if pos is None:  # the saved layout does not match: never fatal, rebuild
                    log.warning("saved HNSW graph does not match the database; rebuilding")
                    self._reload_snapshot(db, use_saved=False)
                    return
                arrays.matrix[pos] = _vector(blob, dim)
                arrays.alive[pos] = True
                arrays.rowids[pos] = rowid
                arrays.products[pos] = _product(pid, title, image, attrs)
                arrays.pos_of[pid] = pos
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
            live = self._db().execute("SELECT COUNT(*) FROM products").fetchone()[0]
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
                for product, vector in latest.values():
                    db.execute("DELETE FROM products WHERE id=?", (product.id,))
                    cur = db.execute(
                        "INSERT INTO products (id, title, image, attributes, vector) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (product.id, product.title, product.image,
                         json.dumps(dict(product.attributes)), vector.tobytes()),
                    )
                    inserted.append((cur.lastrowid, product, vector))
                generation = self._bump_generation(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if self._arrays is None:
                self._arrays = _Arrays(dim)
            self._fields.update(new_fields)
            first_new = self._arrays.n
            for rowid, product, vector in inserted:
                self._arrays.kill(product.id)
                self._arrays.append(rowid, product, vector)
            self._columns = {}
            if self._ann is not None:
                self._ann.add(self._arrays.matrix[first_new : self._arrays.n])
            self._generation = generation
            result.indexed = len(inserted)
            # Duplicates inside the batch count once per record the caller sent.
            result.indexed += len(accepted) - len(latest)
        return result

    def _validate(self, records: Sequence[IndexRecord], result: UpsertResult
                  ) -> tuple[list[tuple[Product, np.ndarray]], dict[str, FieldType], int | None]:
        dim = self.dimension
        accepted: list[tuple[Product, np.ndarray]] = []
        new_fields: dict[str, FieldType] = {}
        for record in records:
            vector = np.asarray(record.vector, dtype=np.float32).reshape(-1)
            if dim is None:
                dim = vector.shape[0]
            reason = _check_vector(vector, dim) or self._check_fields(record.product,
                                                                      new_fields)
            if reason:
                result.failures.append(RecordFailure(record.product.id, reason))
                continue
            norm = float(np.linalg.norm(vector))
            accepted.append((record.product, vector / norm))
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
                removed = 0
                for pid in dict.fromkeys(ids):
                    removed += db.execute("DELETE FROM products WHERE id=?", (pid,)).rowcount
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
        live_pos = np.flatnonzero(old.alive[: old.n])
        fresh = _Arrays(old.dim, capacity=max(1024, len(live_pos)))
        for pos in live_pos:
            product = old.products[pos]
            assert product is not None
            fresh.append(int(old.rowids[pos]), product, old.matrix[pos])
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
        tmp_index = self.directory / (_ANN_NAME + ".tmp")
        faiss.write_index(self._ann, str(tmp_index))
        with open(self.directory / (_ANN_ROWIDS + ".tmp"), "wb") as handle:
            np.save(handle, rowids)
        os.replace(tmp_index, self.directory / _ANN_NAME)
        os.replace(self.directory / (_ANN_ROWIDS + ".tmp"), self.directory / _ANN_ROWIDS)
        tmp_meta = self.directory / (_ANN_META + ".tmp")
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
                "SELECT rowid, id, title, image, attributes FROM products WHERE rowid > ? "
                "ORDER BY rowid LIMIT ?", (last, page)).fetchall()
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
            "SELECT id, title, image, attributes FROM products WHERE id=?", (product_id,)
        ).fetchone()
        return _product(*row) if row else None

    def get_vector(self, product_id: str) -> np.ndarray | None:
        row = self._db().execute(
            "SELECT vector FROM products WHERE id=?", (product_id,)
        ).fetchone()
        return _vector(row[0], len(row[0]) // 4) if row else None

    @property
    def mode(self) -> str:
        """'ann' once the catalog is large enough for HNSW to pay off, else 'exact'."""
        arrays = self._arrays
        return "ann" if arrays is not None and arrays.live >= self.ann_threshold else "exact"

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
            mask = arrays.alive[:n].copy()
            restricted = bool(filters) or bool(exclude_ids) or arrays.live != n
            for cond in filters:
                mask &= self._condition_mask(cond, arrays)
            for pid in exclude_ids:
                pos = arrays.pos_of.get(pid)
                if pos is not None:
                    mask[pos] = False
            matches = int(mask.sum())
            if matches == 0:
                return []
            want = min(k, matches)
            use_ann = self._ann is not None and self.mode == "ann" and (
                not restricted or matches > self.filter_exact_fraction * n
            )
            positions, scores = (
                self._ann_search(query, want, mask if restricted else None)
                if use_ann else ([], [])
            )
            if len(positions) < want:  # exact mode, or HNSW came up short under a filter
                positions, scores = _exact_search(arrays.matrix[:n], query, want, mask)
            return [
                Hit(arrays.products[p], float(min(1.0, max(-1.0, s))))  # type: ignore[arg-type]
                for p, s in zip(positions, scores, strict=True)
            ]

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
        """One attribute as a typed array, built once per write and reused by every query.

        A field has one type (upserts that contradict it are rejected), so a
        number column is float64 with NaN for "absent" and a boolean column is
        int8 with -1 for "absent": filters then run as vectorised comparisons
        instead of a Python loop over the catalog on each query.
        """
        column = self._columns.get(name)
        if column is not None and len(column) == arrays.n:
            return column
        values = [None if p is None else p.attributes.get(name) for p in arrays.products]
        ftype = self._fields.get(name)
        if ftype == "number":
            column = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif ftype == "boolean":
            column = np.array([-1 if v is None else int(v) for v in values], dtype=np.int8)
        else:
            column = np.empty(arrays.n, dtype=object)
            column[:] = values
        self._columns[name] = column
        return column

    def describe(self) -> dict[str, Any]:
        arrays = self._arrays
        return {
            "backend": "local",
            "directory": str(self.directory.resolve()),
            "count": self.count(),
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


def _product(pid: str, title: str, image: str | None, attrs: str) -> Product:
    return Product(id=pid, title=title, image=image, attributes=json.loads(attrs))


def _vector(blob: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32, count=dim)
