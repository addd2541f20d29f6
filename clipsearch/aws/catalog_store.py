"""Catalog records kept in OpenSearch so an image upload can find its product.

The problem: an `images/*` upload event names only the image key. The product
id, title and attributes are in some catalog file, possibly uploaded long
before, and the image may even arrive before its catalog. The product index
cannot answer "which products use this image?" (its `image` field is not
indexed, and it holds only products that already have a vector).

The design: every valid record of every `catalog/*.jsonl` file is stored in a
small plain index next to the product alias, `<alias>-catalog` (for example
`products-catalog`), one document per product id:

    {"id": ..., "image_key": ["images/a.jpg", "images/a-back.jpg"], "source":
     "catalog/shop.jsonl", "line": 12, "product": {id, title, image, images,
     attributes, description}}

- `image_key` (keyword, one value per image of the product, main first; a
  single string in records written before products had several images)
  answers "which products use this image" with a terms query;
- `source` (keyword) answers "which products came from this catalog file", for
  deleting products when their catalog file is deleted or no longer lists them;
- `product` is stored, not indexed (`enabled: false`): no mapping conflicts
  and no field explosion whatever the attributes are.

Why OpenSearch and not a mapping object in S3: the Lambdas already hold write
access to the domain, whereas writing S3 would need new permissions, a prefix
that does not notify the queue, and read-modify-write of shared objects that
concurrent invocations would race on. Here every write is a per-id upsert, so
processing the same event twice, or two events concurrently, ends in the same
state. Writes use `refresh=wait_for`, so a lookup made after a write returns
(by this or a concurrent invocation) sees it.

The index name does not match the `<alias>-v*` pattern of product versions, so
rebuilds of the product index (the bootstrap's alias swap) never touch it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clipsearch.catalog import Product
from clipsearch.index import RecordFailure
from clipsearch.index.opensearch import _unavailable_on_transport_errors

log = logging.getLogger(__name__)


MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": {"type": "keyword"},
        "image_key": {"type": "keyword"},
        "source": {"type": "keyword"},
        "line": {"type": "integer"},
        "product": {"type": "object", "enabled": False},
    },
}


def mapping(replicas: int = 0) -> dict[str, Any]:
    """Settings and mapping of the catalog index; `replicas` as for the product versions."""
    return {"settings": {"index": {"number_of_shards": 1, "number_of_replicas": replicas}},
            "mappings": MAPPINGS}


PAGE = 1000


@dataclass(frozen=True)
class CatalogRecord:
    """One product as its catalog file declares it, with its images resolved to keys.

    `image_keys` holds the bucket key of each usable image, in the order of
    `product.images` (whose entries are their `s3://` URIs); images that can
    never be read (another bucket, a URL) are in neither.
    """

    product: Product
    image_keys: tuple[str, ...]
    source: str
    line: int | None = None

    def to_source(self) -> dict[str, Any]:
        return {"id": self.product.id, "image_key": list(self.image_keys),
                "source": self.source, "line": self.line, "product": self.product.to_dict()}

    @classmethod
    def from_source(cls, doc: dict[str, Any]) -> CatalogRecord:
        raw = doc["product"]
        product = Product(id=raw["id"], title=raw["title"], image=raw.get("image"),
                          images=tuple(raw.get("images") or ()),
                          attributes=dict(raw.get("attributes") or {}),
                          description=raw.get("description"))
        keys = doc.get("image_key")
        keys = [keys] if isinstance(keys, str) else list(keys or ())
        return cls(product, tuple(keys), doc["source"], doc.get("line"))


class CatalogStore:
    """The `<alias>-catalog` index: see the module docstring."""

    def __init__(self, client: Any, alias: str, *, replicas: int = 0) -> None:
        self.client = client
        self.name = f"{alias}-catalog"
        self.replicas = replicas
        self._ready = False

    @_unavailable_on_transport_errors
    def ensure(self) -> None:
        """Create the index on first use (idempotent, safe under concurrency)."""
        if self._ready:
            return
        if not self.client.indices.exists(index=self.name):
            from opensearchpy.exceptions import RequestError

            try:
                self.client.indices.create(index=self.name, body=mapping(self.replicas))
            except RequestError as exc:
                if "resource_already_exists_exception" not in str(exc.error):
                    raise
        self._ready = True

    @_unavailable_on_transport_errors
    def put(self, records: Sequence[CatalogRecord]) -> list[RecordFailure]:
        """Upsert records by product id; returns the ones OpenSearch rejected."""
        if not records:
            return []
        self.ensure()
        body: list[dict[str, Any]] = []
        for record in records:
            body.append({"index": {"_index": self.name, "_id": record.product.id}})
            body.append(record.to_source())
        return self._bulk(body, "index")

    @_unavailable_on_transport_errors
    def delete(self, product_ids: Iterable[str]) -> list[RecordFailure]:
        ids = list(dict.fromkeys(product_ids))
        if not ids:
            return []
        self.ensure()
        body = [{"delete": {"_index": self.name, "_id": pid}} for pid in ids]
        return self._bulk(body, "delete")

    def _bulk(self, body: list[dict[str, Any]], op: str) -> list[RecordFailure]:
        """Send `body` (action lines, each followed by its document for `index`) in pages."""
        lines_per_action = 2 if op == "index" else 1
        page = PAGE * lines_per_action
        failures: list[RecordFailure] = []
        for start in range(0, len(body), page):
            response = self.client.bulk(body=body[start:start + page], refresh="wait_for")
            if not response.get("errors"):
                continue
            for item in response.get("items", []):
                info = item.get(op, {})
                status = int(info.get("status") or 0)
                if status >= 300 and not (op == "delete" and status == 404):
                    failures.append(RecordFailure(str(info.get("_id")),
                                                  str(info.get("error") or status)))
        return failures

    @_unavailable_on_transport_errors
    def by_image_keys(self, keys: Iterable[str]) -> dict[str, list[CatalogRecord]]:
        """Image key -> the records that use it (every key present, maybe empty)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, list[CatalogRecord]] = {key: [] for key in wanted}
        for start in range(0, len(wanted), PAGE):
            terms = wanted[start:start + PAGE]
            for record in self._scan({"terms": {"image_key": terms}}):
                for key in record.image_keys:
                    if key in found:
                        found[key].append(record)
        return found

    @_unavailable_on_transport_errors
    def by_source(self, source: str) -> list[CatalogRecord]:
        return list(self._scan({"term": {"source": source}}))

    def _exists(self) -> bool:
        if self._ready:
            return True
        return bool(self.client.indices.exists(index=self.name))

    def _scan(self, query: dict[str, Any]) -> Iterable[CatalogRecord]:
        """Every matching record, paged with search_after on the id (no scroll contexts)."""
        if not self._exists():
            return
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {"size": PAGE, "query": {"bool": {"filter": [query]}},
                                    "sort": [{"id": "asc"}]}
            if after is not None:
                body["search_after"] = after
            hits = self.client.search(index=self.name, body=body)["hits"]["hits"]
            for hit in hits:
                yield CatalogRecord.from_source(hit["_source"])
            if len(hits) < PAGE:
                return
            after = hits[-1]["sort"]
