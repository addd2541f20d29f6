"""Steps 4b and 5: bulk-load a new index version, then move the alias to it.

Readers never see a half-built index: documents go into `<alias>-vN`, which
no one queries, and only a finished version is published by the alias swap
(`OpenSearchIndex.publish`, one atomic `_aliases` call).

Each version records, in its mapping `_meta.bootstrap`, the fingerprint of
what it was built from and whether the load finished. That is how a re-run
recognises that the live index already holds this catalog (and writes
nothing), and finds its own unpublished leftovers (an interrupted load, a
refused publish) to drop them before building again.

During the load the version's refresh interval is -1: refreshing is what
makes documents searchable, nobody searches this index yet, and skipping it
is the standard bulk-load speed-up. Publishing refreshes once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsearch.bootstrap.accounting import META_FAILURES_LIMIT
from clipsearch.bootstrap.prepare import Failure
from clipsearch.catalog import Product
from clipsearch.errors import ConfigurationError
from clipsearch.index import IndexRecord
from clipsearch.index.opensearch import OpenSearchIndex

log = logging.getLogger(__name__)


@dataclass
class LoadResult:
    """The version written and what happened to each product."""

    index: str
    indexed: int = 0
    embedded: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0


def index_meta(index: OpenSearchIndex, name: str) -> dict[str, Any]:
    mapping = index.client.indices.get_mapping(index=name)
    return dict(next(iter(mapping.values()))["mappings"].get("_meta") or {})


def bootstrap_meta(index: OpenSearchIndex, name: str) -> dict[str, Any]:
    return dict(index_meta(index, name).get("bootstrap") or {})


def live_fingerprint(index: OpenSearchIndex) -> tuple[str | None, str | None]:
    """(the index behind the alias, the bootstrap fingerprint it was built from)."""
    current = index.current_index()
    if current is None:
        return None, None
    meta = bootstrap_meta(index, current)
    return current, meta.get("fingerprint") if meta.get("complete") else None


def check_alias_free(index: OpenSearchIndex) -> None:
    """A concrete index named like the alias would make every alias swap fail."""
    client = index.client
    if client.indices.exists(index=index.alias) and not client.indices.exists_alias(
            name=index.alias):
        raise ConfigurationError(
            f"OpenSearch has an index named {index.alias!r}, the name the alias needs. It was "
            "probably auto-created by a write before any bootstrap; delete it (DELETE "
            f"/{index.alias}) or choose another --index-alias", field="index_alias")


def drop_unpublished(index: OpenSearchIndex, fingerprint: str) -> list[str]:
    """Delete unpublished versions built from `fingerprint`; return their names.

    They are this bootstrap's own leftovers: a load that was interrupted, or
    one whose publish was refused. Rebuilding is simpler and safer than
    trusting a version nobody verified.
    """
    current = index.current_index()
    dropped = []
    for name in index.versions():
        if name != current and bootstrap_meta(index, name).get("fingerprint") == fingerprint:
            log.info("dropping %s: an unpublished load of this catalog", name)
            index.client.indices.delete(index=name)
            dropped.append(name)
    return dropped


def _set_meta(index: OpenSearchIndex, name: str, **bootstrap: Any) -> None:
    meta = index_meta(index, name)
    meta["bootstrap"] = {**(meta.get("bootstrap") or {}), **bootstrap}
    index.client.indices.put_mapping(index=name, body={"_meta": meta})


def load_version(
    index: OpenSearchIndex,
    batches: Iterable[tuple[list[tuple[Product, Mapping[str, np.ndarray]]], list[Failure]]],
    *,
    dimension: int,
    model_id: str | None,
    fingerprint: str,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Create the next version and fill it from `batches` of (product, keyed vectors).

    `batches` also carries the failures found while parsing, so they are
    counted in the same pass and the output is read once.
    """
    name = index.create_version(dimension, model=model_id)
    started = time.perf_counter()
    _set_meta(index, name, fingerprint=fingerprint, complete=False)
    index.client.indices.put_settings(index=name, body={"index": {"refresh_interval": "-1"}})
    staging = index.staging(name)
    result = LoadResult(index=name)
    for pairs, failures in batches:
        result.failures.extend(failures)
        result.embedded += len(pairs)
        if pairs:
            upserted = staging.upsert([IndexRecord(p, v) for p, v in pairs])
            result.indexed += upserted.indexed
            result.failures += [Failure(f.id, "index", f.reason) for f in upserted.failures]
        if progress is not None:
            progress(len(pairs) + len(failures))
    index.client.indices.put_settings(index=name, body={"index": {"refresh_interval": None}})
    index.client.indices.refresh(index=name)
    count = int(index.client.count(index=name)["count"])
    if count != result.indexed:
        raise ConfigurationError(f"{name} holds {count} documents but {result.indexed} were "
                                 "acknowledged; not publishing it")
    # The failures travel with the version, so a re-run that lost its state file (or
    # runs on another machine) can still say why a product is missing.
    _set_meta(index, name, complete=True, indexed=result.indexed,
              failed=len(result.failures), model=model_id,
              failures=[f.to_dict() for f in result.failures[:META_FAILURES_LIMIT]])
    result.seconds = time.perf_counter() - started
    return result
