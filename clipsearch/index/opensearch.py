"""`VectorIndex` on OpenSearch's k-NN plugin (Amazon OpenSearch Service or a self-run node).

Design notes:
- Products live in versioned indexes (`products-v1`, `products-v2`, ...)
  behind an alias. Readers always go through the alias; a full reload
  builds a new version and swaps the alias atomically, so nobody ever sees
  a half-built index.
- A product is one document; its vectors (one per image, one for the title)
  are a `nested` list of `{key, vector}`, and a `nested` query with
  `score_mode: max` returns each product once, scored by its best vector
  (without `inner_hits`: see `_knn_body`). The alternative, one document per
  vector collapsed by product id, was measured on the real node
  (benchmarks/opensearch_layouts.py, docs/benchmarks.md): nested answered
  k=100 about 3x faster, bulk-loaded ~2.7x faster at the same store size,
  filters on product fields still returned k products, and a product
  stays one document (delete by id, lexical fields once, no collapse).
- The vector field is `knn_vector` with HNSW on the **Lucene** engine (faiss
  and nmslib need native libraries; Lucene is pure Java and supports
  efficient filtering inside the k-NN search) and `cosinesimil` space.
  Lucene reports `(1 + cos) / 2`, which is converted back so both backends
  return plain cosine similarity.
- Words: title, description and attribute values are `text` with the
  English analyzer (stemming, like FTS5's porter tokenizer locally), the id
  a keyword with a `words` subfield; `lexical` is a `most_fields`
  multi_match, BM25 summed over fields as FTS5 sums over columns. A hybrid
  search sends its k-NN and lexical queries in one `_msearch` and the
  service fuses them: the node we test on has no neural-search plugin (see
  docs/aws.md for switching to OpenSearch's own hybrid query).
- Attributes get types from dynamic templates (string -> keyword, any
  number -> double, boolean), matching LocalIndex's keyword/number/boolean.
- Bulk writes go through opensearch-py's `streaming_bulk` (429 retried with
  backoff by the helper; 5xx and timeouts retried by the transport), and
  per-document failures come back with OpenSearch's own reason.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from clipsearch.catalog import Product
from clipsearch.errors import ConfigurationError, ServiceUnavailableError
from clipsearch.filters import Condition, FieldType, Filters
from clipsearch.index import Hit, IndexRecord, RecordFailure, UpsertResult, main_vector
from clipsearch.index.text import attribute_text, query_terms

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_ALIAS = "products"
# HNSW parameters shipped with the mapping. Lucene's graph search explores
# `k` candidates per segment; `size` trims the answer back to what the caller
# asked for. Measured on 10k random 512-d unit vectors (the hardest case, see
# docs/benchmarks.md), m=16: 200 candidates gave recall@10 0.88, 400 gave
# 0.96, 800 gave 0.996; 512 keeps >= 0.95 with margin at ~the same latency.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
CANDIDATES = 512
# BM25 fields of `lexical` with their boosts; the same weights as LocalIndex's
# FTS5 columns (the title counts double).
LEXICAL_FIELDS = ("id.words", "title^2", "description", "attribute_words")
SCHEMA = 2
_NUMERIC_TYPES = {"double", "float", "long", "integer", "short", "byte", "half_float",
                  "scaled_float", "unsigned_long"}


def index_body(dimension: int, *, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
               shards: int = 1, replicas: int = 0, model: str | None = None) -> dict[str, Any]:
    """Settings and mapping of one product index version."""
    return {
        "settings": {"index": {"knn": True, "number_of_shards": shards,
                               "number_of_replicas": replicas}},
        "mappings": {
            "_meta": {"model": model, "dimension": dimension, "schema": SCHEMA},
            "dynamic": "strict",
            "properties": {
                "id": {"type": "keyword", "fields": {"words": {"type": "text"}}},
                "title": {"type": "text", "analyzer": "english",
                          "fields": {"raw": {"type": "keyword", "ignore_above": 512}}},
                "description": {"type": "text", "analyzer": "english"},
                "attribute_words": {"type": "text", "analyzer": "english"},
                "image": {"type": "keyword", "index": False},
                "images": {"type": "keyword", "index": False},
                "attributes": {"type": "object", "dynamic": True},
                "vectors": {"type": "nested", "properties": {
                    "key": {"type": "keyword"},
                    "vector": {
                        "type": "knn_vector",
                        "dimension": dimension,
                        "method": {"name": "hnsw", "engine": "lucene",
                                   "space_type": "cosinesimil",
                                   "parameters": {"m": m, "ef_construction": ef_construction}},
                    },
                }},
            },
            "dynamic_templates": [
                {"attr_strings": {"path_match": "attributes.*", "match_mapping_type": "string",
                                  "mapping": {"type": "keyword", "ignore_above": 1024}}},
                {"attr_longs": {"path_match": "attributes.*", "match_mapping_type": "long",
                                "mapping": {"type": "double"}}},
                {"attr_doubles": {"path_match": "attributes.*", "match_mapping_type": "double",
                                  "mapping": {"type": "double"}}},
                {"attr_bools": {"path_match": "attributes.*", "match_mapping_type": "boolean",
                                "mapping": {"type": "boolean"}}},
            ],
        },
    }


def make_client(url: str, *, aws_sigv4: bool = False, region: str | None = None,
                timeout: float = 30.0, max_retries: int = 3):
    """An OpenSearch client: no auth, basic auth (user:pass@ in the URL or
    CLIPSEARCH_OPENSEARCH_USER/PASSWORD), or AWS SigV4 for Amazon OpenSearch Service."""
    from urllib.parse import urlparse

    from opensearchpy import OpenSearch, RequestsHttpConnection

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"OpenSearch URL {url!r} must look like https://host[:port]")
    kwargs: dict[str, Any] = {
        "hosts": [{"host": parsed.hostname, "port": parsed.port or
                   (443 if parsed.scheme == "https" else 9200)}],
        "use_ssl": parsed.scheme == "https",
        "verify_certs": parsed.scheme == "https",
        "timeout": timeout,
        "max_retries": max_retries,
        "retry_on_timeout": True,
        "retry_on_status": (502, 503, 504),
        "connection_class": RequestsHttpConnection,
        "http_compress": True,
    }
    if aws_sigv4:
        import boto3
        from opensearchpy import AWSV4SignerAuth

        session = boto3.Session()
        credentials = session.get_credentials()
        if credentials is None:
            raise ConfigurationError("--aws-sigv4 needs AWS credentials (none found in the "
                                     "default boto3 chain)")
        region = region or session.region_name or os.environ.get("AWS_REGION")
        if not region:
            raise ConfigurationError("--aws-sigv4 needs a region (AWS_REGION)")
        kwargs["http_auth"] = AWSV4SignerAuth(credentials, region, "es")
    else:
        user = parsed.username or os.environ.get("CLIPSEARCH_OPENSEARCH_USER")
        password = parsed.password or os.environ.get("CLIPSEARCH_OPENSEARCH_PASSWORD")
        if user:
            kwargs["http_auth"] = (user, password or "")
    return OpenSearch(**kwargs)


def _unavailable_on_transport_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Connection failures and 5xx become ServiceUnavailableError (a 503 with Retry-After
    at the API edge, a one-line error in the CLI) instead of a client-library traceback."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import TransportError

        try:
            return method(*args, **kwargs)
        except OSConnectionError as exc:
            raise ServiceUnavailableError(f"cannot reach OpenSearch: {exc.info or exc}") from exc
        except TransportError as exc:
            if isinstance(exc.status_code, int) and (exc.status_code >= 500
                                                     or exc.status_code == 429):
                raise ServiceUnavailableError(
                    f"OpenSearch answered {exc.status_code}: {exc.error}") from exc
            raise

    return wrapper


class OpenSearchIndex:
    """Products behind an alias in OpenSearch; see the module docstring."""

    def __init__(
        self,
        client: Any,
        *,
        alias: str = DEFAULT_ALIAS,
        m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        candidates: int = CANDIDATES,
        chunk_size: int = 500,
        max_retries: int = 5,
        initial_backoff: float = 1.0,
        refresh_on_write: bool = False,
        write_index: str | None = None,
        replicas: int = 0,
    ) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", alias):
            raise ConfigurationError(f"alias {alias!r} must be lowercase letters, digits, - or _")
        self.client = client
        self.alias = alias
        self.m = m
        self.ef_construction = ef_construction
        self.candidates = candidates
        self.chunk_size = chunk_size
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.refresh_on_write = refresh_on_write
        # Writes go to the alias, or to an unpublished version during a rebuild.
        self.write_index = write_index
        # Copies of each shard beyond the primary, for versions this handle creates:
        # a multi-node (multi-AZ) domain needs one, or losing a node loses data.
        self.replicas = replicas

    @classmethod
    def from_url(cls, url: str, *, aws_sigv4: bool = False, region: str | None = None,
                 timeout: float = 30.0, **kwargs: Any) -> OpenSearchIndex:
        client = make_client(url, aws_sigv4=aws_sigv4, region=region, timeout=timeout)
        return cls(client, **kwargs)

    # ------------------------------------------------------------------ versions

    @property
    def target(self) -> str:
        return self.write_index or self.alias

    def versions(self) -> list[str]:
        """Existing version indexes of this alias, oldest first."""
        found = self.client.indices.get(index=f"{self.alias}-v*", ignore_unavailable=True,
                                        allow_no_indices=True)
        return sorted(found, key=_version_number)

    @_unavailable_on_transport_errors
    def current_index(self) -> str | None:
        if not self.client.indices.exists_alias(name=self.alias):
            return None
        names = list(self.client.indices.get_alias(name=self.alias))
        return names[0] if names else None

    @_unavailable_on_transport_errors
    def create_version(self, dimension: int, *, model: str | None = None,
                       published: bool = False) -> str:
        """Create the next `alias-vN` index and return its name.

        Unpublished by default (a rebuild fills it, then `publish` swaps the alias);
        `published` creates it with the alias already on it, in the one create call.
        """
        existing = self.versions()
        number = (_version_number(existing[-1]) + 1) if existing else 1
        name = f"{self.alias}-v{number}"
        body = index_body(dimension, m=self.m, ef_construction=self.ef_construction,
                          model=model, replicas=self.replicas)
        if published:
            body["aliases"] = {self.alias: {}}
        self.client.indices.create(index=name, body=body)
        return name

    @_unavailable_on_transport_errors
    def ensure(self, dimension: int, *, model: str | None = None) -> str:
        """Make sure the alias exists, creating v1 behind it if needed.

        The alias comes with the index creation rather than an `_aliases` call, so a
        writer that may create indexes (the ingest Lambda) needs no right to move
        aliases; of two concurrent first writers, the loser uses the winner's index.
        """
        from opensearchpy.exceptions import RequestError

        current = self.current_index()
        if current is None:
            try:
                current = self.create_version(dimension, model=model, published=True)
            except RequestError as exc:
                current = self.current_index()
                if "resource_already_exists" not in str(exc.error) or current is None:
                    raise
        return current

    @_unavailable_on_transport_errors
    def publish(self, index: str, *, delete_old: bool = True) -> str | None:
        """Point the alias at `index` in one atomic step; drop the previous version."""
        self.client.indices.refresh(index=index)
        old = self.current_index()
        actions: list[dict[str, Any]] = [{"add": {"index": index, "alias": self.alias}}]
        if old and old != index:
            actions.insert(0, {"remove": {"index": old, "alias": self.alias}})
        self.client.indices.update_aliases(body={"actions": actions})
        if delete_old and old and old != index:
            self.client.indices.delete(index=old)
        return old

    def staging(self, index: str) -> OpenSearchIndex:
        """A handle that writes into an unpublished version (for rebuilds)."""
        return OpenSearchIndex(self.client, alias=self.alias, m=self.m,
                               ef_construction=self.ef_construction, candidates=self.candidates,
                               chunk_size=self.chunk_size, max_retries=self.max_retries,
                               initial_backoff=self.initial_backoff,
                               refresh_on_write=self.refresh_on_write, write_index=index,
                               replicas=self.replicas)

    def _unless_missing(self, call: Callable[[], T], default: T) -> T:
        """Run a read against the target; an alias or index that does not exist yet
        answers 404, which means "empty". Asking first would cost every query two
        extra round trips (exists_alias + get_alias)."""
        from opensearchpy.exceptions import NotFoundError

        try:
            return call()
        except NotFoundError:
            return default

    @_unavailable_on_transport_errors
    def _mapping(self) -> dict[str, Any] | None:
        found = self._unless_missing(lambda: self.client.indices.get_mapping(index=self.target),
                                     None)
        return None if not found else next(iter(found.values()))["mappings"]

    @property
    def dimension(self) -> int | None:
        mapping = self._mapping()
        if mapping is None:
            return None
        props = mapping["properties"]
        if "vectors" not in props:
            raise ConfigurationError(
                f"{self.target} has the one-vector layout of schema 1; rebuild it "
                "(clipsearch bootstrap, or ingest into a new alias) to search it")
        return int(props["vectors"]["properties"]["vector"]["dimension"])

    @property
    def model(self) -> str | None:
        mapping = self._mapping()
        return (mapping or {}).get("_meta", {}).get("model")

    def set_model(self, model_id: str) -> None:
        mapping = self._mapping()
        if mapping is None:
            return
        meta = dict(mapping.get("_meta") or {}, model=model_id)
        self.client.indices.put_mapping(index=self.target, body={"_meta": meta})

    # ------------------------------------------------------------------ writes

    @_unavailable_on_transport_errors
    def upsert(self, records: Sequence[IndexRecord], *,
               expected: Mapping[str, tuple[int, int] | None] | None = None) -> UpsertResult:
        """Index (replace) each record's document.

        `expected` makes writes conditional, for read-modify-write callers
        (the ingest Lambda merges a product's stored vectors with new ones):
        id -> the `(_seq_no, _primary_term)` the caller read, or None for "did
        not exist". A document changed or created meanwhile is not written;
        it comes back as a failure with `conflict` set.
        """
        from opensearchpy import helpers

        result = UpsertResult()
        if not records:
            return result
        actions = []
        for record in records:
            vectors, reason = [], None if record.vectors else "no vectors"
            for key, raw in record.vectors.items():
                vector = np.asarray(raw, dtype=np.float64).reshape(-1)
                norm = float(np.linalg.norm(vector)) if np.all(np.isfinite(vector)) else None
                if norm is None or norm < 1e-6:
                    reason = (f"vector {key!r} " + ("holds NaN or infinity" if norm is None
                                                     else "is all zeros"))
                    break
                vectors.append({"key": key, "vector": (vector / norm).tolist()})
            if reason:
                result.failures.append(RecordFailure(record.product.id, reason))
                continue
            action: dict[str, Any] = {
                "_op_type": "index", "_index": self.target, "_id": record.product.id,
                "_source": {**_source(record.product), "vectors": vectors},
            }
            if expected is not None and record.product.id in expected:
                version = expected[record.product.id]
                if version is None:
                    action["_op_type"] = "create"
                else:
                    action["if_seq_no"], action["if_primary_term"] = version
            actions.append(action)
        if not actions:
            return result
        if self.write_index is None:
            self.ensure(len(actions[0]["_source"]["vectors"][0]["vector"]))
        for ok, item in self._bulk(helpers.streaming_bulk, actions):
            info = item.get("index") or item.get("create") or {}
            if ok:
                result.indexed += 1
            else:
                result.failures.append(RecordFailure(str(info.get("_id")), _reason(info),
                                                     conflict=info.get("status") == 409))
        if self.refresh_on_write:
            self.flush()
        return result

    def _bulk(self, helper, actions: Iterable[dict[str, Any]]):
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import TransportError

        try:
            yield from helper(
                self.client, actions, chunk_size=self.chunk_size, max_retries=self.max_retries,
                initial_backoff=self.initial_backoff, max_backoff=60, raise_on_error=False,
                raise_on_exception=False,
            )
        except (OSConnectionError, TransportError) as exc:
            raise ServiceUnavailableError(f"OpenSearch bulk request failed: {exc}") from exc

    @_unavailable_on_transport_errors
    def delete(self, ids: Sequence[str]) -> int:
        from opensearchpy import helpers

        if not ids or (self.write_index is None and self.current_index() is None):
            return 0
        actions = [{"_op_type": "delete", "_index": self.target, "_id": pid}
                   for pid in dict.fromkeys(ids)]
        removed = 0
        for ok, item in self._bulk(helpers.streaming_bulk, actions):
            info = item.get("delete", {})
            if ok and info.get("result") == "deleted":
                removed += 1
            elif info.get("status") != 404:
                log.warning("delete of %s failed: %s", info.get("_id"), _reason(info))
        if self.refresh_on_write:
            self.flush()
        return removed

    @_unavailable_on_transport_errors
    def flush(self) -> None:
        """Make writes visible to search (an OpenSearch refresh)."""
        if self.write_index is not None or self.current_index() is not None:
            self.client.indices.refresh(index=self.target)

    # ------------------------------------------------------------------ reads

    @_unavailable_on_transport_errors
    def count(self) -> int:
        return int(self._unless_missing(lambda: self.client.count(index=self.target),
                                        {"count": 0})["count"])

    @_unavailable_on_transport_errors
    def fields(self) -> Mapping[str, FieldType]:
        mapping = self._mapping() or {}
        props = mapping.get("properties", {}).get("attributes", {}).get("properties", {})
        out: dict[str, FieldType] = {}
        for name, spec in props.items():
            kind = spec.get("type")
            out[name] = ("number" if kind in _NUMERIC_TYPES else
                         "boolean" if kind == "boolean" else "keyword")
        return out

    def _get(self, product_id: str, **kwargs: Any) -> dict[str, Any] | None:
        # A missing document and a missing index both answer 404.
        found = self._unless_missing(
            lambda: self.client.get(index=self.target, id=product_id, **kwargs), None)
        return None if found is None else found["_source"]

    @_unavailable_on_transport_errors
    def get(self, product_id: str) -> Product | None:
        source = self._get(product_id, _source_excludes="vectors")
        return _product(source) if source else None

    @_unavailable_on_transport_errors
    def existing_ids(self, product_ids: Sequence[str], *, page: int = 1000) -> set[str]:
        """Which of `product_ids` the index holds: `_mget` without sources, a page at a time.

        Cheap enough to check a whole catalog (the bootstrap's accounting does).
        """
        found: set[str] = set()
        ids = list(product_ids)
        for start in range(0, len(ids), page):
            response = self._unless_missing(lambda s=start: self.client.mget(
                index=self.target, body={"ids": ids[s:s + page]}, _source=False), None)
            if response is None:
                return set()
            found.update(doc["_id"] for doc in response.get("docs", []) if doc.get("found"))
        return found

    @_unavailable_on_transport_errors
    def get_vectors(self, ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        found = self._unless_missing(lambda: self.client.mget(
            index=self.target, body={"ids": unique}, _source_includes="vectors"), {"docs": []})
        return {doc["_id"]: {v["key"]: np.asarray(v["vector"], dtype=np.float32)
                             for v in doc["_source"].get("vectors") or []}
                for doc in found["docs"] if doc.get("found")}

    @_unavailable_on_transport_errors
    def get_vector(self, product_id: str) -> np.ndarray | None:
        return main_vector(self.get_vectors([product_id]).get(product_id, {}))

    def _knn_body(self, vector: np.ndarray, k: int, filters: Filters,
                  exclude_ids: Sequence[str]) -> dict[str, Any]:
        knn: dict[str, Any] = {"vector": np.asarray(vector, dtype=np.float32).reshape(-1)
                               .tolist(), "k": max(k, self.candidates)}
        restrict = _restriction(filters, exclude_ids)
        if restrict:
            knn["filter"] = restrict
        # No `inner_hits` naming the matched vector: it costs a nested sub-search per
        # hit, and an explanation finds that vector from the page's stored ones.
        return {"size": k, "_source": {"excludes": ["vectors", "attribute_words"]},
                "query": {"nested": {
                    "path": "vectors", "score_mode": "max",
                    "query": {"knn": {"vectors.vector": knn}}}}}

    def _lexical_body(self, text: str, k: int, filters: Filters,
                      exclude_ids: Sequence[str]) -> dict[str, Any]:
        query: dict[str, Any] = {"bool": {"must": {"multi_match": {
            "query": " ".join(query_terms(text)), "fields": list(LEXICAL_FIELDS),
            "type": "most_fields", "operator": "or"}}}}
        restrict = _restriction(filters, exclude_ids)
        if restrict:
            query["bool"].update(restrict["bool"])
        return {"size": k, "_source": {"excludes": ["vectors", "attribute_words"]},
                "query": query, "sort": ["_score", {"id": "asc"}]}

    @_unavailable_on_transport_errors
    def knn(self, vector: np.ndarray, k: int, filters: Filters = (),
            exclude_ids: Sequence[str] = ()) -> list[Hit]:
        if k < 1:
            return []
        body = self._knn_body(vector, k, filters, exclude_ids)
        response = self._unless_missing(
            lambda: self.client.search(index=self.target, body=body), {"hits": {"hits": []}})
        return _knn_hits(response, k)

    @_unavailable_on_transport_errors
    def lexical(self, text: str, k: int, filters: Filters = (),
                exclude_ids: Sequence[str] = ()) -> list[Hit]:
        if k < 1 or not query_terms(text):
            return []
        body = self._lexical_body(text, k, filters, exclude_ids)
        response = self._unless_missing(
            lambda: self.client.search(index=self.target, body=body), {"hits": {"hits": []}})
        return _lexical_hits(response)

    @_unavailable_on_transport_errors
    def hybrid(self, vector: np.ndarray, text: str, k: int, filters: Filters = (),
               exclude_ids: Sequence[str] = ()) -> tuple[list[Hit], list[Hit]]:
        """Both lists in one `_msearch` round trip."""
        if k < 1:
            return [], []
        if not query_terms(text):
            return self.knn(vector, k, filters, exclude_ids), []
        lines = [{}, self._knn_body(vector, k, filters, exclude_ids),
                 {}, self._lexical_body(text, k, filters, exclude_ids)]
        response = self._unless_missing(
            lambda: self.client.msearch(index=self.target, body=lines), None)
        if response is None:
            return [], []
        answers = response["responses"]
        for answer in answers:
            error = answer.get("error")
            if error:
                if answer.get("status") == 404:
                    return [], []
                from opensearchpy.exceptions import TransportError

                raise TransportError(answer.get("status", 500), str(error), error)
        return _knn_hits(answers[0], k), _lexical_hits(answers[1])

    def describe(self) -> dict[str, Any]:
        return {"backend": "opensearch", "alias": self.alias, "index": self.current_index(),
                "count": self.count(), "dimension": self.dimension, "model": self.model,
                "fields": dict(self.fields())}


def filter_clause(cond: Condition) -> dict[str, Any]:
    """One parsed condition as an OpenSearch filter clause."""
    path = f"attributes.{cond.field}"
    if cond.is_range:
        return {"range": {path: cond.bounds()}}
    if len(cond.values) == 1:
        return {"term": {path: cond.values[0]}}
    return {"terms": {path: list(cond.values)}}


def _restriction(filters: Filters, exclude_ids: Sequence[str]) -> dict[str, Any] | None:
    """Filters and excluded ids as one bool query on the product document."""
    clauses = [filter_clause(cond) for cond in filters]
    if not clauses and not exclude_ids:
        return None
    restrict: dict[str, Any] = {"filter": clauses} if clauses else {}
    if exclude_ids:
        restrict["must_not"] = [{"ids": {"values": list(exclude_ids)}}]
    return {"bool": restrict}


def _knn_hits(response: Mapping[str, Any], k: int) -> list[Hit]:
    hits = []
    for hit in response["hits"]["hits"]:
        cosine = max(-1.0, min(1.0, 2.0 * float(hit["_score"]) - 1.0))
        hits.append(Hit(_product(hit["_source"]), cosine))
    hits.sort(key=lambda h: -h.score)
    return hits[:k]


def _lexical_hits(response: Mapping[str, Any]) -> list[Hit]:
    return [Hit(_product(hit["_source"]), float(hit["_score"]))
            for hit in response["hits"]["hits"]]


def _source(product: Product) -> dict[str, Any]:
    return {"id": product.id, "title": product.title, "image": product.image,
            "images": list(product.images), "description": product.description,
            "attribute_words": attribute_text(product),
            "attributes": {k: v for k, v in product.attributes.items()
                           if not (isinstance(v, float) and math.isnan(v))}}


def _product(source: Mapping[str, Any]) -> Product:
    return Product(id=source["id"], title=source["title"], image=source.get("image"),
                   attributes=dict(source.get("attributes") or {}),
                   images=tuple(source.get("images") or ()),
                   description=source.get("description"))


def _reason(info: Mapping[str, Any]) -> str:
    error = info.get("error")
    if isinstance(error, Mapping):
        reason = error.get("reason") or error.get("type") or "unknown error"
        cause = error.get("caused_by")
        if isinstance(cause, Mapping) and cause.get("reason"):
            reason = f"{reason}: {cause['reason']}"
        return f"{error.get('type', 'error')}: {reason}"
    return str(error or f"status {info.get('status')}")


def _version_number(name: str) -> int:
    match = re.search(r"-v(\d+)$", name)
    return int(match.group(1)) if match else 0
