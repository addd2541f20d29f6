"""The search service: the one place that turns a request into ranked products.

It knows nothing about HTTP, Lambda or SageMaker: it is handed an `Encoder`
and a `VectorIndex`, and every runtime (CLI, local server, query Lambda,
ingest Lambda) drives it the same way.

Search modes (see `clipsearch.fusion` for why hybrid reads fixed-depth lists):
- `vector`: products by their best vector's cosine similarity to the query.
- `lexical`: products by BM25 over their words; `score` is BM25 divided by
  the best match's BM25, so 1.0 is the top match and scores stay in (0, 1].
- `hybrid`: both lists, each `rank_window` deep, fused (RRF by default);
  `score` is the fused score in [0, 1].
In `lexical` and `hybrid` a query that is exactly a product id (a SKU) puts
that product first, with score 1.0, if it passes the filters. `min_score`
applies to whatever `score` means in the mode.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsearch import config, strict
from clipsearch.catalog import Product, validate_product_id
from clipsearch.contract import ImageUrl, SearchRequest, product_body, search_body
from clipsearch.encoders import Encoder, l2_normalize
from clipsearch.errors import (
    ClipsearchError,
    ModelMismatchError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationError,
)
from clipsearch.filters import Filters, bind_filters, matches
from clipsearch.fusion import Fused, SignalRank, fuse
from clipsearch.images import load_image
from clipsearch.index import (
    IMAGE_KEY_PREFIX,
    TITLE_KEY,
    Hit,
    IndexRecord,
    VectorIndex,
    is_image_key,
    product_vectors,
)
from clipsearch.models import public_model_name
from clipsearch.query_cache import (
    QueryCache,
    cached,
    image_digest,
    image_key,
    normalize_text,
    text_key,
)

ImageSource = Callable[[str], bytes]
log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What an ingest did, product by product where something went wrong."""

    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    # (product id, why) for a further image left out of a product indexed with the rest:
    # not a product count, so indexed + skipped + failed still adds up to the products.
    left_out: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "skipped_items": [{"id": i, "reason": r} for i, r in self.skipped],
            "failed_items": [{"id": i, "reason": r} for i, r in self.failed],
            "left_out_images": [{"id": i, "reason": r} for i, r in self.left_out],
        }


def read_local_image(ref: str, *, follow_symlinks: bool = True) -> bytes:
    """Image loader for local catalogs: regular files only, size-checked before reading.

    Opened non-blocking (a FIFO would otherwise hang the open) and checked
    with fstat on the open descriptor, so what is checked is what is read:
    `/dev/zero` or a FIFO is refused, not read until memory runs out, and a
    file over the limit is refused by its size. With `follow_symlinks=False`
    the last path component may not be a symlink (the image route).
    """
    if ref.startswith("s3://"):
        raise ValidationError(
            f"{ref}: s3:// images need the AWS deployment (or download them first)",
            field="image",
        )
    if not ref or "\x00" in ref or not strict.is_well_formed(ref):
        raise ValidationError("image path is empty or not a valid file name", field="image")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(ref, flags)
    except FileNotFoundError:
        raise ValidationError(f"image file {ref} does not exist", field="image") from None
    except OSError as exc:
        raise ValidationError(f"cannot read image {ref}: {exc.strerror}", field="image") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValidationError(f"image {ref} is not a regular file", field="image")
        if info.st_size > config.MAX_IMAGE_BYTES:
            raise PayloadTooLargeError(
                f"image {ref} is {info.st_size:,} bytes; the limit is "
                f"{config.MAX_IMAGE_BYTES:,}", field="image")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(config.MAX_IMAGE_BYTES + 1)  # the file may have grown
        if len(data) > config.MAX_IMAGE_BYTES:
            raise PayloadTooLargeError(f"image {ref} is over the limit of "
                                       f"{config.MAX_IMAGE_BYTES:,} bytes", field="image")
        return data
    except OSError as exc:
        raise ValidationError(f"cannot read image {ref}: {exc.strerror}", field="image") from None
    finally:
        os.close(fd)


class SearchService:
    def __init__(
        self,
        encoder: Encoder,
        index: VectorIndex,
        *,
        image_source: ImageSource = read_local_image,
        s3_image_source: ImageSource | None = None,
        decode_workers: int = 4,
        query_cache: QueryCache | None = None,
        rank_window: int = config.RANK_WINDOW,
    ) -> None:
        """`query_cache` holds query vectors (never ingested images); None turns caching off."""
        self.encoder = encoder
        self.query_cache = query_cache
        self.index = index
        self.rank_window = rank_window
        self.image_source = image_source
        self.s3_image_source = s3_image_source
        self.decode_workers = decode_workers
        self._check_compatible()

    def _check_compatible(self) -> None:
        """Refuse to mix models in one index, and say what to run instead."""
        built_with = self.index.model
        model = self.encoder.model_id
        dim = self.index.dimension
        if built_with and built_with != model:
            problem = f"the index was built with model {built_with!r} but this model is {model!r}"
        elif dim and dim != self.encoder.dimension:
            problem = (f"the index holds {dim}-d vectors but {model!r} makes "
                       f"{self.encoder.dimension}-d ones")
        else:
            return
        keep = f"keep using it with --model {built_with}; or " if built_with else ""
        # A 503, not a 500: on AWS this is the window of a model switch between
        # the endpoint's update and the bootstrap's alias move, which ends by itself.
        raise ModelMismatchError(
            f"{problem}: {keep}re-embed the catalog with the new model, searches staying up, "
            f"with `clipsearch reindex --model {model}` (local index) or `clipsearch bootstrap "
            "--new-index` after deploying the new model's endpoint (OpenSearch)"
        )

    # ------------------------------------------------------------------ queries

    def query_vector(self, request: SearchRequest) -> np.ndarray:
        """Encode the request; text plus image is a weighted sum of the two unit vectors."""
        if request.product_id is not None:
            vector = self.index.get_vector(request.product_id)
            if vector is None:
                raise NotFoundError(f"no product with id {request.product_id!r}",
                                    field="product_id")
            return vector
        parts = []
        if request.text is not None:
            text = normalize_text(request.text)
            try:
                vector = cached(self.query_cache, text_key(self.encoder, text),
                                lambda: self.encoder.encode_texts([text])[0])
            except ValidationError as exc:
                exc.field = "text"  # the encoder names its batch slot, texts[0]
                raise
            parts.append((request.text_weight, vector))
        if request.has_image:
            image = request.image
            if image is None:
                if self.s3_image_source is None:
                    raise ValidationError("image_s3_key is only supported on the AWS deployment",
                                          field="image_s3_key")
                image = self.s3_image_source(request.image_s3_key or "")
            try:
                vector = cached(self.query_cache, image_key(self.encoder, image_digest(image)),
                                lambda: self.encoder.encode_images([image])[0])
            except ValidationError as exc:
                exc.field = "image"  # the encoder names its batch slot, images[0]
                raise
            parts.append((request.image_weight, vector))
        if len(parts) == 1:
            return parts[0][1]
        fused = sum(weight * vec for weight, vec in parts)
        return l2_normalize(np.asarray(fused)[None, :])[0]

    def search(self, request: SearchRequest, image_url: ImageUrl | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        filters = bind_filters(request.filters, self.index.fields()) if request.filters else ()
        mode = request.effective_mode
        vector = self.query_vector(request) if mode != "lexical" else None
        ranked = self._rank(request, mode, vector, filters)
        page = ranked[request.offset : request.offset + request.k]
        if request.min_score is not None:
            # Compared with the score as the client sees it (rounded), so a result shown
            # with score == min_score is kept, whatever its last float bits were.
            page = [f for f in page if _round(f.score) >= request.min_score]
        explains = (self._explain(page, request, mode, vector) if request.explain
                    else [None] * len(page))
        return search_body(
            [(f.product, f.score, e) for f, e in zip(page, explains, strict=True)],
            k=request.k,
            offset=request.offset,
            took_ms=(time.perf_counter() - started) * 1000,
            model=self.model_name,
            image_url=image_url,
            mode=mode,
        )

    def _rank(self, request: SearchRequest, mode: str, vector: np.ndarray | None,
              filters: Filters) -> list[Fused]:
        """Everything up to offset + k, best first, as the page will slice it."""
        depth = request.offset + request.k
        exclude: tuple[str, ...] = (request.product_id,) if request.product_id else ()
        if mode == "vector":
            assert vector is not None
            hits = self.index.knn(vector, depth, filters, exclude)
            return _single("vector", hits, scale=1.0)
        text = request.text or ""
        pinned = self._exact_id_match(text, filters)
        if pinned is not None:
            exclude += (pinned.id,)
        if mode == "lexical":
            hits = self.index.lexical(text, depth, filters, exclude)
            # BM25 has no fixed scale; relative to the best match it reads as
            # "how close to the top", the same on both backends.
            ranked = _single("lexical", hits, scale=1.0 / hits[0].score if hits else 1.0)
        else:
            assert vector is not None
            vector_hits, lexical_hits = self.index.hybrid(
                vector, text, self.rank_window, filters, exclude)
            ranked = fuse({"vector": vector_hits, "lexical": lexical_hits},
                          method=request.fusion,
                          weights={"vector": 1.0 - request.lexical_weight,
                                   "lexical": request.lexical_weight})
        if pinned is not None:
            ranked.insert(0, Fused(pinned, 1.0, {"exact_id": SignalRank(1, 1.0)}))
        return ranked

    def _exact_id_match(self, text: str, filters: Filters) -> Product | None:
        """The product whose id is exactly the query (a SKU typed into the box)."""
        try:
            candidate = validate_product_id(text)
        except ValidationError:
            return None
        product = self.index.get(candidate)
        if product is None or not matches(product.attributes, filters):
            return None
        return product

    def _explain(self, page: Sequence[Fused], request: SearchRequest, mode: str,
                 vector: np.ndarray | None) -> list[dict[str, Any]]:
        """Per result: each signal's rank and score, and the score they fused into.

        `vector` is the signal that was ranked (a product's best vector);
        `image` and `title` are the cosine of the product's best image vector
        and of its title vector, computed here for the page's products, so
        the reader sees which one carried the match. The same comparison
        names the matched vector, which the index need not report per hit
        (on OpenSearch that would be an `inner_hits` sub-search per hit, on
        every query, for what only an explanation reads).
        """
        stored = (self.index.get_vectors([f.product.id for f in page])
                  if vector is not None else {})
        out = []
        for fused in page:
            signals: dict[str, Any] = {}
            if "exact_id" in fused.signals:
                signals["exact_id"] = {"rank": 1, "score": 1.0}
            scores = {key: float(v @ vector)
                      for key, v in stored.get(fused.product.id, {}).items()}
            if mode != "lexical":
                signals["vector"] = _signal(fused.signals.get("vector"), fused.product,
                                            max(scores, key=scores.__getitem__, default=None))
            if mode != "vector":
                signals["lexical"] = _signal(fused.signals.get("lexical"), fused.product)
            if vector is not None:
                images = [score for key, score in scores.items() if is_image_key(key)]
                title = scores.get(TITLE_KEY)
                signals["image"] = {"score": _round(max(images)) if images else None,
                                    "vectors": len(images)}
                signals["title"] = {"score": _round(title) if title is not None else None}
            out.append({
                "mode": mode,
                "fusion": request.fusion if mode == "hybrid" else None,
                "exact_id": "exact_id" in fused.signals,
                "signals": signals,
                "score": _round(fused.score),
            })
        return out

    def get_product(self, product_id: str) -> Product:
        product = self.index.get(product_id)
        if product is None:
            raise NotFoundError(f"no product with id {product_id!r}", field="id")
        return product

    def product(self, product_id: str, image_url: ImageUrl | None = None) -> dict[str, Any]:
        return product_body(self.get_product(product_id), image_url)

    def health(self) -> dict[str, Any]:
        """Liveness, catalog size, and the query cache's counters (null when it is off)."""
        cache = self.query_cache.stats().to_dict() if self.query_cache is not None else None
        return {"status": "ok", "model": self.model_name, "products": self.index.count(),
                "query_cache": cache}

    @property
    def model_name(self) -> str:
        """The model as answers name it: its id, never a local path (see public_model_name)."""
        return public_model_name(self.encoder.model_id)

    # ------------------------------------------------------------------ writes

    def ingest(
        self,
        products: Iterable[Product],
        *,
        batch_size: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Encode every image and the title of each product, in batches, and upsert them.

        A product is found by any of its images and by its title's meaning,
        so each gets a vector; a product without any image is indexed by its
        title and words alone (as the ingest Lambda and the bootstrap do). One
        bad main image fails its product alone; a bad extra image is left out
        (and reported) while the product is indexed with the rest. Images are
        read and decoded on a thread pool while the model runs, so the
        CPU-bound forward pass is not left waiting on disk or S3.

        The title is embedded exactly as a text query is, prompt template
        included: a query that is a product's title then lands on its title
        vector, whatever the model, and a query sharing only some words stays
        closer too (measured with `clipsearch eval`, docs/evaluation.md §7).
        """
        report = IngestReport()
        # Before the first vector, so a crash mid-ingest cannot leave vectors
        # whose model is unknown (the index refuses a different model here).
        self.index.set_model(self.encoder.model_id)
        batch: list[Product] = []
        with ThreadPoolExecutor(max_workers=self.decode_workers) as pool:
            for product in products:
                batch.append(product)
                if len(batch) >= batch_size:
                    self._ingest_batch(batch, pool, report, progress)
                    batch = []
            if batch:
                self._ingest_batch(batch, pool, report, progress)
        self.index.set_model(self.encoder.model_id)
        self.index.flush()
        return report

    def _ingest_batch(self, batch: Sequence[Product], pool: ThreadPoolExecutor,
                      report: IngestReport, progress: Callable[[int], None] | None) -> None:
        def fetch(ref: str):
            try:
                return load_image(self._read_image(ref))
            except ClipsearchError as exc:
                return exc
            except Exception as exc:  # one unreadable image must not stop the ingest
                log.warning("reading the image of %s failed", product.id, exc_info=True)
                return ValidationError(f"image {product.image} could not be read "
                                       f"({type(exc).__name__})", field="image")

        jobs = [(product, ref) for product in batch for ref in product.images]
        loaded: dict[tuple[str, str], Any] = {
            (product.id, ref): image
            for (product, ref), image in zip(jobs, pool.map(lambda j: fetch(j[1]), jobs),
                                             strict=True)
        }
        ready: list[tuple[Product, list[str]]] = []
        images: list[Any] = []
        for product in batch:
            main = loaded[(product.id, product.images[0])] if product.images else None
            if isinstance(main, Exception):
                report.failed.append((product.id, str(main)))
                continue
            refs = []
            for ref in product.images:
                image = loaded[(product.id, ref)]
                if isinstance(image, Exception):
                    report.left_out.append((product.id, f"image {ref} left out: {image}"))
                    continue
                refs.append(ref)
                images.append(image)
            ready.append((product, refs))
        if ready:
            image_vectors = iter(self.encoder.encode_images(images) if images else ())
            title_vectors = self.encoder.encode_texts([p.title for p, _ in ready])
            records = []
            for (product, refs), title_vector in zip(ready, title_vectors, strict=True):
                records.append(IndexRecord(product, product_vectors(
                    [(ref, next(image_vectors)) for ref in refs], title_vector)))
            result = self.index.upsert(records)
            report.indexed += result.indexed
            report.failed.extend((f.id, f.reason) for f in result.failures)
        if progress:
            progress(len(batch))

    def _read_image(self, ref: str) -> bytes:
        if ref.startswith("s3://") and self.s3_image_source is not None:
            return self.s3_image_source(ref)
        return self.image_source(ref)

    def delete(self, product_ids: Sequence[str]) -> int:
        return self.index.delete(product_ids)


def _single(name: str, hits: Sequence[Hit], *, scale: float) -> list[Fused]:
    """One signal's hits as a ranking of their own (vector or lexical mode)."""
    return [Fused(h.product, h.score * scale, {name: SignalRank(i, h.score)})
            for i, h in enumerate(hits, start=1)]


def _signal(rank: SignalRank | None, product: Product,
            matched: str | None = None) -> dict[str, Any]:
    """One signal in an explanation: null rank and score when the product was not in
    that signal's list (beyond its window, or no match). `matched` is the key of the
    product's vector closest to the query, the one its vector score comes from."""
    if rank is None:
        return {"rank": None, "score": None}
    out: dict[str, Any] = {"rank": rank.rank, "score": _round(rank.score)}
    if matched is not None:
        out["matched"] = "title" if matched == TITLE_KEY else "image"
        ref = matched[len(IMAGE_KEY_PREFIX):]
        if is_image_key(matched) and ref in product.images:
            out["image_index"] = product.images.index(ref)
    return out


def _round(value: float) -> float:
    return round(float(value), 6)
