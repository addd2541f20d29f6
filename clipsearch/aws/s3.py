"""The catalog bucket as the Lambdas see it: image keys, object reads, presigned URLs.

One canonical image reference: a product indexed on AWS stores its image as
`s3://<bucket>/<key>` with the key under the images prefix. Catalog files may
write it more loosely (see `resolve_image_key`); everything downstream (the
presigner, the image-to-product lookup) then compares exact keys.

Missing objects: the Lambda roles hold `s3:GetObject` on their prefixes but
not `s3:ListBucket`, and without ListBucket S3 answers a missing key with
403 AccessDenied instead of 404 NoSuchKey. Both therefore mean "not there"
here (logged, since a 403 can also be a broken policy).
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from typing import Any

from clipsearch import config
from clipsearch.catalog import Product
from clipsearch.errors import PayloadTooLargeError, ServiceUnavailableError, ValidationError

log = logging.getLogger(__name__)

ABSENT_CODES = frozenset({"NoSuchKey", "404", "NotFound", "AccessDenied", "403"})


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); ValueError for anything else."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"{uri!r} must look like s3://bucket/key")
    return bucket, key


@dataclass(frozen=True)
class ImageRef:
    """Where a catalog record's image lives in the bucket, or why it cannot be used."""

    key: str | None
    problem: str | None = None


def resolve_image_key(ref: str | None, *, bucket: str, images_prefix: str,
                      catalog_key: str) -> ImageRef:
    """Map a catalog record's `image` to a key under the images prefix.

    Accepted, for a record in `catalog/shop.jsonl` and images prefix `images/`:
    `s3://<bucket>/images/a.jpg`, `images/a.jpg` (from the bucket root),
    `a.jpg` or `sub/a.jpg` (relative to the images prefix) and `../images/a.jpg`
    (relative to the catalog file, as a local catalog folder is laid out).
    http(s) URLs and other buckets cannot be read by the ingest Lambda.
    """
    if not ref:
        return ImageRef(None, "the record has no image")
    if ref.startswith("s3://"):
        try:
            ref_bucket, key = split_s3_uri(ref)
        except ValueError as exc:
            return ImageRef(None, str(exc))
        if ref_bucket != bucket:
            return ImageRef(None, f"image {ref} is not in the catalog bucket {bucket}")
    elif "://" in ref:
        return ImageRef(None, f"image {ref} is a URL; upload it under "
                              f"s3://{bucket}/{images_prefix} to have it indexed")
    elif ref.startswith("../"):
        key = posixpath.normpath(posixpath.join(posixpath.dirname(catalog_key), ref))
    elif ".." in ref.split("/"):
        return ImageRef(None, f"image {ref!r} climbs out of its folder with '..'")
    else:
        key = posixpath.normpath(ref.lstrip("/"))
        if not key.startswith(images_prefix):
            key = images_prefix + key
    key = posixpath.normpath(key)
    if not key.startswith(images_prefix) or ".." in key.split("/"):
        return ImageRef(None, f"image {ref!r} resolves to {key!r}, outside {images_prefix}")
    return ImageRef(key)


class Bucket:
    """Reads from the catalog bucket with the size caps and error mapping the Lambdas need."""

    def __init__(self, client: Any, name: str, *, images_prefix: str) -> None:
        self.client = client
        self.name = name
        self.images_prefix = images_prefix

    def get(self, key: str, *, max_bytes: int) -> bytes | None:
        """The object's bytes, or None when it does not exist (see module docstring).

        Larger than `max_bytes`: PayloadTooLargeError, without reading the body.
        S3 throttling or outages: ServiceUnavailableError (worth a retry).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ABSENT_CODES:
                if code in ("AccessDenied", "403"):
                    log.info("s3://%s/%s: access denied, taken as absent (no ListBucket)",
                             self.name, key)
                return None
            raise ServiceUnavailableError(f"S3 GetObject s3://{self.name}/{key} failed: "
                                          f"{code or exc}") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailableError(f"S3 GetObject s3://{self.name}/{key} failed: "
                                          f"{exc}") from exc
        body = response["Body"]
        try:
            size = int(response.get("ContentLength") or 0)
            if size > max_bytes:
                raise PayloadTooLargeError(
                    f"s3://{self.name}/{key} is {size:,} bytes; the limit is {max_bytes:,}")
            data = body.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise PayloadTooLargeError(
                    f"s3://{self.name}/{key} is over the limit of {max_bytes:,} bytes")
            return data
        except BotoCoreError as exc:
            raise ServiceUnavailableError(f"reading s3://{self.name}/{key} failed: "
                                          f"{exc}") from exc
        finally:
            body.close()

    def query_image(self, ref: str) -> bytes:
        """`image_s3_key` of a search request: a key (or s3:// URI) under the images prefix.

        Only images/ is readable by the query role, so anything else is a 400
        naming the field rather than an AccessDenied from S3. The messages quote
        the client's key, never the bucket's name (it is ours, not theirs).
        """
        key = ref.strip()
        if key.startswith("s3://"):
            try:
                bucket, key = split_s3_uri(key)
            except ValueError as exc:
                raise ValidationError(str(exc), field="image_s3_key") from None
            if bucket != self.name:
                raise ValidationError("image_s3_key must be in the catalog bucket",
                                      field="image_s3_key")
        normal = posixpath.normpath(key) if key else key
        if not key or normal != key or not key.startswith(self.images_prefix):
            raise ValidationError(f"image_s3_key must be a key under {self.images_prefix}, "
                                  f"like {self.images_prefix}shoe.jpg", field="image_s3_key")
        try:
            data = self.get(key, max_bytes=config.MAX_IMAGE_BYTES)
        except PayloadTooLargeError:
            raise PayloadTooLargeError(
                f"image {key!r} is larger than {config.MAX_IMAGE_BYTES:,} bytes",
                field="image_s3_key") from None
        if data is None:
            raise ValidationError(f"no image at {key!r}", field="image_s3_key")
        if not data:
            raise ValidationError(f"image {key!r} is empty", field="image_s3_key")
        return data


class Presigner:
    """`ImageUrl` for the API: a short-lived presigned GET for images in the bucket.

    Presigning is a local HMAC computation (no request to S3), so doing it for
    every result costs microseconds. Images elsewhere: http(s) URLs are returned
    as they are (as the local server does); anything else has no URL (null).
    """

    def __init__(self, client: Any, bucket: str, *, images_prefix: str, ttl: int) -> None:
        self.client = client
        self.bucket = bucket
        self.images_prefix = images_prefix
        self.ttl = ttl

    def __call__(self, product: Product, n: int = 0) -> str | None:
        image = product.images[n] if 0 <= n < len(product.images) else None
        if not image:
            return None
        if image.startswith(("https://", "http://")):
            return image
        if image.startswith("s3://"):
            try:
                bucket, key = split_s3_uri(image)
            except ValueError:
                return None
            if bucket != self.bucket:
                return None
        else:
            key = image
        if not key.startswith(self.images_prefix) or ".." in key.split("/"):
            return None
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.ttl)
