"""Vector indexes: where product vectors and metadata live.

`LocalIndex` (embedded: SQLite plus numpy/faiss) and `OpenSearchIndex`
(Amazon OpenSearch Service or a self-run node) implement `VectorIndex`.
One contract test suite runs against both, so the search service can treat
them as interchangeable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from clipsearch.catalog import Product
from clipsearch.filters import FieldType, Filters

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class IndexRecord:
    product: Product
    vector: np.ndarray


@dataclass(frozen=True)
class Hit:
    product: Product
    score: float  # cosine similarity in [-1, 1]


@dataclass(frozen=True)
class RecordFailure:
    id: str
    reason: str


@dataclass
class UpsertResult:
    indexed: int = 0
    failures: list[RecordFailure] = field(default_factory=list)


@runtime_checkable
class VectorIndex(Protocol):
    """Products with one unit vector each, searchable by cosine similarity."""

    def upsert(self, records: Sequence[IndexRecord]) -> UpsertResult:
        """Insert or replace by product id; a bad record fails alone."""

    def delete(self, ids: Sequence[str]) -> int:
        """Remove products; returns how many existed."""

    def get(self, product_id: str) -> Product | None: ...

    def get_vector(self, product_id: str) -> np.ndarray | None: ...

    def knn(
        self,
        vector: np.ndarray,
        k: int,
        filters: Filters = (),
        exclude_ids: Sequence[str] = (),
    ) -> list[Hit]:
        """The k nearest products by cosine similarity, best first.

        With filters, k hits come back whenever k products match.
        """

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
