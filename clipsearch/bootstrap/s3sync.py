"""Parallel S3 uploads that skip objects already there with the same bytes.

Why compare against a listing rather than HEAD each object: a listing returns
1,000 keys with their sizes and ETags per request, and for a single-part
upload under SSE-S3 (the stack's bucket) the ETag is the MD5 of the bytes. So
a re-run over 100,000 unchanged images costs ~100 requests, not 100,000.
Objects whose ETag is not an MD5 (multipart uploads) fall back to a HEAD and
the `sha256` metadata every upload here carries.

Each upload sends Content-MD5, so S3 itself rejects a corrupted transfer.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.errors import ConfigurationError


@dataclass
class UploadItem:
    """One object to put: from a file, from bytes, or from bytes built on demand."""

    key: str
    content_type: str
    path: Path | None = None
    data: bytes | Callable[[], bytes] | None = None
    md5: str | None = None  # hex, when known without reading the data
    size: int | None = None

    def load(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        if callable(self.data):
            return self.data()
        if self.data is None:
            raise ValueError(f"{self.key}: nothing to upload")
        return self.data


@dataclass
class SyncResult:
    """What happened to each key: uploaded, unchanged, or failed with a reason."""

    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    bytes_uploaded: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"uploaded": len(self.uploaded), "unchanged": len(self.unchanged),
                "failed": len(self.failures), "bytes_uploaded": self.bytes_uploaded}


def listing_prefixes(keys: Iterable[str]) -> list[str]:
    """The tightest prefixes covering `keys`: one per top-level folder."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(key.split("/", 1)[0], []).append(key)
    # Character-wise on purpose: S3 prefixes are strings, not path components.
    return sorted(os.path.commonprefix(members)  # noqa: RUF071
                  for members in groups.values())


def list_objects(s3: Any, bucket: str, prefixes: Iterable[str]) -> dict[str, tuple[int, str]]:
    """key -> (size, ETag without quotes) for every object under the prefixes."""
    from botocore.exceptions import ClientError

    found: dict[str, tuple[int, str]] = {}
    paginator = s3.get_paginator("list_objects_v2")
    try:
        for prefix in prefixes:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents") or []:
                    found[obj["Key"]] = (int(obj["Size"]), str(obj["ETag"]).strip('"'))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") in ("NoSuchBucket", "AccessDenied", "403", "404"):
            raise ConfigurationError(f"cannot list s3://{bucket}: {error.get('Code')} "
                                     f"({error.get('Message', '')})", field="bucket") from None
        raise
    return found


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def sync_objects(
    s3: Any,
    bucket: str,
    items: list[UploadItem],
    *,
    workers: int = 16,
    existing: dict[str, tuple[int, str]] | None = None,
    on_done: Callable[[UploadItem, str], None] | None = None,
) -> SyncResult:
    """Upload what differs, in parallel; one failed object never stops the others.

    `existing` is a listing to compare against (fetched here when None).
    `on_done(item, outcome)` is called once per item ("uploaded",
    "unchanged" or "failed"), from the calling thread, for progress bars.
    """
    result = SyncResult()
    if not items:
        return result
    if existing is None:
        existing = list_objects(s3, bucket, listing_prefixes(i.key for i in items))

    def one(item: UploadItem) -> tuple[str, int]:
        listed = existing.get(item.key)
        if listed and item.md5 and _same(listed, item.md5, item.size):
            return "unchanged", 0
        body = item.load()
        md5 = md5_hex(body)
        sha256 = hashlib.sha256(body).hexdigest()
        if listed and (_same(listed, md5, len(body)) or _same_by_metadata(s3, bucket, item.key,
                                                                         listed, sha256)):
            return "unchanged", 0
        s3.put_object(Bucket=bucket, Key=item.key, Body=body, ContentType=item.content_type,
                      ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode("ascii"),
                      Metadata={"sha256": sha256})
        return "uploaded", len(body)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, item): item for item in items}
        for future in as_completed(futures):
            item = futures[future]
            try:
                outcome, size = future.result()
            except Exception as exc:  # reported per key; the caller maps keys to products
                result.failures[item.key] = _reason(exc)
                outcome = "failed"
            else:
                if outcome == "uploaded":
                    result.uploaded.append(item.key)
                    result.bytes_uploaded += size
                else:
                    result.unchanged.append(item.key)
            if on_done is not None:
                on_done(item, outcome)
    result.uploaded.sort()
    result.unchanged.sort()
    return result


def _same(listed: tuple[int, str], md5: str, size: int | None) -> bool:
    listed_size, etag = listed
    return etag == md5 and (size is None or size == listed_size)


def _same_by_metadata(s3: Any, bucket: str, key: str, listed: tuple[int, str],
                      sha256: str) -> bool:
    """Multipart ETags are not MD5s: trust the sha256 metadata this module writes."""
    if "-" not in listed[1]:
        return False
    head = s3.head_object(Bucket=bucket, Key=key)
    return head.get("Metadata", {}).get("sha256") == sha256


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        error = response["Error"]
        return f"{error.get('Code')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
