"""An LRU cache of query vectors, so a repeated query skips the forward pass.

Why: on a CPU the query encoder is nearly the whole latency of a search, and a
shop's traffic is dominated by a few thousand repeated queries. The cache sits
in `SearchService.query_vector` (queries only: catalog images at ingest never
pass through it, so they cannot evict the shoppers' queries).

What makes a hit safe: the key holds the encoder's model id and prompt
template next to the query, so a vector is never returned for another model
or template, even if one cache were shared by two encoders. Texts are keyed
after `normalize_text` (NFC, whitespace collapsed), and the *normalized* text
is what gets encoded, so a hit returns exactly what a miss would have
computed. Images are keyed by the SHA-256 of their bytes (PIL images by their
mode, size and pixels).

Bounded twice: by entries and by bytes (vector bytes plus the key's text), the
least recently used entry going first. Vectors are stored read-only, so no
caller can alter what the next caller gets.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsearch import config

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.encoders import Encoder

# Rough per-entry bookkeeping (dict slot, tuple, array header) added to the
# vector and key bytes, so many tiny vectors cannot exceed the byte budget.
ENTRY_OVERHEAD_BYTES = 200

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The form a text query is keyed and encoded by: NFC, runs of whitespace as one space.

    Case is kept: CLIP's tokenizer lower-cases, but other families (SigLIP)
    do not, and a cache must not change what an encoder would answer.
    """
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def image_digest(image: bytes | Image.Image) -> str:
    """Content hash of a query image: its bytes, or a decoded image's mode, size and pixels."""
    digest = hashlib.sha256()
    if isinstance(image, bytes | bytearray | memoryview):
        digest.update(b"bytes:")
        digest.update(image)
    else:
        digest.update(f"pil:{image.mode}:{image.size}:".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    bytes: int
    max_entries: int
    max_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": self.entries,
                "bytes": self.bytes, "max_entries": self.max_entries,
                "max_bytes": self.max_bytes}


class QueryCache:
    """Thread-safe LRU of unit vectors, bounded by `max_entries` and `max_bytes`."""

    def __init__(self, max_entries: int = config.DEFAULT_QUERY_CACHE_ENTRIES,
                 max_bytes: int = config.DEFAULT_QUERY_CACHE_MB * 1024 * 1024) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a query cache needs max_entries >= 1 and max_bytes >= 1; "
                             "pass no cache at all to disable it")
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple[str, ...], tuple[np.ndarray, int]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, entries: int, megabytes: float) -> QueryCache | None:
        """The configured cache, or None when either bound is 0 (the documented off switch)."""
        if entries <= 0 or megabytes <= 0:
            return None
        return cls(entries, int(megabytes * 1024 * 1024))

    def get(self, key: tuple[str, ...]) -> np.ndarray | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item[0]

    def put(self, key: tuple[str, ...], vector: np.ndarray) -> np.ndarray:
        """Store a read-only copy and return it; an entry larger than the budget is not kept."""
        stored = np.array(vector, dtype=np.float32, copy=True)
        stored.setflags(write=False)
        size = stored.nbytes + sum(len(part) for part in key) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return stored
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (stored, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted
        return stored

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._items), self._bytes,
                              self.max_entries, self.max_bytes)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def text_key(encoder: Encoder, normalized: str) -> tuple[str, ...]:
    return ("text", encoder.model_id, encoder.prompt_template, normalized)


def image_key(encoder: Encoder, digest: str) -> tuple[str, ...]:
    # Images take no template, but the model still decides the vector.
    return ("image", encoder.model_id, "", digest)


def cached(cache: QueryCache | None, key: tuple[str, ...],
           compute: Callable[[], Any]) -> np.ndarray:
    """`cache[key]`, computing and storing it on a miss; `compute` alone without a cache."""
    if cache is None:
        return compute()
    vector = cache.get(key)
    if vector is None:
        vector = cache.put(key, compute())
    return vector
