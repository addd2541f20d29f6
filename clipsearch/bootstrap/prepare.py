"""Step 1: read the catalog, hash its images and decide where each one lives in S3.

Hashes come first because everything after depends on them: MD5 is what S3
reports as the ETag of a single-part upload (so unchanged objects are
skipped without a HEAD each), and SHA-256 identifies an image in the
fingerprints that name the transform run and the index version.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clipsearch import config
from clipsearch.bootstrap.options import CATALOG_PREFIX, IMAGES_PREFIX
from clipsearch.catalog import Product, read_catalog
from clipsearch.errors import ClipsearchError


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
    images: dict[str, ImageObject]  # product id -> its image
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)  # no image: not an error
    catalog_key: str = ""
    catalog_body: bytes = b""

    @property
    def uploads(self) -> list[ImageObject]:
        """Unique local images to put in the bucket, in a stable order."""
        unique = {img.key: img for img in self.images.values() if img.path is not None}
        return [unique[key] for key in sorted(unique)]

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

    local: dict[Path, list[Product]] = {}
    remote: dict[tuple[str, str], list[Product]] = {}
    kept: list[Product] = []
    for product in read.products:
        ref = product.image
        if ref is None:
            result.skipped.append(Failure(product.id, "catalog", "no image"))
            kept.append(product)
        elif ref.startswith("s3://"):
            parsed = urlparse(ref)
            key = parsed.path.lstrip("/")
            if not parsed.netloc or not key:
                result.failures.append(Failure(product.id, "catalog", f"bad S3 URI {ref!r}"))
                continue
            remote.setdefault((parsed.netloc, key), []).append(product)
            kept.append(product)
        elif "://" in ref:
            result.failures.append(Failure(
                product.id, "catalog", f"image {ref!r} is a URL; download it and point the "
                "catalog at the file (or at an s3:// object)"))
        else:
            local.setdefault(Path(ref), []).append(product)
            kept.append(product)

    dropped: set[str] = set()
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
        for product in owners:
            result.images[product.id] = obj
    for (src_bucket, key), outcome in heads.items():
        owners = remote[(src_bucket, key)]
        if isinstance(outcome, Exception):
            _drop(result, owners, dropped, f"cannot read s3://{src_bucket}/{key}: {outcome}")
            continue
        size, etag = outcome
        md5 = etag if len(etag) == 32 and "-" not in etag else None
        obj = ImageObject(src_bucket, key, size, md5, etag, None)
        for product in owners:
            result.images[product.id] = obj

    for product in kept:
        if product.id in dropped:
            continue
        image = result.images.get(product.id)
        result.products.append(replace(product, image=image.uri) if image else product)
    result.catalog_key = f"{catalog_prefix}{_catalog_name(catalog)}.jsonl"
    result.catalog_body = "".join(
        json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in result.products
    ).encode("utf-8")
    return result


def _catalog_name(catalog: Path) -> str:
    name = catalog.name if catalog.is_dir() else catalog.stem
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "catalog"


def _drop(result: PreparedCatalog, owners: list[Product], dropped: set[str], reason: str) -> None:
    for product in owners:
        dropped.add(product.id)
        result.failures.append(Failure(product.id, "prepare", reason))


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
