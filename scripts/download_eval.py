#!/usr/bin/env python3
"""Download public product-retrieval benchmarks as a clipsearch catalog plus query sets.

    python scripts/download_eval.py abo --output data/eval/abo --limit 1600
    python scripts/download_eval.py google-shopping --output data/eval/gs --limit 10000
    python scripts/download_eval.py amazon-products --output data/eval/ap --limit 10000

Each writes `catalog.jsonl` (+ `images/`) and one `queries-<task>.jsonl` per task:

- abo: the ABO subset of scripts/download_abo.py (all photos of each listing),
  with known-item `title2product` and `image2product` sets generated from it.
- google-shopping / amazon-products: Marqo's e-commerce evaluation sets
  (Hugging Face datasets Marqo/google-shopping-general-eval-100k and
  Marqo/amazon-products-eval-100k; parquet shards with item_ID, title, image
  and, for Google Shopping, the shopping query). `title2product` is Marqo's
  Text2Image task (a product's title finds its image); Google Shopping's
  `query2product` is their Category2Image task (a query's relevant products
  are all those listed under it). --limit reads only as many shards as needed.

Then, e.g.:
    clipsearch --data-dir data/eval/gs/.clipsearch ingest data/eval/gs/catalog.jsonl
    clipsearch --data-dir data/eval/gs/.clipsearch eval data/eval/gs/queries-title2product.jsonl

Downloads retry with backoff; re-running skips files already on disk. Never
commit the downloaded data (licences: ABO CC BY 4.0; Marqo's sets, see their
dataset cards).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import urllib.error
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipsearch.catalog import Product, read_jsonl, write_jsonl
from clipsearch.errors import ValidationError
from clipsearch.eval.queries import EvalQuery, generate, write_queries

HUB_URL = "https://huggingface.co"
MARQO_DATASETS = {
    "google-shopping": "Marqo/google-shopping-general-eval-100k",
    "amazon-products": "Marqo/amazon-products-eval-100k",
}
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9._:@+=-]")
_IMAGE_TYPES = {b"\xff\xd8": ".jpg", b"\x89P": ".png", b"GI": ".gif", b"RI": ".webp"}


def _download_abo_module():
    path = Path(__file__).resolve().parent / "download_abo.py"
    spec = importlib.util.spec_from_file_location("download_abo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- ABO


def run_abo(args: argparse.Namespace) -> int:
    download_abo = _download_abo_module()
    argv = ["--output", str(args.output), "--limit", str(args.limit)]
    if args.base_url:
        argv += ["--base-url", args.base_url]
    code = download_abo.main(argv)
    catalog = args.output / "catalog.jsonl"
    if code != 0 or not catalog.exists():
        return code or 1
    products = read_jsonl(catalog).products
    for task in ("title2product", "image2product"):
        try:
            queries = generate(task, products, sample=args.sample, seed=args.seed)
        except ValidationError as exc:  # e.g. no listing with a second photo
            print(f"  no {task} set: {exc}", file=sys.stderr)
            continue
        path = args.output / f"queries-{task}.jsonl"
        print(f"wrote {write_queries(queries, path)} {task} queries to {path}")
    return 0


# ----------------------------------------------------------------------------- Marqo


def _hub_files(fetch, hub: str, repo: str) -> list[str]:
    """The dataset's parquet shards under data/, in name order (Hub tree API)."""
    listing = json.loads(fetch(f"{hub}/api/datasets/{repo}/tree/main/data"))
    return sorted(entry["path"] for entry in listing
                  if entry.get("type") == "file" and entry["path"].endswith(".parquet"))


def _product_id(raw: Any) -> str | None:
    if raw is None:
        return None
    text = _BAD_ID_CHARS.sub("_", str(raw).strip())[:256]
    return text if text and text[0].isalnum() else None


def _image_suffix(data: bytes) -> str:
    return _IMAGE_TYPES.get(data[:2], ".jpg")


def convert_rows(rows: list[dict[str, Any]], out: Path, products: dict[str, Product],
                 by_query: dict[str, list[str]], limit: int) -> None:
    """Rows of a Marqo shard -> products (images written to out/images) and query groups."""
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if len(products) >= limit:
            return
        pid = _product_id(row.get("item_ID"))
        title = (row.get("title") or "").strip()
        image = row.get("image") or {}
        data = image.get("bytes") if isinstance(image, dict) else None
        if pid is None or not title or not data or pid in products:
            continue
        path = images_dir / f"{pid}{_image_suffix(data)}"
        if not path.exists():
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        products[pid] = Product(pid, title[:2000], str(path.resolve()))
        query = (row.get("query") or "").strip()
        if query:
            by_query[query].append(pid)


def run_marqo(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq
    from tqdm import tqdm

    fetch = _download_abo_module().fetch
    hub = (args.hub_url or HUB_URL).rstrip("/")
    repo = args.dataset or MARQO_DATASETS[args.source]
    out: Path = args.output
    raw_dir = out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    try:
        shards = _hub_files(fetch, hub, repo)
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        print(f"error: cannot list {repo} at {hub}: {exc}", file=sys.stderr)
        return 2
    if not shards:
        print(f"error: {repo} lists no parquet files under data/", file=sys.stderr)
        return 2
    products: dict[str, Product] = {}
    by_query: dict[str, list[str]] = defaultdict(list)
    with tqdm(total=args.limit, desc=args.source, unit="product", file=sys.stderr) as bar:
        for shard in shards:
            if len(products) >= args.limit:
                break
            local = raw_dir / Path(shard).name
            if not local.exists():
                try:
                    data = fetch(f"{hub}/datasets/{repo}/resolve/main/{shard}", timeout=300)
                except (urllib.error.URLError, OSError) as exc:
                    print(f"error: cannot download {shard}: {exc}", file=sys.stderr)
                    return 2
                part = local.with_name(local.name + ".part")
                part.write_bytes(data)
                part.replace(local)
            parquet = pq.ParquetFile(local)
            columns = [c for c in ("item_ID", "title", "image", "query")
                       if c in parquet.schema_arrow.names]
            before = len(products)
            for batch in parquet.iter_batches(batch_size=512, columns=columns):
                convert_rows(batch.to_pylist(), out, products, by_query, args.limit)
                bar.update(len(products) - bar.n)
                if len(products) >= args.limit:
                    break
            if not args.keep_raw:
                local.unlink()
            print(f"  {shard}: {len(products) - before} products", file=sys.stderr)
    catalog = list(products.values())
    write_jsonl(catalog, out / "catalog.jsonl", base_dir=out)
    print(f"wrote {len(catalog)} products to {out / 'catalog.jsonl'}")
    titles = generate("title2product", catalog, sample=args.sample, seed=args.seed)
    path = out / "queries-title2product.jsonl"
    print(f"wrote {write_queries(titles, path)} title2product queries to {path}")
    if by_query:
        groups = sorted(by_query.items())
        queries = [EvalQuery(f"query2product:{n}", dict.fromkeys(ids, 1), text=text[:1000])
                   for n, (text, ids) in enumerate(groups, start=1)]
        if args.sample is not None:
            import random

            queries = random.Random(args.seed).sample(queries, min(args.sample, len(queries)))
        path = out / "queries-query2product.jsonl"
        print(f"wrote {write_queries(queries, path)} query2product queries to {path}")
    return 0 if catalog else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", choices=["abo", *MARQO_DATASETS])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None,
                        help="products to keep (default: abo 1600, Marqo sets 100000)")
    parser.add_argument("--sample", type=int, help="queries per task (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-url", help="ABO bucket URL (default: the public bucket)")
    parser.add_argument("--hub-url", help=f"dataset hub URL (default {HUB_URL})")
    parser.add_argument("--dataset", help="override the Marqo dataset repository id")
    parser.add_argument("--keep-raw", action="store_true",
                        help="keep the downloaded parquet shards in OUTPUT/raw")
    args = parser.parse_args(argv)
    if args.limit is None:
        args.limit = 1600 if args.source == "abo" else 100_000
    if args.limit < 1:
        parser.error("--limit must be at least 1")
    return run_abo(args) if args.source == "abo" else run_marqo(args)


if __name__ == "__main__":
    sys.exit(main())
