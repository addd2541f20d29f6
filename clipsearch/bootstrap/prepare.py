"""Step 1: read the catalog, hash its images and decide where each one lives in S3.

Hashes come first because everything after depends on them: MD5 is what S3
reports as the ETag of a single-part upload (so unchanged objects are
skipped without a HEAD each), and SHA-256 identifies an image in the
fingerprints that name the transform run and the index version.

A product becomes several transform records, each with its own record id
(`record_id`): its main image (the product id itself, so a single-image
catalog's records are what they always were), each further image
(`<id>#1`, `<id>#2`, ...) and its title (`<id>#title`). `#` never occurs in a
product id, so `product_of` maps every record back to its product.

Object keys follow the catalog's own layout: `images/foo.jpg` next to the
catalog becomes `images/foo.jpg` in the bucket, ABO's `images/small/ab/x.jpg`
keeps its path. A file outside the catalog folder gets a content-addressed
key (`images/external/<sha256[:16]>/<name>`), so two such files with one name
cannot overwrite each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clipsearch import config
from clipsearch.bootstrap.options import CATALOG_PREFIX, IMAGES_PREFIX
from clipsearch.catalog import Product, read_catalog
from clipsearch.errors import ClipsearchError

TITLE_SLOT = "title"


def record_id(product_id: str, slot: int | str) -> str:
    """The transform record of one image (`slot` its position) or of the title."""
    return product_id if slot == 0 else f"{product_id}#{slot}"


def product_of(record: str) -> str:
    """The product a transform record belongs to."""
    return record.split("#", 1)[0]


def is_title_record(record: str) -> bool:
    return record.endswith("#" + TITLE_SLOT)


@dataclass(frozen=True)
class Failure:
    """One product that did not make it, the step that dropped it, and why."""

    id: str
    step: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "step": self.step, "reason": self.reason}


@dataclass(frozen=True)
class ImageObject:
    """A product image as an S3 object: where it is (or will be) and its identity."""

    bucket: str
    key: str
    size: int
    md5: str | None  # hex; None for an S3 object whose ETag is not an MD5
    etag: str  # the MD5 for local files, S3's ETag for images already in S3
    path: Path | None = None  # the local file to upload; None when already in S3

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class PreparedCatalog:
    """The validated catalog, its images as S3 objects, and what was dropped already."""

    source: Path
    products: list[Product]  # valid records, images rewritten to s3:// URIs
    images: dict[str, ImageObject]  # image record id (see `record_id`) -> the image
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)
    # Images left out of a product that is indexed with the rest (by record id).
    left_out: list[Failure] = field(default_factory=list)
    catalog_key: str = ""
    catalog_body: bytes = b""

    @property
    def uploads(self) -> list[ImageObject]:
        """Unique local images to put in the bucket, in a stable order."""
        unique = {img.key: img for img in self.images.values() if img.path is not None}
        return [unique[key] for key in sorted(unique)]

    def titles(self) -> dict[str, str]:
        """Title record id -> the title: every product's title gets a vector."""
        return {record_id(p.id, TITLE_SLOT): p.title for p in self.products}

    def metadata_digest(self) -> str:
        """SHA-256 of everything the index stores besides the vectors."""
        digest = hashlib.sha256()
        for product in sorted(self.products, key=lambda p: p.id):
            digest.update(json.dumps(product.to_dict(), sort_keys=True,
                                     ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()


def _hash_file(path: Path, check: Callable[[bytes], None] | None) -> tuple[int, str, str]:
    # Regular files only, size-checked before reading (a FIFO or /dev/zero is refused).
    from clipsearch.service import read_local_image

    data = read_local_image(str(path))
    if check is not None:
        check(data)
    return len(data), hashlib.md5(data, usedforsecurity=False).hexdigest(), \
        hashlib.sha256(data).hexdigest()


def check_decodable(data: bytes) -> None:
    """Raise unless the endpoint's own decoder accepts the image (formats, pixel bounds),
    so a transform job never receives an image its handler would refuse."""
    from clipsearch.images import load_image

    try:
        load_image(data)
    except ClipsearchError as exc:
        raise ValueError(f"not a decodable image: {exc.message}") from None


def image_key(path: Path, base_dir: Path, sha256: str, images_prefix: str = IMAGES_PREFIX) -> str:
    """The object key of a local image (see the module docstring)."""
    try:
        relative = path.resolve().relative_to(base_dir.resolve()).as_posix()
    except ValueError:
        return f"{images_prefix}external/{sha256[:16]}/{path.name}"
    head = images_prefix.rstrip("/") + "/"
    if relative.startswith(head):
        relative = relative[len(head):]
    return images_prefix + relative


def prepare_catalog(
    catalog: Path,
    bucket: str,
    *,
    s3: Any = None,
    workers: int = 8,
    check_images: bool = False,
    images_prefix: str = IMAGES_PREFIX,
    catalog_prefix: str = CATALOG_PREFIX,
) -> PreparedCatalog:
    """Read, validate and hash; nothing is written anywhere.

    `check_images` verifies every local image decodes (SingleRecord mode,
    where one corrupt image fails the whole SageMaker job). `s3` is needed
    only when the catalog names images already in S3 (a HEAD each).
    """
    catalog = Path(catalog)
    read = read_catalog(catalog)
    base_dir = catalog if catalog.is_dir() else catalog.resolve().parent
    result = PreparedCatalog(source=catalog, products=[], images={})
    for err in read.errors:
        who = err.product_id or f"{Path(err.source).name}:{err.line}"
        result.failures.append(Failure(who, "catalog", err.message))

    # An image's owners are (product, record id) pairs: one file may serve several.
    local: dict[Path, list[tuple[Product, str]]] = {}
    remote: dict[tuple[str, str], list[tuple[Product, str]]] = {}
    kept: list[Product] = []
    dropped: set[str] = set()
    for product in read.products:
        for slot, ref in enumerate(product.images):
            owner = (product, record_id(product.id, slot))
            problem = None
            if ref.startswith("s3://"):
                parsed = urlparse(ref)
                key = parsed.path.lstrip("/")
                if parsed.netloc and key:
                    remote.setdefault((parsed.netloc, key), []).append(owner)
                else:
                    problem = f"bad S3 URI {ref!r}"
            elif "://" in ref:
                problem = (f"image {ref!r} is a URL; download it and point the catalog at the "
                           "file (or at an s3:// object)")
            else:
                local.setdefault(Path(ref), []).append(owner)
            if problem is not None:
                _drop(result, [owner], dropped, problem, step="catalog")
        kept.append(product)

    check = check_decodable if check_images else None
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        hashed = dict(zip(local, pool.map(lambda p: _try(_hash_file, p, check), local),
                          strict=True))
        heads = dict(zip(remote, pool.map(lambda bk: _try(_head, s3, *bk), remote), strict=True))
    for path, outcome in hashed.items():
        owners = local[path]
        if isinstance(outcome, Exception):
            reason = (f"image file {path} not found" if isinstance(outcome, FileNotFoundError)
                      else outcome.message if isinstance(outcome, ClipsearchError)
                      else f"cannot read image {path}: {outcome}")
            _drop(result, owners, dropped, reason)
            continue
        size, md5, sha256 = outcome
        if size > config.MAX_IMAGE_BYTES:
            _drop(result, owners, dropped, f"image is {size:,} bytes; the model accepts at most "
                  f"{config.MAX_IMAGE_BYTES:,}")
            continue
        if size == 0:
            _drop(result, owners, dropped, "image file is empty")
            continue
        obj = ImageObject(bucket, image_key(path, base_dir, sha256, images_prefix), size, md5,
                          md5, path)
        for _product, rid in owners:
            result.images[rid] = obj
    for (src_bucket, key), outcome in heads.items():
        owners = remote[(src_bucket, key)]
        if isinstance(outcome, Exception):
            _drop(result, owners, dropped, f"cannot read s3://{src_bucket}/{key}: {outcome}")
            continue
        size, etag = outcome
        md5 = etag if len(etag) == 32 and "-" not in etag else None
        obj = ImageObject(src_bucket, key, size, md5, etag, None)
        for _product, rid in owners:
            result.images[rid] = obj

    # A failed product's other images are neither uploaded nor embedded.
    result.images = {rid: img for rid, img in result.images.items()
                     if product_of(rid) not in dropped}
    for product in kept:
        if product.id in dropped:
            continue
        rids = [record_id(product.id, slot) for slot in range(len(product.images))]
        result.products.append(product.with_images(
            [result.images[rid].uri for rid in rids if rid in result.images]))
    result.catalog_key = f"{catalog_prefix}{_catalog_name(catalog)}.jsonl"
    result.catalog_body = "".join(
        json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in result.products
    ).encode("utf-8")
    return result


def _catalog_name(catalog: Path) -> str:
    name = catalog.name if catalog.is_dir() else catalog.stem
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "catalog"


def _drop(result: PreparedCatalog, owners: list[tuple[Product, str]], dropped: set[str],
          reason: str, *, step: str = "prepare") -> None:
    """An unusable image: its product fails if it is the main one (as a local ingest
    fails it); a further image is left out and the product indexed with the rest."""
    for product, rid in owners:
        if rid == product.id:
            dropped.add(product.id)
            result.failures.append(Failure(product.id, step, reason))
        else:
            result.left_out.append(Failure(rid, step, reason))


def _head(s3: Any, bucket: str, key: str) -> tuple[int, str]:
    if s3 is None:
        raise ValueError("no S3 client to read it with")
    head = s3.head_object(Bucket=bucket, Key=key)
    return int(head["ContentLength"]), str(head["ETag"]).strip('"')


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    """Run in the pool; an exception becomes the value so one bad file fails alone."""
    try:
        return fn(*args)
    except Exception as exc:  # per-image failure, reported with its product ids
        return exc
