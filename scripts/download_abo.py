#!/usr/bin/env python3
"""Download a ~1,600-product subset of Amazon Berkeley Objects (ABO) as a clipsearch catalog.

ABO (https://amazon-berkeley-objects.s3.amazonaws.com/index.html, CC BY 4.0)
is the catalog the original AWS sample used. This fetches one listings file,
keeps products with an English title and a main image, downloads their small
(max 256 px) images in parallel (the main image and, unless --main-image-only,
the listing's other photos, which `clipsearch eval --generate image2product`
uses as queries), and writes `catalog.jsonl` plus `images/`. Re-running skips
images already on disk, so an interrupted download resumes.

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
                    limit: int, main_image_only: bool = False) -> list[Product]:
    """Products with an en_US title and a main image, in file order, up to `limit`.

    Image paths point under `images_dir`, mirroring the bucket's images/small/
    layout, so each one's download URL follows from its path.
    """
    with gzip.open(io.BytesIO(images_csv), "rt", encoding="utf-8") as handle:
        images = {row["image_id"]: row["path"] for row in csv.DictReader(handle)}
    products: list[Product] = []
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
            products.append(product.with_images(product.images[:1]) if main_image_only
                            else product)
    return products


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("data/abo"))
    parser.add_argument("--limit", type=int, default=1600)
    parser.add_argument("--listings", default="listings_0.json.gz")
    parser.add_argument("--base-url", default=BASE_URL)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--main-image-only", action="store_true",
                        help="skip each listing's other photos (no image2product queries)")
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
    products = select_products(listings, images_csv, images_dir, args.limit,
                               args.main_image_only)
    root = images_dir.resolve()

    def download(image: str) -> str | None:
        target = Path(image)
        if target.exists() and target.stat().st_size > 0:
            return None
        try:
            data = fetch(f"{base}/images/small/{target.relative_to(root).as_posix()}")
        except (urllib.error.URLError, OSError) as exc:
            return str(exc)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        return None

    wanted = list(dict.fromkeys(image for p in products for image in p.images))
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(args.workers) as pool, tqdm(
        total=len(wanted), desc="images", unit="img", file=sys.stderr
    ) as bar:
        for image, error in zip(wanted, pool.map(download, wanted), strict=True):
            bar.update(1)
            if error:
                failed[image] = error
    # A product whose main image failed is dropped; a failed extra photo only
    # leaves that photo out.
    kept = [p.with_images([i for i in p.images if i not in failed])
            for p in products if p.image not in failed]
    failures = [f"{p.id} {Path(i).name}: {failed[i]}" for p in products for i in p.images
                if i in failed]
    write_jsonl(kept, out / "catalog.jsonl", base_dir=out)
    print(f"wrote {len(kept)} products to {out / 'catalog.jsonl'}; {len(failures)} image "
          "downloads failed")
    for failure in failures[:20]:
        print(f"  failed {failure}", file=sys.stderr)
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
