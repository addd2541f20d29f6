"""`Encoder` over a SageMaker endpoint running the packaged CLIP handler.

The Lambdas use it in place of `ClipEncoder`; it needs boto3 and numpy, never
torch. What it adds over a bare `invoke_endpoint`:

- **Batching within the payload limit.** Items are packed greedily into
  requests of at most `max_payload_bytes` (4 MB decimal, the serverless cap
  read conservatively) and `max_items` (so the ~6 KB-per-vector response also
  stays under 4 MB). An image too big for a JSON batch alone goes raw as
  `application/x-image`, which has no base64 overhead.
- **Retries where waiting helps.** Throttling, serverless cold start
  (`ModelNotReadyException`), 5xx, model errors with a 5xx/0 original status
  (worker died, invocation timed out) and client-side connect/read timeouts
  are retried with exponential backoff and full jitter, within both an
  attempt budget and a time budget (a Lambda behind API Gateway has 29 s).
  botocore's own retries are switched off so this is the only policy.
- **Typed errors.** Once retries are spent: `ServiceUnavailableError` with
  `retry_after` (the API answers 503 + Retry-After). A client error from the
  handler comes back as the same typed error the handler raised
  (`ValidationError`, `InvalidImageError`, `PayloadTooLargeError`), decoded
  from the tagged message (see `clipsearch.sagemaker.protocol`); it is never
  retried. Misconfiguration (unknown endpoint, no permission) is a
  `ConfigurationError`.

The prompt template is applied by the handler, not here: send raw query text
and the endpoint returns what `ClipEncoder.encode_texts` would.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from clipsearch import config
from clipsearch.encoders import check_texts, l2_normalize
from clipsearch.errors import (
    ClipsearchError,
    ConfigurationError,
    ModelMismatchError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    ValidationError,
)
from clipsearch.sagemaker import protocol as wire

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

logger = logging.getLogger(__name__)

# Error codes worth waiting out. ModelNotReadyException is the serverless
# cold start; the rest are the service's and AWS's generic transient codes.
RETRYABLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "ProvisionedThroughputExceededException",
    "ModelNotReadyException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalFailure", "InternalServerError", "InternalDependencyException",
    "RequestTimeout", "RequestTimeoutException",
})
# Permanent problems with the deployment rather than the request.
CONFIGURATION_CODES = frozenset({
    "AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
    "InvalidSignatureException", "ExpiredTokenException", "IncompleteSignature",
    "MissingAuthenticationToken",
})


# With too little time left, calls use one of these read timeouts (seconds, the
# largest that fits); below MIN_CALL_S left, no call starts at all.
SHORTER_READ_TIMEOUTS = (1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0)
MIN_CALL_S = 1.0


class EndpointModelError(ClipsearchError):
    """The model code failed on a request for a reason that is not the caller's.

    The HF toolkit reports *every* handler exception as a 400, so a 400
    without clipsearch's tag is a bug or a resource problem in the container
    (for example CUDA out of memory), not a bad query.
    """

    status = 502
    code = "model_error"
    public_text = "the embedding model failed on this request"


class SageMakerEncoder:
    """Texts and images to unit vectors through `sagemaker-runtime` InvokeEndpoint."""

    def __init__(
        self,
        endpoint_name: str,
        *,
        client: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        model_id: str | None = None,
        dimension: int | None = None,
        prompt_template: str | None = None,
        max_payload_bytes: int = wire.SERVERLESS_MAX_PAYLOAD,
        max_items: int = wire.DEFAULT_MAX_ITEMS_PER_REQUEST,
        max_attempts: int = 5,
        base_delay: float = 0.25,
        max_delay: float = 4.0,
        time_budget: float = 25.0,
        connect_timeout: float = 2.0,
        read_timeout: float = 65.0,
        retry_after: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        time_left: Callable[[], float] | None = None,
    ) -> None:
        """`read_timeout` defaults above the container's 60 s limit, as AWS advises.

        A Lambda behind API Gateway should pass a smaller `read_timeout` and
        `time_budget`, so it can still answer 503 before the gateway's 29 s.
        `time_left` (seconds, asked before every attempt) caps each call, its
        timeouts included, so a Lambda can end a call before its own timeout
        (the ingest Lambda passes its remaining time minus a margin).
        `sleep`, `jitter` and `clock` exist for tests.
        """
        if not endpoint_name:
            raise ConfigurationError("SageMakerEncoder needs an endpoint name")
        self.endpoint_name = endpoint_name
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._client_options: dict[str, Any] | None = None
        if client is None:
            self._client_options = {"region_name": region_name, "endpoint_url": endpoint_url}
            client = self._new_client(read_timeout)
        self.client = client
        self._shorter_clients: dict[float, Any] = {}
        self.time_left = time_left
        self._model_id = model_id
        self._dimension = dimension
        self._prompt_template = prompt_template
        self.max_payload_bytes = int(max_payload_bytes)
        self.max_items = max(1, int(max_items))
        self.max_attempts = max(1, int(max_attempts))
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.time_budget = time_budget
        self.retry_after = retry_after
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock

    def _new_client(self, read_timeout: float) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "sagemaker-runtime",
            **(self._client_options or {}),
            config=Config(connect_timeout=self.connect_timeout, read_timeout=read_timeout,
                          retries={"total_max_attempts": 1}),
        )

    @property
    def min_call_s(self) -> float:
        """The least time one call needs; with less left (`time_left`), none starts."""
        if self._client_options is None:
            return MIN_CALL_S
        return self.connect_timeout + SHORTER_READ_TIMEOUTS[0]

    def _client_within(self, seconds: float) -> Any | None:
        """A client whose call (connect + read timeout) ends within `seconds`; None when
        none can. botocore fixes timeouts per client, so shorter ones come from a small
        ladder of extra clients, made only when time runs short."""
        if seconds >= self.connect_timeout + self.read_timeout:
            return self.client
        if seconds < MIN_CALL_S:
            return None
        if self._client_options is None:  # an injected client: its timeouts are its own
            return self.client
        read = max((t for t in SHORTER_READ_TIMEOUTS if t <= seconds - self.connect_timeout),
                   default=None)
        if read is None:
            return None
        if read not in self._shorter_clients:
            self._shorter_clients[read] = self._new_client(read)
        return self._shorter_clients[read]

    # ------------------------------------------------------------------ protocol

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._probe()
        return str(self._model_id)

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._probe()
        return int(self._dimension or 0)

    @property
    def prompt_template(self) -> str:
        """The template the endpoint applies, when told; else a name for "this endpoint's".

        The handler applies the template packaged with the model, which is
        fixed for the endpoint's life, so naming the endpoint identifies it
        for the query cache's key.
        """
        return self._prompt_template or f"(template packaged on endpoint {self.endpoint_name})"

    def _probe(self) -> None:
        """Ask the endpoint what it serves (one tiny text request) when not told."""
        self.encode_texts(["probe"])

    def encode_texts(self, texts: Sequence[str], *, apply_template: bool = True) -> np.ndarray:
        """Raw query texts; the handler applies the packaged prompt template once."""
        import numpy as np

        check_texts(texts)
        docs = [json.dumps(t, ensure_ascii=False).encode("utf-8") for t in texts]
        rows: list[np.ndarray] = []
        for start, end in self._pack([len(d) + 1 for d in docs], "texts"):
            body = (b'{"texts":[' + b",".join(docs[start:end]) + b"]"
                    + (b"" if apply_template else b',"apply_template":false') + b"}")
            with _offset_fields("texts", start):
                answer = self._invoke_json(body, wire.JSON)
            rows.append(self._matrix(answer.get("text_embeddings"), end - start))
        if not rows:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        return np.concatenate(rows)

    def encode_images(self, images: Sequence[bytes | Image.Image]) -> np.ndarray:
        """Image bytes (JPEG, PNG, ...) or PIL images, in order; any bad one raises."""
        import numpy as np

        raw = [self._image_bytes(img, i) for i, img in enumerate(images)]
        encoded = [base64.b64encode(data) for data in raw]
        rows: list[np.ndarray] = []
        for start, end in self._pack([len(e) + 3 for e in encoded], "images", alone_ok=True):
            if end - start == 1 and not self._fits([len(encoded[start]) + 3]):
                rows.append(self._encode_raw_image(raw[start], start))
                continue
            body = b'{"images":["' + b'","'.join(encoded[start:end]) + b'"]}'
            with _offset_fields("images", start):
                answer = self._invoke_json(body, wire.JSON)
            rows.append(self._matrix(answer.get("image_embeddings"), end - start))
        if not rows:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        return np.concatenate(rows)

    def encode_images_each(self, images: Sequence[bytes | Image.Image]
                           ) -> list[np.ndarray | ClipsearchError]:
        """Like `encode_images`, but a bad image yields its error instead of failing all.

        Uses the handler's JSON Lines path, where each record succeeds or fails
        alone, so ingestion can report one corrupt image and index the rest.
        Transient failures (after retries) still raise `ServiceUnavailableError`:
        they are not the image's fault, and the whole batch should be retried.
        """
        results: list[Any] = [None] * len(images)
        raw: dict[int, bytes] = {}
        lines: dict[int, bytes] = {}
        for i, img in enumerate(images):
            try:
                raw[i] = self._image_bytes(img, i)
            except ClipsearchError as exc:
                results[i] = exc
                continue
            data = base64.b64encode(raw[i]).decode("ascii")
            lines[i] = json.dumps({"id": i, "image": data}).encode("ascii")
        todo = list(lines)
        for start, end in self._pack([len(lines[i]) + 1 for i in todo], "images",
                                     alone_ok=True):
            chosen = todo[start:end]
            if len(chosen) == 1 and not self._fits([len(lines[chosen[0]]) + 1]):
                try:
                    results[chosen[0]] = self._encode_raw_image(raw[chosen[0]], chosen[0])[0]
                except (ValidationError, PayloadTooLargeError) as exc:
                    results[chosen[0]] = exc
                continue
            try:
                results_of = self._invoke_lines(chosen, lines)
            except (EndpointModelError, ValidationError, PayloadTooLargeError) as exc:
                # The endpoint failed the whole request although records fail one by
                # one there: a record it could not isolate. Each alone finds it, so
                # one bad image fails alone (and only its message on ingest).
                if len(chosen) == 1:
                    results[chosen[0]] = exc
                    continue
                logger.warning("endpoint %s failed a %d-record request (%s); retrying each "
                               "record alone", self.endpoint_name, len(chosen), exc.code)
                results_of = {}
                for i in chosen:
                    try:
                        results_of.update(self._invoke_lines([i], lines))
                    except (EndpointModelError, ValidationError, PayloadTooLargeError) as one:
                        results_of[i] = one
            for index, value in results_of.items():
                results[index] = value
        return results

    def _invoke_lines(self, chosen: Sequence[int], lines: dict[int, bytes]
                      ) -> dict[int, np.ndarray | ClipsearchError]:
        """One JSON Lines request; each record's vector or typed error by index."""
        body = b"\n".join(lines[i] for i in chosen) + b"\n"
        text = self._invoke(body, wire.JSONLINES, wire.JSONLINES)
        try:
            answers = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            raise EndpointModelError(
                f"endpoint {self.endpoint_name} returned a line that is not JSON") from None
        if len(answers) != len(chosen) or not all(isinstance(a, dict) for a in answers):
            raise EndpointModelError(
                f"endpoint returned {len(answers)} lines for {len(chosen)} records")
        out: dict[int, np.ndarray | ClipsearchError] = {}
        for index, answer in zip(chosen, answers, strict=True):
            if isinstance(answer.get("error"), dict):
                out[index] = wire.error_from_body(answer["error"], f"images[{index}]")
            else:
                out[index] = self._matrix([answer.get("embedding")], 1)[0]
        return out

    def _encode_raw_image(self, data: bytes, index: int) -> np.ndarray:
        """One image as a raw `application/x-image` body: no base64, 25% smaller."""
        with _offset_fields("image", 0, rename=f"images[{index}]"):
            answer = self._invoke_json(data, wire.X_IMAGE)
        return self._matrix([answer.get("embedding")], 1)

    # ------------------------------------------------------------------ batching

    def _fits(self, sizes: Sequence[int]) -> bool:
        """Whether items of these encoded sizes fit one JSON body (with its framing)."""
        return sum(sizes) + 32 <= self.max_payload_bytes

    def _pack(self, sizes: Sequence[int], name: str, *, alone_ok: bool = False
              ) -> list[tuple[int, int]]:
        """Greedy [start, end) ranges whose bodies stay under both request limits.

        An item too large for a request alone is an error, unless `alone_ok`
        (images, which can still go raw as x-image): it then gets its own range.
        """
        ranges: list[tuple[int, int]] = []
        start, total = 0, 0
        for i, size in enumerate(sizes):
            if not self._fits([size]):
                if not alone_ok:
                    raise PayloadTooLargeError(
                        f"item is {size:,} bytes encoded; a request is limited to "
                        f"{self.max_payload_bytes:,}", field=f"{name}[{i}]")
                if i > start:
                    ranges.append((start, i))
                ranges.append((i, i + 1))
                start, total = i + 1, 0
                continue
            if i > start and (not self._fits([total, size]) or i - start >= self.max_items):
                ranges.append((start, i))
                start, total = i, 0
            total += size
        if start < len(sizes):
            ranges.append((start, len(sizes)))
        return ranges

    def _image_bytes(self, image: bytes | Image.Image, index: int) -> bytes:
        """Bytes pass through untouched; PIL images are sent as lossless PNG."""
        if isinstance(image, bytes | bytearray | memoryview):
            data = bytes(image)
        else:
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            data = buffer.getvalue()
        if not data:
            raise ValidationError("image is empty", field=f"images[{index}]")
        if len(data) > config.MAX_IMAGE_BYTES:
            raise PayloadTooLargeError(
                f"image is larger than {config.MAX_IMAGE_BYTES // (1024 * 1024)} MiB",
                field=f"images[{index}]")
        return data

    # ------------------------------------------------------------------ responses

    def _matrix(self, rows: Any, expected: int) -> np.ndarray:
        import numpy as np

        try:
            matrix = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            matrix = np.zeros((0,), dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != expected:
            raise EndpointModelError(
                f"endpoint {self.endpoint_name} returned {matrix.shape} embeddings for "
                f"{expected} inputs")
        if self._dimension is not None and matrix.shape[1] != self._dimension:
            raise ConfigurationError(
                f"endpoint {self.endpoint_name} returns {matrix.shape[1]}-d vectors but "
                f"{self._dimension}-d were expected; the index and endpoint models differ")
        self._dimension = int(matrix.shape[1])
        # The handler rounds to 7 decimals; re-normalising restores exact unit length.
        return l2_normalize(matrix)

    def _invoke_json(self, body: bytes, content_type: str) -> dict[str, Any]:
        text = self._invoke(body, content_type, wire.JSON)
        try:
            answer = json.loads(text)
        except ValueError:
            raise EndpointModelError(
                f"endpoint {self.endpoint_name} returned non-JSON: {text[:200]!r}") from None
        if not isinstance(answer, dict):
            raise EndpointModelError(f"endpoint {self.endpoint_name} returned {type(answer)}")
        reported = answer.get("model")
        if isinstance(reported, str):
            if self._model_id is None:
                self._model_id = reported
            elif reported != self._model_id:
                # Vectors of another model would be compared with the index's
                # as if they were its own (silently wrong results when the
                # dimensions agree), e.g. during a model switch's deploy.
                raise ModelMismatchError(
                    f"endpoint {self.endpoint_name} serves model {reported!r} but "
                    f"{self._model_id!r} was expected: the endpoint's artifact, the "
                    "stack's model_name and the index must name the same model (in the "
                    "middle of a model switch? see docs/aws-walkthrough.md)")
        return answer

    # ------------------------------------------------------------------ transport

    def _invoke(self, body: bytes, content_type: str, accept: str) -> str:
        """One logical call: retried while waiting can help, mapped to typed errors."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        start = self._clock()
        deadline = start + self.time_budget
        # The caller's hard limit: no attempt, timeout or back-off may run past it.
        limit = start + self.time_left() if self.time_left is not None else math.inf
        reason = "no attempt made"
        attempts = 0
        for attempt in range(1, self.max_attempts + 1):
            client = self._client_within(limit - self._clock())
            if client is None:
                reason = (f"{reason}; then " if attempts else "") + \
                    "too little time left in the invocation for another call"
                break
            attempts = attempt
            try:
                response = client.invoke_endpoint(
                    EndpointName=self.endpoint_name, Body=body,
                    ContentType=content_type, Accept=accept,
                )
                return response["Body"].read().decode("utf-8")
            except ClientError as exc:
                reason = self._classify(exc)  # raises when not retryable
            except (ConnectTimeoutError, ReadTimeoutError, EndpointConnectionError,
                    ConnectionClosedError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt == self.max_attempts:
                break
            delay = self._jitter() * min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
            if self._clock() + delay >= min(deadline, limit):
                break
            logger.info("endpoint %s attempt %d failed (%s); retrying in %.2f s",
                        self.endpoint_name, attempt, reason, delay)
            self._sleep(delay)
        raise ServiceUnavailableError(
            f"the embedding model (SageMaker endpoint {self.endpoint_name}) is unavailable "
            f"after {attempts} attempt(s): {reason}",
            retry_after=self.retry_after,
        )

    def _classify(self, exc: Any) -> str:
        """Return a retry reason, or raise the typed error for a permanent failure."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "ModelError":
            original = exc.response.get("OriginalStatusCode")
            original = int(original) if original not in (None, "") else _status_in(message)
            if original is not None and 400 <= original < 500 and original != 429:
                typed = wire.decode_client_error(
                    str(exc.response.get("OriginalMessage") or "")) \
                    or wire.decode_client_error(message)
                if typed is not None:
                    raise typed from None
                if original == 413:
                    raise PayloadTooLargeError(
                        f"the model server refused the request size: "
                        f"{_original_text(exc.response, message)}", field="body") from None
                raise EndpointModelError(
                    f"the model failed on this request: {_original_text(exc.response, message)}"
                ) from None
            return f"ModelError (original status {original}): {message[:300]}"
        if status == 413:
            raise PayloadTooLargeError(f"SageMaker refused the request size: {message}",
                                       field="body") from None
        if code in RETRYABLE_CODES or status == 429 or status >= 500:
            return f"{code or status}: {message}"
        if code in CONFIGURATION_CODES or status in (401, 403):
            raise ConfigurationError(
                f"cannot call SageMaker endpoint {self.endpoint_name}: {code}: {message}"
            ) from None
        if code == "ValidationError" and "payload" in message.lower():
            raise PayloadTooLargeError(message, field="body") from None
        raise ConfigurationError(
            f"SageMaker endpoint {self.endpoint_name} rejected the call: {code}: {message}"
        ) from None


def _status_in(message: str) -> int | None:
    """The original status quoted in a ModelError message, e.g. "client error (400)"."""
    match = re.search(r"error \((\d+)\) from", message)
    return int(match.group(1)) if match else None


def _original_text(response: dict[str, Any], message: str) -> str:
    """The model server's own message, without the runtime's wrapping."""
    original = str(response.get("OriginalMessage") or "")
    try:
        doc = json.loads(original)
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return doc["message"][:500]
    except ValueError:
        pass
    return (original or message)[:500]


@contextlib.contextmanager
def _offset_fields(name: str, offset: int, rename: str | None = None) -> Iterator[None]:
    """Report a request's `images[2]` as the caller's `images[42]` when it began at 40."""
    try:
        yield
    except ClipsearchError as exc:
        if exc.field:
            if rename is not None and exc.field == name:
                exc.field = rename
            else:
                match = re.fullmatch(rf"{name}\[(\d+)\](.*)", exc.field)
                if match and offset:
                    exc.field = f"{name}[{int(match.group(1)) + offset}]{match.group(2)}"
        raise
