#!/usr/bin/env python3
"""Download a ~1,600-product subset of Amazon Berkeley Objects (ABO) as a clipsearch catalog.

ABO (https://amazon-berkeley-objects.s3.amazonaws.com/index.html, CC BY 4.0)
is the catalog the original AWS sample used. This fetches one listings file,
keeps products with an English title and a main image, downloads their small
(max 256 px) images in parallel, and writes `catalog.jsonl` plus `images/`.
Re-running skips images already on disk, so an interrupted download resumes.

    python scripts/download_abo.py --output data/abo --limit 1600
    clipsearch ingest data/abo/catalog.jsonl
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipsearch.catalog import Product, abo_record_to_product, write_jsonl
from clipsearch.errors import ValidationError

BASE_URL = "https://amazon-berkeley-objects.s3.amazonaws.com"


def fetch(url: str, attempts: int = 4, timeout: float = 30) -> bytes:
    """GET with exponential backoff; 404s fail at once, everything else retries."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 or attempt == attempts - 1:
                raise
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            if attempt == attempts - 1:
                raise
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def select_products(listings: bytes, images_csv: bytes, images_dir: Path,
                    limit: int) -> tuple[list[Product], dict[str, str]]:
    """Products with an en_US title and a main image, in file order, up to `limit`."""
    with gzip.open(io.BytesIO(images_csv), "rt", encoding="utf-8") as handle:
        images = {row["image_id"]: row["path"] for row in csv.DictReader(handle)}
    products: list[Product] = []
    sources: dict[str, str] = {}
    seen: set[str] = set()
    with gzip.open(io.BytesIO(listings), "rt", encoding="utf-8") as handle:
        for line in handle:
            if len(products) >= limit:
                break
            try:
                raw = json.loads(line)
                product = abo_record_to_product(raw, images, images_dir)
            except (json.JSONDecodeError, ValidationError):
                continue
            if product.image is None or product.id in seen:
                continue
            seen.add(product.id)
            rel = images[raw["main_image_id"]]
            sources[product.id] = rel
            products.append(product)
    return products, sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("data/abo"))
    parser.add_argument("--limit", type=int, default=1600)
    parser.add_argument("--listings", default="listings_0.json.gz")
    parser.add_argument("--base-url", default=BASE_URL)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args(argv)
    from tqdm import tqdm

    out: Path = args.output
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    base = args.base_url.rstrip("/")
    print(f"fetching listings and image metadata from {base}", file=sys.stderr)
    try:
        listings = fetch(f"{base}/listings/metadata/{args.listings}")
        images_csv = fetch(f"{base}/images/metadata/images.csv.gz")
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: cannot download ABO metadata: {exc}", file=sys.stderr)
        return 2
    products, sources = select_products(listings, images_csv, images_dir, args.limit)

    def download(product: Product) -> str | None:
        target = Path(product.image or "")
        if target.exists() and target.stat().st_size > 0:
            return None
        try:
            data = fetch(f"{base}/images/small/{sources[product.id]}")
        except (urllib.error.URLError, OSError) as exc:
            return f"{product.id}: {exc}"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        return None

    failures = []
    with ThreadPoolExecutor(args.workers) as pool, tqdm(
        total=len(products), desc="images", unit="img", file=sys.stderr
    ) as bar:
        for error in pool.map(download, products):
            bar.update(1)
            if error:
                failures.append(error)
    failed_ids = {f.split(":", 1)[0] for f in failures}
    kept = [p for p in products if p.id not in failed_ids]
    write_jsonl(kept, out / "catalog.jsonl", base_dir=out)
    print(f"wrote {len(kept)} products to {out / 'catalog.jsonl'}; {len(failures)} image "
          "downloads failed")
    for failure in failures[:20]:
        print(f"  failed {failure}", file=sys.stderr)
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
