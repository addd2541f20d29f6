"""Hybrid against vector search: query latency and index size per product, both backends.

Issue #14 gives each product one vector per image plus a title vector, and
words (SQLite FTS5 / Lucene BM25). This benchmark measures what that costs:

- **Latency.** N synthetic products (2 images + title = 3 random 512-d unit
  vectors each; titles of 5-8 words drawn from a Zipf-distributed vocabulary
  of pseudo-words, plus a brand and colour attribute, so BM25 has real
  posting lists to walk) are loaded through the real index code
  (`LocalIndex.upsert` / `OpenSearchIndex.upsert`). Queries of 1-3 words
  drawn from the same distribution go through `SearchService.search`, the
  path the API takes, in `vector` and `hybrid` mode, **interleaved** query by
  query (the order alternating) so both modes see the same machine load and
  their ratio means something. The encoder is excluded: a stub returns a
  precomputed random unit vector per query text, so the figures are the
  index, fusion and service cost only (add the encoder's time from the
  encoder benchmarks for end-to-end latency).
- **Size per product, after:** the directory of the LocalIndex (SQLite file
  and, above the ANN threshold, the HNSW graph files; with a per-table split
  from SQLite's `dbstat`), or the OpenSearch index's primary store size after
  a force merge to one segment (what a bootstrap does after a bulk load).
- **Size per product, before:** the layout of the commit before #14 (one
  vector per product, no FTS5 table / no English-analysed lexical fields),
  rebuilt here from its schema and mapping with the same products and their
  main-image vectors (see `old_sqlite_schema`, `old_opensearch_body`).

    python scripts/opensearch_node.py start --port 9320 --heap 1g --full-jit
    .venv/bin/python -m benchmarks.hybrid_latency --sizes 10000 --backends local opensearch \\
        --opensearch http://127.0.0.1:9320
    python scripts/opensearch_node.py stop --port 9320
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clipsearch import config
from clipsearch.catalog import Product
from clipsearch.contract import SearchRequest
from clipsearch.index import TITLE_KEY, IndexRecord, image_vector_key
from clipsearch.service import SearchService

COLORS = ("red", "blue", "green", "black", "white", "grey", "brown", "pink", "yellow",
          "orange", "purple", "beige")
BATCH = 1000

def old_sqlite_schema() -> str:
    """The LocalIndex schema before #14 (`git show c2786b6^:clipsearch/index/local.py`):
    today's meta, products and fields tables, with the one vector in the products row
    instead of images/description, and no vectors table, no FTS5 table."""
    from clipsearch.index.local import _SCHEMA

    tables = [t.strip() + ";" for t in _SCHEMA.split(";") if t.strip()]
    kept = [t for t in tables if any(f" {name} " in t for name in ("meta", "products", "fields"))]
    return "\n".join(t.replace("images TEXT,\n    description TEXT", "vector BLOB NOT NULL")
                     for t in kept)


def old_opensearch_body(dim: int) -> dict:
    """The OpenSearch mapping before #14 (`git show c2786b6^:clipsearch/index/opensearch.py`):
    one top-level knn_vector, title a standard-analysed text with a keyword subfield,
    no description / attribute_words / id.words fields."""
    from clipsearch.index.opensearch import HNSW_EF_CONSTRUCTION, HNSW_M, index_body

    body = index_body(dim)
    props = body["mappings"]["properties"]
    for name in ("description", "attribute_words", "images", "vectors"):
        del props[name]
    props["id"] = {"type": "keyword"}
    props["title"] = {"type": "text", "fields": {"raw": {"type": "keyword",
                                                         "ignore_above": 512}}}
    props["vector"] = {"type": "knn_vector", "dimension": dim, "method": {
        "name": "hnsw", "engine": "lucene", "space_type": "cosinesimil",
        "parameters": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}}}
    body["mappings"]["_meta"]["schema"] = 1
    return body


class Vocabulary:
    """Pseudo-words with Zipf frequencies: a few words in many titles, most in few."""

    def __init__(self, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        words: dict[str, None] = {}
        while len(words) < size:
            n = int(rng.integers(2, 4))
            words.setdefault("".join(rng.choice(syllables, n)), None)
        self.words = list(words)
        weights = 1.0 / np.arange(1, size + 1)
        self.p = weights / weights.sum()
        self.brands = self.words[-500:]  # rare words: a brand is a precise signal

    def draw(self, rng: np.random.Generator, n: int) -> list[str]:
        return [self.words[i] for i in rng.choice(len(self.words), n, p=self.p)]


def unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    m = rng.standard_normal(shape, dtype=np.float32)
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def batches(n: int, vocab: Vocabulary, dim: int, seed: int
            ) -> Iterator[tuple[list[Product], np.ndarray]]:
    """Products and their (products x 3 x dim) vectors, a batch at a time, reproducibly:
    the same seed gives the same batches, so the old layout gets the same products."""
    for start in range(0, n, BATCH):
        rng = np.random.default_rng([seed, start])
        count = min(BATCH, n - start)
        products = []
        for i in range(start, start + count):
            brand = vocab.brands[int(rng.integers(len(vocab.brands)))]
            color = COLORS[int(rng.integers(len(COLORS)))]
            words = vocab.draw(rng, int(rng.integers(3, 7)))
            products.append(Product(
                f"p{i}", " ".join([brand.capitalize(), color, *words]),
                images=(f"s3://bench/p{i}-0.jpg", f"s3://bench/p{i}-1.jpg"),
                attributes={"brand": brand, "color": color,
                            "price": round(float(rng.uniform(5, 500)), 2)}))
        yield products, unit(rng, (count, 3, dim))


def records(products: list[Product], vectors: np.ndarray) -> list[IndexRecord]:
    return [IndexRecord(p, {image_vector_key(p.images[0]): v[0],
                            image_vector_key(p.images[1]): v[1], TITLE_KEY: v[2]})
            for p, v in zip(products, vectors, strict=True)]


class StubEncoder:
    """Returns a precomputed vector per query text: the encoder is not measured."""

    model_id = "bench-stub"
    prompt_template = "{}"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.dimension = len(next(iter(vectors.values())))

    def encode_texts(self, texts, **_):
        return np.stack([self.vectors[t] for t in texts])

    def encode_images(self, images):
        raise NotImplementedError("text queries only")


def make_queries(vocab: Vocabulary, n: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 999])
    texts: dict[str, np.ndarray] = {}
    while len(texts) < n:
        text = " ".join(vocab.draw(rng, int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))))
        texts.setdefault(text, unit(rng, (dim,)))
    return texts


def lexical_match_share(texts, n: int, vocab: Vocabulary, dim: int, seed: int) -> float:
    """Mean share of products holding at least one query word (before stemming):
    how many rows BM25 scores for a query."""
    postings: dict[str, set[int]] = {}
    for products, _ in batches(n, vocab, dim, seed):
        for p in products:
            for word in p.title.lower().split():
                postings.setdefault(word, set()).add(int(p.id[1:]))
    shares = [len(set().union(*(postings.get(w, set()) for w in t.split()))) / n
              for t in texts]
    return float(np.mean(shares))


def measure_latency(service: SearchService, queries: dict[str, np.ndarray], warmup: int
                    ) -> dict[str, list[float]]:
    """Per query, in alternating order: the two searches (`vector`, `hybrid`), and the
    index calls a hybrid search is made of, to show where its extra time goes:
    `knn` at k=10 (what vector mode asks), `knn` and `lexical` at the rank window."""
    index, window = service.index, service.rank_window
    calls = {
        "vector": lambda t, v: service.search(SearchRequest(text=t, k=10, mode="vector")),
        "hybrid": lambda t, v: service.search(SearchRequest(text=t, k=10, mode="hybrid")),
        "knn@10": lambda t, v: index.knn(v, 10),
        f"knn@{window}": lambda t, v: index.knn(v, window),
        f"lexical@{window}": lambda t, v: index.lexical(t, window),
    }
    texts = list(queries)
    for text in texts[:warmup]:
        for call in calls.values():
            call(text, queries[text])
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i, text in enumerate(tqdm(texts, desc="queries", unit="query", leave=False)):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            calls[name](text, queries[text])
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def dir_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir() if f.is_file())


def sqlite_split(path: Path) -> dict[str, int]:
    """Bytes per table group: products, vectors, FTS5 (lexical*), the rest."""
    groups: dict[str, int] = {}
    with sqlite3.connect(path) as db:
        for name, size in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            group = ("fts5" if name.startswith("lexical") else
                     "vectors" if name.startswith("vectors") else
                     "products" if name.startswith("products") or "autoindex_products" in name
                     else "other")
            groups[group] = groups.get(group, 0) + size
    return groups


def run_local(n: int, vocab: Vocabulary, queries: dict[str, np.ndarray], args) -> dict:
    from clipsearch.index.local import LocalIndex

    row: dict = {"backend": "local", "n": n}
    with tempfile.TemporaryDirectory(prefix="hybench-", dir=args.tmp) as tmp:
        directory = Path(tmp) / "after"
        index = LocalIndex(directory, ann_threshold=args.ann_threshold)
        start = time.perf_counter()
        for products, vectors in tqdm(batches(n, vocab, args.dim, args.seed), total=-(-n // BATCH),
                                      desc=f"local load {n:,}", unit="batch"):
            result = index.upsert(records(products, vectors))
            assert not result.failures, result.failures[:3]
        row["load_s"] = time.perf_counter() - start
        start = time.perf_counter()
        index.flush()  # builds and saves the HNSW graph when above the threshold
        row["flush_s"] = time.perf_counter() - start
        row["search"] = index.mode
        service = SearchService(StubEncoder(queries), index, query_cache=None)
        row.update(latency(measure_latency(service, queries, args.warmup)))
        index.close()
        row["bytes_after"] = dir_bytes(directory)
        row["split_after"] = sqlite_split(directory / "products.sqlite3")

        old = Path(tmp) / "before.sqlite3"
        with sqlite3.connect(old) as db:
            db.executescript(old_sqlite_schema())
            for products, vectors in batches(n, vocab, args.dim, args.seed):
                db.executemany(
                    "INSERT INTO products (id, title, image, attributes, vector) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(p.id, p.title, p.image, json.dumps(dict(p.attributes)),
                      v[0].astype(np.float32).tobytes()) for p, v in zip(products, vectors,
                                                                          strict=True)])
        row["bytes_before"] = old.stat().st_size
        row["split_before"] = sqlite_split(old)
    return row


def run_opensearch(n: int, vocab: Vocabulary, queries: dict[str, np.ndarray], args) -> dict:
    from opensearchpy import helpers

    from clipsearch.index.opensearch import OpenSearchIndex

    row: dict = {"backend": "opensearch", "n": n}
    alias = (f"hybench-keep-{n}-seed{args.seed}-d{args.dim}" if args.keep
             else f"hybench-{uuid.uuid4().hex[:6]}")
    index = OpenSearchIndex.from_url(args.opensearch, timeout=600, alias=alias)
    client = index.client
    old_name = f"hybench-old-{uuid.uuid4().hex[:6]}"
    kept = args.keep and index.current_index() is not None and index.count() == n
    try:
        if kept:  # loaded and merged by an earlier --keep run: measure queries only
            name = index.current_index()
            print(f"# reusing {name} ({n:,} products) left by an earlier --keep run", flush=True)
            row["reused"] = name
        else:
            for stale in index.versions():  # a --keep run that did not finish
                client.indices.delete(index=stale)
            start = time.perf_counter()
            name = index.ensure(args.dim)
            row["refresh_interval"] = args.refresh_interval
            with refresh_interval(client, name, args.refresh_interval):
                for products, vectors in tqdm(batches(n, vocab, args.dim, args.seed),
                                              total=-(-n // BATCH),
                                              desc=f"opensearch load {n:,}", unit="batch"):
                    result = index.upsert(records(products, vectors))
                    assert not result.failures, result.failures[:3]
            index.flush()
            row["load_s"] = time.perf_counter() - start
            start = time.perf_counter()
            force_merge(client, name)
            row["flush_s"] = time.perf_counter() - start
        row["search"] = "hnsw (lucene), force-merged"
        service = SearchService(StubEncoder(queries), index, query_cache=None)
        row.update(latency(measure_latency(service, queries, args.warmup)))
        row["bytes_after"] = store_bytes(client, name)
        row["split_after"] = lucene_split(client, name)

        if not args.skip_before:
            client.indices.create(index=old_name, body=old_opensearch_body(args.dim))

            def actions():
                for products, vectors in batches(n, vocab, args.dim, args.seed):
                    for p, v in zip(products, vectors, strict=True):
                        yield {"_index": old_name, "_id": p.id, "_source": {
                            "id": p.id, "title": p.title, "image": p.image,
                            "attributes": dict(p.attributes), "vector": v[0].tolist()}}

            start = time.perf_counter()
            with refresh_interval(client, old_name, args.refresh_interval):
                for ok, item in tqdm(helpers.streaming_bulk(client, actions(), chunk_size=500),
                                     total=n, desc=f"opensearch old layout {n:,}",
                                     unit="product"):
                    assert ok, item
            client.indices.refresh(index=old_name)
            row["load_before_s"] = time.perf_counter() - start
            force_merge(client, old_name)
            row["bytes_before"] = store_bytes(client, old_name)
            row["split_before"] = lucene_split(client, old_name)
    finally:
        if args.keep:
            print(f"# kept {alias} for the next --keep run; delete it with "
                  f"curl -XDELETE '{args.opensearch}/{alias}-v*'", flush=True)
        else:
            for name in index.versions():
                client.indices.delete(index=name, ignore_unavailable=True)
        client.indices.delete(index=old_name, ignore_unavailable=True)
    return row


@contextlib.contextmanager
def refresh_interval(client, name: str, interval: str) -> Iterator[None]:
    """Load with `index.refresh_interval` set to `interval`, then restore the default.

    `-1` (no periodic refresh) is what the bootstrap sets for its bulk load
    (clipsearch/bootstrap/indexing.py): segments are then flushed only when the
    indexing buffer fills, not every second, so Lucene builds fewer small HNSW
    graphs and merges (which rebuild graphs) less. `1s` is OpenSearch's default,
    i.e. what the ingest Lambda's writes see.
    """
    client.indices.put_settings(index=name, body={"index": {"refresh_interval": interval}})
    try:
        yield
    finally:
        client.indices.put_settings(index=name, body={"index": {"refresh_interval": None}})


def force_merge(client, name: str) -> None:
    """Merge to one segment and wait until only that segment is left, so the store
    size counts neither the merged-away segments nor a merge in flight."""
    client.indices.forcemerge(index=name, max_num_segments=1, request_timeout=7200)
    client.indices.refresh(index=name)
    while len({s["segment"] for s in client.cat.segments(index=name, format="json")}) > 1:
        time.sleep(2)


def store_bytes(client, name: str) -> int:
    stats = client.indices.stats(index=name, metric="store")
    return int(stats["indices"][name]["primaries"]["store"]["size_in_bytes"])


def lucene_split(client, name: str) -> dict[str, int]:
    """Bytes per Lucene file kind: stored fields (`_source`), doc values, raw vectors,
    the HNSW graph, postings/terms; what each part of a product costs."""
    stats = client.indices.stats(index=name, metric="segments", include_segment_file_sizes=True)
    sizes = stats["indices"][name]["primaries"]["segments"].get("file_sizes", {})
    kinds = {"fdt": "stored _source", "dvd": "doc values", "vec": "vectors", "vex": "hnsw graph",
             "tim": "terms", "doc": "postings", "pos": "postings"}
    groups: dict[str, int] = {}
    for ext, info in sizes.items():
        group = kinds.get(ext, "other")
        groups[group] = groups.get(group, 0) + int(info["size_in_bytes"])
    return groups


def latency(times: dict[str, list[float]]) -> dict:
    out = {}
    for mode, samples in times.items():
        out[f"{mode}_p50"] = float(np.percentile(samples, 50))
        out[f"{mode}_p99"] = float(np.percentile(samples, 99))
    out["queries"] = len(times["vector"])
    return out


def load_cell(row: dict) -> str:
    """`load s (products/s) | merge s`, or where the index came from when reused."""
    if "load_s" not in row:
        return f"reused ({row['reused']}) | "
    return f"{row['load_s']:.0f} ({row['n'] / row['load_s']:,.0f}) | {row['flush_s']:.1f}"


def print_rows(rows: list[dict]) -> None:
    print("| backend | products | vectors | search | load s (products/s) | graph / merge s "
          "| vector p50 / p99 ms | hybrid p50 / p99 ms | hybrid / vector p50 | p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['n']:,} | {3 * r['n']:,} | {r['search']} | "
              f"{load_cell(r)} | "
              f"{r['vector_p50']:.2f} / {r['vector_p99']:.2f} | "
              f"{r['hybrid_p50']:.2f} / {r['hybrid_p99']:.2f} | "
              f"{r['hybrid_p50'] / r['vector_p50']:.2f}x | "
              f"{r['hybrid_p99'] / r['vector_p99']:.2f}x |")
    print()
    calls = [k[:-4] for k in rows[0] if k.endswith("_p50") and k[:-4] not in
             ("vector", "hybrid")]
    print("| backend | products | " + " | ".join(f"{c} p50 / p99 ms" for c in calls) + " |")
    print("|---|---|" + "---|" * len(calls))
    for r in rows:
        print(f"| {r['backend']} | {r['n']:,} | " + " | ".join(
            f"{r[c + '_p50']:.2f} / {r[c + '_p99']:.2f}" for c in calls) + " |")
    print()
    print("| backend | products | bytes/product before (1 vector, no lexical) "
          "| bytes/product after (3 vectors + lexical) | after / before "
          "| split per product, before / after |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        n, before, after = r["n"], r.get("bytes_before"), r["bytes_after"]
        split = " / ".join(", ".join(f"{k} {v / n:,.0f}" for k, v in sorted(r[key].items()))
                           for key in ("split_before", "split_after") if key in r)
        before_cell = f"{before / n:,.0f}" if before else "not measured"
        ratio = f"{after / before:.2f}x" if before else ""
        print(f"| {r['backend']} | {n:,} | {before_cell} | {after / n:,.0f} | {ratio} "
              f"| {split} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    parser.add_argument("--backends", nargs="+", choices=["local", "opensearch"],
                        default=["local"])
    parser.add_argument("--opensearch", help="URL of a running node (for --backends opensearch)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--vocabulary", type=int, default=5000)
    parser.add_argument("--ann-threshold", type=int, default=config.DEFAULT_ANN_THRESHOLD,
                        help="LocalIndex vectors above which HNSW is used (default: shipped)")
    parser.add_argument("--skip-before", action="store_true",
                        help="OpenSearch: do not build the old layout for its size")
    parser.add_argument("--refresh-interval", default="-1",
                        help="OpenSearch index.refresh_interval during the load (default -1, "
                             "as the bootstrap; 1s is OpenSearch's default)")
    parser.add_argument("--keep", action="store_true",
                        help="OpenSearch: keep the loaded index (alias hybench-keep-N-...) and "
                             "reuse it in the next --keep run, which then measures queries "
                             "only (a 100k load takes most of an hour on 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", help="directory for the LocalIndex files (default: system)")
    parser.add_argument("--json", type=Path, help="append the rows as JSON lines here")
    args = parser.parse_args()
    if "opensearch" in args.backends and not args.opensearch:
        parser.error("--backends opensearch needs --opensearch URL")
    vocab = Vocabulary(args.vocabulary, args.seed)
    queries = make_queries(vocab, args.queries, args.dim, args.seed)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
          f"{args.dim}-d random unit vectors, 3 per product (2 images + title); "
          f"{len(queries)} text queries of 1-3 words, k=10, rank window "
          f"{config.RANK_WINDOW}, encoder excluded (precomputed query vectors)", flush=True)
    rows = []
    for n in args.sizes:
        for backend in args.backends:
            share = lexical_match_share(queries, n, vocab, args.dim, args.seed)
            print(f"# {backend} {n:,}: a query's words occur in {share:.1%} of titles "
                  "on average", flush=True)
            run = run_local if backend == "local" else run_opensearch
            row = run(n, vocab, queries, args)
            row["lexical_match_share"] = share
            row["load_average_end"] = os.getloadavg()[0]
            rows.append(row)
            if args.json:
                with args.json.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
            print(f"# done {backend} {n:,}, load average {row['load_average_end']:.1f}",
                  flush=True)
    print_rows(rows)


if __name__ == "__main__":
    main()
