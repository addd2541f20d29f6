"""Embedding handler for the SageMaker Hugging Face PyTorch container, any model family.

It follows the SageMaker inference toolkit contract (`model_fn`, `input_fn`,
`predict_fn`, `output_fn`) and reuses clipsearch's own encoders (CLIP, SigLIP,
SigLIP 2, OpenCLIP, chosen by `load_encoder` from the model's own files):
`scripts/package_model.py` vendors the clipsearch modules next to this file
(`code/clipsearch/...`), and open_clip for OpenCLIP models, so the endpoint,
the batch transform and the local index produce the same vectors for the same
inputs.

Requests (Content-Type):
- `application/json`: `{"texts": [...], "images": [base64, ...]}`, either or
  both, plus an optional `"apply_template": false`. Answer:
  `{"model", "dimension", "text_embeddings", "image_embeddings"}`.
- `application/x-image` (or `image/jpeg`, `image/png`, `image/webp`): one
  image, for batch transform with SingleRecord. Answer: one JSON line
  `{"model", "dimension", "embedding"}`, so transform output files parse.
- `application/jsonlines`: one record per line, `{"id", "image": base64}` or
  `{"id", "text"}`, for batch transform with MultiRecord. Answer: one line per
  record, in order, `{"id", "embedding"}` or `{"id", "error": {...}}`. A bad
  record never fails its neighbours: one corrupt image must not fail a whole
  transform job.

The prompt template (CLIP's "a photo of {}", the bare query for the others)
is applied here, exactly once, to every text (unless a JSON request sets
`"apply_template": false`). It is packaged
with the weights in `clipsearch-model.json`, so callers send raw query text
and every caller of the endpoint gets what the local encoder's `encode_texts` gives.

Errors. The HF toolkit turns any exception into HTTP 400 carrying
`str(exc)`; it cannot express other statuses. Client errors are therefore
raised as `ModelRequestError`, whose message is the tagged JSON document of
`clipsearch.sagemaker.protocol`, from which `SageMakerEncoder` rebuilds the
typed error (400 validation, 400 invalid image, 413 too large).

Hardware. CUDA with fp16 when present, else CPU fp32 (the encoder decides).
Images are decoded and preprocessed in a thread pool, one chunk ahead of the
forward pass, because on a GPU decoding, not the model, is the bottleneck.
Forward batches are bounded (`CLIPSEARCH_BATCH_SIZE`) so memory holds.

Environment knobs (all optional): CLIPSEARCH_BATCH_SIZE, CLIPSEARCH_DEVICE,
CLIPSEARCH_DTYPE, CLIPSEARCH_DECODE_WORKERS, CLIPSEARCH_MAX_REQUEST_BYTES
(raise it with the transform job's MaxPayloadInMB), CLIPSEARCH_MAX_ITEMS,
CLIPSEARCH_JPEG_DRAFT=1 (faster JPEG decoding, slightly different pixels).

Vectors are serialised with orjson when installed (exact float32 values),
else with the stdlib rounded to 7 decimals (error under 5e-8 per component).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from clipsearch import config, strict
from clipsearch.encoders import load_encoder
from clipsearch.encoders.towers import TowerEncoder
from clipsearch.errors import (
    ClipsearchError,
    InvalidImageError,
    PayloadTooLargeError,
    ValidationError,
)
from clipsearch.images import decode_base64_image, load_image
from clipsearch.sagemaker import protocol as wire

try:  # exact float32 and ~10x faster; the container gets it from requirements.txt
    import orjson
except ImportError:  # pragma: no cover - the stdlib path is tested by forcing it off
    orjson = None

logger = logging.getLogger("clipsearch.inference")

METADATA_FILE = "clipsearch-model.json"
MAX_BATCH_SIZE = 1024
DEFAULT_MAX_ITEMS = 1024
_JSON_KEYS = ("texts", "images", "apply_template")

F = TypeVar("F", bound=Callable[..., Any])


class ModelRequestError(Exception):
    """A client error; `str()` is the tagged JSON the caller decodes (see module doc)."""

    def __init__(self, error: ClipsearchError) -> None:
        super().__init__(wire.encode_client_error(error))
        self.error = error


def _client_errors(fn: F) -> F:
    """Re-raise clipsearch's typed errors in the form that survives the toolkit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClipsearchError as exc:
            raise ModelRequestError(exc) from exc

    return wrapper  # type: ignore[return-value]


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return max(minimum, int(value))
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _max_request_bytes() -> int:
    return _env_int("CLIPSEARCH_MAX_REQUEST_BYTES", config.MAX_REQUEST_BYTES)


def _max_items() -> int:
    return _env_int("CLIPSEARCH_MAX_ITEMS", DEFAULT_MAX_ITEMS)


# --------------------------------------------------------------------------- model


@dataclass
class ClipModel:
    """What `model_fn` returns: the encoder plus the serving limits and decode pool."""

    encoder: TowerEncoder
    model_id: str
    dimension: int
    pool: ThreadPoolExecutor
    workers: int
    plan: PixelPlan | None = None
    jpeg_draft: bool = False

    @property
    def batch_size(self) -> int:
        return self.encoder.batch_size


def model_fn(model_dir: str) -> ClipModel:
    """Load the model from the extracted artifact (`/opt/ml/model` in the container).

    The family comes from the weights' own files, as locally; the prompt
    template is the one recorded at packaging (None: the family's default).
    """
    meta_path = Path(model_dir) / METADATA_FILE
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    device = os.environ.get("CLIPSEARCH_DEVICE") or "auto"
    dtype = os.environ.get("CLIPSEARCH_DTYPE") or "auto"
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    # A GPU amortises its launch cost over far larger batches than a CPU.
    default_batch = 256 if device.startswith("cuda") else 32
    batch_size = min(MAX_BATCH_SIZE, _env_int("CLIPSEARCH_BATCH_SIZE", default_batch))
    encoder = load_encoder(
        model_dir,
        prompt_template=meta.get("prompt_template"),
        batch_size=batch_size,
        device=device,
        dtype=dtype,
    )
    family = meta.get("family")
    if family is not None and family != encoder.family:
        raise ValueError(f"{METADATA_FILE} says family {family} but the weights are "
                         f"{encoder.family}")
    expected = meta.get("dimension")
    if expected is not None and int(expected) != encoder.dimension:
        raise ValueError(
            f"{METADATA_FILE} says dimension {expected} but the weights give {encoder.dimension}"
        )
    workers = _env_int("CLIPSEARCH_DECODE_WORKERS", min(32, os.cpu_count() or 1))
    model = ClipModel(
        encoder=encoder,
        model_id=str(meta.get("model_id") or model_dir),
        dimension=encoder.dimension,
        pool=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-decode"),
        workers=workers,
        plan=_pixel_plan(encoder),
        jpeg_draft=os.environ.get("CLIPSEARCH_JPEG_DRAFT", "") in ("1", "true"),
    )
    _warm_up(model)
    logger.info(
        "loaded %s (%s, dimension %d) on %s/%s, batch %d, %d decode workers, %s preprocessing%s",
        model.model_id, encoder.label, model.dimension, encoder.device, encoder.dtype,
        batch_size, workers,
        "split" if model.plan else "processor", ", JPEG draft" if model.jpeg_draft else "",
    )
    return model


def _pixel_plan(encoder: TowerEncoder) -> PixelPlan | None:
    """CLIP's split preprocessing where the encoder has a processor it mirrors."""
    processor = getattr(encoder, "processor", None)  # OpenCLIP has transforms instead
    image_processor = getattr(processor, "image_processor", None)
    return PixelPlan.from_processor(image_processor) if image_processor is not None else None


def _warm_up(model: ClipModel) -> None:
    """One tiny forward per tower, so /ping only turns healthy once inference works."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (127, 127, 127)).save(buffer, "PNG")
    model.encoder.encode_texts(["warm up"])
    _encode_images(model, [buffer.getvalue()], ["warm-up"], strict=True)


# --------------------------------------------------------------------------- input


@dataclass
class Record:
    """One JSON Lines record, or the reason it cannot be encoded."""

    id: Any
    text: str | None = None
    image: bytes | None = None
    error: ClipsearchError | None = None


@dataclass
class Request:
    """The decoded request; `kind` decides the response shape."""

    kind: str  # "json" | "single" | "lines"
    texts: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    apply_template: bool = True
    records: list[Record] = field(default_factory=list)


@_client_errors
def input_fn(input_data: str | bytes | bytearray, content_type: str | None) -> Request:
    """Parse and validate the body; everything the caller got wrong is raised here."""
    body = input_data.encode("utf-8") if isinstance(input_data, str) else bytes(input_data)
    limit = _max_request_bytes()
    if len(body) > limit:
        raise PayloadTooLargeError(
            f"request body is {len(body):,} bytes; the limit is {limit:,} "
            "(SageMaker serverless caps payloads at 4 MB)", field="body",
        )
    kind = wire.normalize_content_type(content_type)
    supported = "application/json, application/jsonlines or application/x-image"
    if kind is None:
        raise ValidationError(f"Content-Type is missing; send {supported}",
                              field="Content-Type", code="unsupported_content_type")
    empty = not body if kind in wire.IMAGE_TYPES else not body.strip()
    if empty:
        raise ValidationError("request body is empty", field="body")
    if kind == wire.JSON:
        return _parse_json(body)
    if kind in wire.IMAGE_TYPES:
        return Request(kind="single", images=[body])
    if kind in wire.JSONLINES_TYPES:
        return _parse_jsonlines(body)
    raise ValidationError(f"unsupported Content-Type {content_type!r}; send {supported}",
                          field="Content-Type", code="unsupported_content_type")


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"body is not UTF-8: {exc}", field="body") from None


def _parse_json(body: bytes) -> Request:
    try:
        doc = strict.loads(_text(body))
    except ValueError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}", field="body") from None
    shape = '"texts" (a list of strings) and/or "images" (a list of base64 strings)'
    if not isinstance(doc, dict):
        raise ValidationError(f"body must be a JSON object with {shape}", field="body")
    for key in doc:
        if key not in _JSON_KEYS:
            raise ValidationError(f"unknown key {key!r}; a request has {shape}", field=key)
    if "texts" not in doc and "images" not in doc:
        raise ValidationError(f"request has neither key; it needs {shape}", field="texts")
    texts = _list_of_strings(doc, "texts")
    encoded = _list_of_strings(doc, "images")
    if not texts and not encoded:
        name = "texts" if "texts" in doc else "images"
        raise ValidationError(f"{name} is empty; send at least one item", field=name)
    _check_count(len(texts) + len(encoded))
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValidationError("text must be a non-empty string", field=f"texts[{i}]")
        strict.check_text(text, f"texts[{i}]")
    apply_template = doc.get("apply_template", True)
    if not isinstance(apply_template, bool):
        raise ValidationError("apply_template must be true or false", field="apply_template")
    images = [decode_base64_image(data, field=f"images[{i}]") for i, data in enumerate(encoded)]
    return Request(kind="json", texts=texts, images=images, apply_template=apply_template)


def _list_of_strings(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ValidationError(f"{key} must be a list of strings, not {type(value).__name__}",
                              field=key)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValidationError(f"{key}[{i}] must be a string, not {type(item).__name__}",
                                  field=f"{key}[{i}]")
    return value


def _check_count(count: int) -> None:
    limit = _max_items()
    if count > limit:
        raise PayloadTooLargeError(f"{count} items in one request; the limit is {limit}",
                                   field="body", code="too_many_items")


def _parse_jsonlines(body: bytes) -> Request:
    lines = [line for line in _text(body).splitlines() if line.strip()]
    if not lines:
        raise ValidationError("body has no JSON Lines records", field="body")
    _check_count(len(lines))
    return Request(kind="lines", records=[_parse_record(n, line) for n, line in enumerate(lines)])


def _parse_record(n: int, line: str) -> Record:
    """A per-line problem becomes that record's error, never the request's."""
    where = f"records[{n}]"
    try:
        doc = strict.loads(line)
    except ValueError as exc:  # deep nesting, NaN, huge integers and bad Unicode included
        return Record(None, error=ValidationError(f"line is not valid JSON: {exc}", field=where))
    if not isinstance(doc, dict):
        return Record(None, error=ValidationError("line must be a JSON object", field=where))
    record_id = doc.get("id")
    has_text, has_image = "text" in doc, "image" in doc
    if has_text == has_image:
        problem = "has both" if has_text else "needs one of"
        return Record(record_id, error=ValidationError(
            f'record {problem} "text" and "image" (base64)', field=where))
    try:
        if has_text:
            text = doc["text"]
            if not isinstance(text, str) or not text.strip():
                raise ValidationError("text must be a non-empty string", field=f"{where}.text")
            return Record(record_id, text=strict.check_text(text, f"{where}.text"))
        return Record(record_id, image=decode_base64_image(doc["image"], field=f"{where}.image"))
    except ClipsearchError as exc:
        return Record(record_id, error=exc)


# --------------------------------------------------------------------------- predict


@dataclass
class Prediction:
    """Embeddings (or per-record errors) plus what the response must report."""

    kind: str
    model_id: str
    dimension: int
    text_embeddings: Any = None
    image_embeddings: Any = None
    records: list[Record] = field(default_factory=list)
    vectors: dict[int, Any] = field(default_factory=dict)


@_client_errors
def predict_fn(data: Request, model: ClipModel) -> Prediction:
    """Run both towers; image decoding happens here, in parallel with the forward."""
    import numpy as np

    out = Prediction(kind=data.kind, model_id=model.model_id, dimension=model.dimension)
    if data.kind in ("json", "single"):
        empty = np.zeros((0, model.dimension), dtype=np.float32)
        out.text_embeddings = (
            model.encoder.encode_texts(data.texts, apply_template=data.apply_template)
            if data.texts else empty
        )
        fields = (["image"] if data.kind == "single"
                  else [f"images[{i}]" for i in range(len(data.images))])
        out.image_embeddings = (
            _encode_images(model, data.images, fields, strict=True)[0] if data.images else empty
        )
        return out
    out.records = data.records
    text_at = [i for i, r in enumerate(data.records) if r.error is None and r.text is not None]
    image_at = [i for i, r in enumerate(data.records) if r.error is None and r.image is not None]
    if text_at:
        _encode_texts_each(model, data.records, text_at, out.vectors)
    if image_at:
        images = [data.records[i].image or b"" for i in image_at]
        fields = [f"records[{i}].image" for i in image_at]
        matrix, errors = _encode_images(model, images, fields, strict=False)
        for j, i in enumerate(image_at):
            if j in errors:
                data.records[i].error = errors[j]
            else:
                out.vectors[i] = matrix[j]
    return out


def _encode_texts_each(model: ClipModel, records: list[Record], at: list[int],
                       vectors: dict[int, Any]) -> None:
    """All texts in one forward; if that fails, one by one, so a bad record fails alone."""
    texts = [records[i].text or "" for i in at]
    try:
        vectors.update(zip(at, model.encoder.encode_texts(texts), strict=True))
        return
    except Exception:
        if len(at) == 1:
            raise
        logger.warning("text batch of %d failed; encoding one by one", len(at), exc_info=True)
    for i in at:
        try:
            vectors[i] = model.encoder.encode_texts([records[i].text or ""])[0]
        except ClipsearchError as exc:
            records[i].error = exc
        except Exception:
            logger.exception("record %d: text encoding failed", i)
            records[i].error = ValidationError("text could not be encoded",
                                               field=f"records[{i}].text")


@dataclass(frozen=True)
class PixelPlan:
    """CLIP's standard preprocessing, split where the GIL and the device want it.

    The processor's PIL backend resizes (shortest edge, bicubic), centre-crops,
    rescales and normalises each image in Python. Here the PIL half (resize and
    crop on uint8, which releases the GIL) runs on the decode pool, and the
    arithmetic half runs once per batch as tensor ops on the model's device,
    which also ships uint8 (4x smaller) to the GPU. The result equals the
    processor's output (a test holds it to 1e-6); configurations this does
    not mirror get no plan and go through the processor itself.
    """

    shortest_edge: int
    crop_height: int
    crop_width: int
    resample: int
    rescale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_processor(cls, ip: Any) -> PixelPlan | None:
        size = dict(getattr(ip, "size", None) or {})
        crop = dict(getattr(ip, "crop_size", None) or {})
        short = size.get("shortest_edge")
        try:
            standard = (
                getattr(ip, "do_resize", False) and getattr(ip, "do_center_crop", False)
                and getattr(ip, "do_rescale", False) and getattr(ip, "do_normalize", False)
                and set(size) <= {"shortest_edge", "longest_edge"}
                and size.get("longest_edge") is None and short
                and crop.get("height") and crop.get("width")
                and int(short) >= max(int(crop["height"]), int(crop["width"]))
                and len(ip.image_mean) == 3 and len(ip.image_std) == 3
                and not getattr(ip, "do_pad", False)
            )
        except (TypeError, ValueError):
            standard = False
        if not standard:
            return None
        return cls(int(short), int(crop["height"]), int(crop["width"]), int(ip.resample or 3),
                   float(ip.rescale_factor), tuple(map(float, ip.image_mean)),
                   tuple(map(float, ip.image_std)))

    def crop(self, image: Any) -> Any:
        """Resize the shortest edge (as transformers rounds it), centre-crop: HxWx3 uint8."""
        import numpy as np

        width, height = image.size
        if width <= height:
            new_w, new_h = self.shortest_edge, int(self.shortest_edge * height / width)
        else:
            new_w, new_h = int(self.shortest_edge * width / height), self.shortest_edge
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), self.resample)
        left, top = (new_w - self.crop_width) // 2, (new_h - self.crop_height) // 2
        return np.asarray(image.crop((left, top, left + self.crop_width, top + self.crop_height)))

    def pixels(self, batch: Any, device: Any) -> Any:
        """NxHxWx3 uint8 to the normalised NCHW float32 pixel_values, on `device`."""
        import torch

        tensor = torch.from_numpy(batch).to(device, non_blocking=True)
        tensor = tensor.permute(0, 3, 1, 2).to(torch.float32) * self.rescale
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        return (tensor - mean) / std


def _decode(model: ClipModel, data: bytes, field: str) -> Any:
    """`load_image`; with CLIPSEARCH_JPEG_DRAFT a JPEG is decoded at reduced scale.

    Draft mode lets libjpeg skip detail the 224-pixel crop discards (2-4x
    faster on large photos) but changes pixels slightly, so it is opt-in:
    embeddings then differ from `ClipEncoder`'s by about 1e-3. The decoder,
    limits and messages are `load_image`'s either way.
    """
    draft = model.plan.shortest_edge if (model.jpeg_draft and model.plan) else None
    return load_image(data, field=field, draft=draft)


_Prepared = tuple[Any, list[int], dict[int, ClipsearchError]]


def _prepare(model: ClipModel, images: Sequence[bytes], fields: Sequence[str],
             start: int) -> _Prepared:
    """Decode and resize one slice on a pool thread (PIL releases the GIL)."""
    import numpy as np

    decoded, ok, errors = [], [], {}
    for j, data in enumerate(images):
        try:
            image = _decode(model, data, fields[start + j])
            decoded.append(model.plan.crop(image) if model.plan else image)
            ok.append(start + j)
        except ClipsearchError as exc:
            errors[start + j] = exc
        except Exception:  # a resize or crop failure is this image's, not the batch's
            logger.exception("%s: preprocessing failed", fields[start + j])
            errors[start + j] = InvalidImageError("image could not be processed",
                                                  field=fields[start + j])
    if not decoded:
        return None, ok, errors
    if model.plan:
        return np.stack(decoded), ok, errors
    return model.encoder.preprocess_images(decoded), ok, errors


def _submit_chunk(model: ClipModel, images: Sequence[bytes], fields: Sequence[str],
                  start: int, end: int) -> list[Future[_Prepared]]:
    per_task = max(1, math.ceil((end - start) / model.workers))
    return [
        model.pool.submit(_prepare, model, images[s : min(end, s + per_task)], fields, s)
        for s in range(start, end, per_task)
    ]


def _encode_images(model: ClipModel, images: Sequence[bytes], fields: Sequence[str],
                   *, strict: bool) -> tuple[Any, dict[int, ClipsearchError]]:
    """Unit vectors for decodable images, errors by index for the rest.

    Chunks of `batch_size` are decoded by the pool one chunk ahead of the
    forward pass. With `strict`, the first bad image (lowest index) is raised.
    """
    import numpy as np
    import torch

    size = model.batch_size
    out = np.zeros((len(images), model.dimension), dtype=np.float32)
    errors: dict[int, ClipsearchError] = {}
    starts = list(range(0, len(images), size))
    pending = _submit_chunk(model, images, fields, 0, min(size, len(images)))
    for n, _ in enumerate(starts):
        current = pending
        if n + 1 < len(starts):
            nxt = starts[n + 1]
            pending = _submit_chunk(model, images, fields, nxt, min(nxt + size, len(images)))
        parts = [future.result() for future in current]
        batches, rows = [], []
        for batch, ok, errs in parts:
            errors.update(errs)
            if batch is not None:
                batches.append(batch)
                rows.extend(ok)
        if strict and errors:
            for future in pending:
                future.cancel()
            raise errors[min(errors)]
        if not batches:
            continue
        if model.plan:
            pixels = model.plan.pixels(np.concatenate(batches), model.encoder.device)
        else:  # the encoder's own preprocessing: a dict of tensors per slice
            pixels = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}
        out[rows] = model.encoder.encode_pixels(pixels)
    return out, errors


# --------------------------------------------------------------------------- output


def _accepts(accept: str | None) -> str:
    if not accept:
        return wire.JSON
    for part in accept.split(","):
        kind = wire.normalize_content_type(part)
        if kind in (None, wire.ANY, wire.JSON, "application/*"):
            return wire.JSON
        if kind in wire.JSONLINES_TYPES:
            return wire.JSONLINES
    raise ValidationError(
        f"unsupported Accept {accept!r}; the model answers application/json or "
        "application/jsonlines", field="Accept", code="unsupported_accept",
    )


def _dumps(doc: Any) -> str:
    """Compact JSON; numpy rows exact via orjson, else rounded (see sagemaker.protocol)."""
    if orjson is not None:
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode("utf-8")
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _rows(matrix: Any) -> Any:
    """float32 rows as orjson serialises them exactly, or rounded lists for json."""
    import numpy as np

    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return matrix if orjson is not None else wire.embedding_rows(matrix)


@_client_errors
def output_fn(prediction: Prediction, accept: str | None) -> str:
    """Serialise; JSON documents stay on one line, so every answer is also JSON Lines."""
    fmt = _accepts(accept)
    if prediction.kind == "json":
        body = _dumps({
            "model": prediction.model_id,
            "dimension": prediction.dimension,
            "text_embeddings": _rows(prediction.text_embeddings),
            "image_embeddings": _rows(prediction.image_embeddings),
        })
        return body + "\n" if fmt == wire.JSONLINES else body
    if prediction.kind == "single":
        return _dumps({
            "model": prediction.model_id,
            "dimension": prediction.dimension,
            "embedding": _rows(prediction.image_embeddings)[0],
        }) + "\n"
    lines = []
    for i, record in enumerate(prediction.records):
        if record.error is not None:
            lines.append(_dumps({"id": record.id, "error": record.error.to_body()}))
        else:
            vector = _rows(prediction.vectors[i][None, :])[0]
            lines.append(_dumps({"id": record.id, "embedding": vector}))
    return "\n".join(lines) + "\n"
