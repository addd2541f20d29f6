"""Vector indexes: where product vectors, lexical fields and metadata live.

`LocalIndex` (embedded: SQLite plus numpy/faiss, FTS5 for words) and
`OpenSearchIndex` (Amazon OpenSearch Service or a self-run node) implement
`VectorIndex`. One contract test suite runs against both, so the search
service can treat them as interchangeable.

Why a product holds several named vectors: a product photographed from three
angles should be found from any of them, and its title's meaning is a signal
of its own. Each vector has a key saying where it came from (`"title"`, or
`"image:<ref>"` for one image), so

- a search returns *products*, each once, scored by its best-matching vector
  (an explanation names that vector: the service compares the query with the
  page's stored vectors, so no backend has to report it with every hit);
- one image removed from a product (an S3 delete) removes exactly its vector:
  the caller reads the product's vectors with `get_vectors`, drops that key and
  upserts the rest, without re-encoding anything.

Ranking by words (`lexical`) lives in the index too, because each backend has
its own full-text engine (SQLite FTS5, Lucene) and both score with BM25.
Fusing the vector and lexical lists is *not* the index's job: the service
does it once for every backend (`clipsearch.fusion`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from clipsearch.catalog import Product
from clipsearch.filters import FieldType, Filters

if TYPE_CHECKING:
    import numpy as np

TITLE_KEY = "title"
IMAGE_KEY_PREFIX = "image:"


def image_vector_key(ref: str | None) -> str:
    """The vector key of one image; the image reference itself identifies it."""
    return IMAGE_KEY_PREFIX + (ref or "")


def is_image_key(key: str) -> bool:
    return key.startswith(IMAGE_KEY_PREFIX)


def key_kind(key: str) -> str:
    """'image' or 'title': the signal a vector belongs to."""
    return "image" if is_image_key(key) else TITLE_KEY


def main_vector(vectors: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The vector that stands for the product as a query ("more like this").

    The first image vector (vectors are kept in record order, main image
    first), else the title vector: an image-to-image neighbour search is what
    "looks like this" means, and the title only speaks when there is no image.
    """
    for key, vector in vectors.items():
        if is_image_key(key):
            return vector
    return next(iter(vectors.values()), None)


def product_vectors(images: Iterable[tuple[str, np.ndarray]],
                    title: np.ndarray | None) -> dict[str, np.ndarray]:
    """The keyed vectors of one product, in the order `main_vector` relies on.

    `images` are (image reference, vector) pairs in catalog order, main image
    first; `title` is the title's text vector. Every writer (local ingest, the
    ingest Lambda, the bootstrap) builds its records here, so the keys of one
    product are the same whichever runtime wrote them, and the ingest Lambda
    can reuse or drop one image's vector that another runtime stored.
    """
    vectors = {image_vector_key(ref): vector for ref, vector in images}
    if title is not None:
        vectors[TITLE_KEY] = title
    return vectors


@dataclass(frozen=True)
class IndexRecord:
    """A product and the vectors it is found by, keyed as described above.

    `vectors` may also be one array: callers that only know one vector per
    product (older code, benchmarks) then index it as the main image's vector.
    Order matters: the main image's vector first, so `main_vector` finds it.
    """

    product: Product
    vectors: Any  # Mapping[str, np.ndarray] after __post_init__

    def __post_init__(self) -> None:
        vectors = self.vectors
        if not isinstance(vectors, Mapping):
            vectors = {image_vector_key(self.product.image): vectors}
        object.__setattr__(self, "vectors", dict(vectors))


@dataclass(frozen=True)
class Hit:
    """A product and its score; for vector search the cosine similarity in [-1, 1] of
    its best vector, for lexical search its BM25 score (> 0)."""

    product: Product
    score: float


@dataclass(frozen=True)
class RecordFailure:
    id: str
    reason: str
    conflict: bool = False  # a conditional write found the document changed (OpenSearch 409)


@dataclass
class UpsertResult:
    indexed: int = 0
    failures: list[RecordFailure] = field(default_factory=list)


@runtime_checkable
class VectorIndex(Protocol):
    """Products with named unit vectors and words, searchable by cosine and by BM25."""

    def upsert(self, records: Sequence[IndexRecord]) -> UpsertResult:
        """Insert or replace by product id, vectors included; a bad record fails alone."""

    def delete(self, ids: Sequence[str]) -> int:
        """Remove products; returns how many existed."""

    def get(self, product_id: str) -> Product | None: ...

    def get_vector(self, product_id: str) -> np.ndarray | None:
        """The product's `main_vector`, the query of "more like this"."""

    def get_vectors(self, ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        """Each found product's vectors by key, in record order; missing ids are absent."""

    def knn(
        self,
        vector: np.ndarray,
        k: int,
        filters: Filters = (),
        exclude_ids: Sequence[str] = (),
    ) -> list[Hit]:
        """The k nearest *products* by their best vector's cosine similarity, best first.

        Each product appears once. With filters, k hits come back whenever k
        products match.
        """

    def lexical(
        self,
        text: str,
        k: int,
        filters: Filters = (),
        exclude_ids: Sequence[str] = (),
    ) -> list[Hit]:
        """The k best products by BM25 over title, description, attribute values and id.

        Any word of the query may match (OR), so a rare word is enough; ties
        break in a stable order, so paging is repeatable.
        """

    def hybrid(
        self,
        vector: np.ndarray,
        text: str,
        k: int,
        filters: Filters = (),
        exclude_ids: Sequence[str] = (),
    ) -> tuple[list[Hit], list[Hit]]:
        """`knn` and `lexical` of one query at the same depth, in one round trip where
        the backend can (OpenSearch's `_msearch`): the two lists a hybrid search fuses."""

    def count(self) -> int: ...

    def fields(self) -> Mapping[str, FieldType]:
        """Attribute fields that can be filtered on, with their types."""

    @property
    def dimension(self) -> int | None:
        """Vector size the index holds; None while it is empty."""

    @property
    def model(self) -> str | None:
        """The encoder that made the vectors, so a mismatched one can be refused."""

    def set_model(self, model_id: str) -> None: ...

    def flush(self) -> None:
        """Make writes searchable and durable (refresh; build or save the ANN graph)."""


def __getattr__(name: str):
    if name == "LocalIndex":
        from clipsearch.index.local import LocalIndex

        return LocalIndex
    if name == "OpenSearchIndex":
        from clipsearch.index.opensearch import OpenSearchIndex

        return OpenSearchIndex
    raise AttributeError(name)
