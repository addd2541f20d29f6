"""A local stand-in for a SageMaker endpoint serving the packaged model (any family).

Why it exists: the Lambdas, the bootstrap and `SageMakerEncoder` must be
tested against what SageMaker really does with our artifact, not against a
mock of our own expectations. So the emulator

- loads the artifact the way the Hugging Face container does: it extracts
  `model.tar.gz`, imports `code/inference.py` and calls `model_fn`, then
  `input_fn` -> `predict_fn` -> `output_fn` per request, passing `context`
  only to handler functions that take it, decoding `application/json` bodies
  to `str` first, and answering any handler exception with HTTP 400 and the
  model server's JSON error body (the toolkit cannot send another status);
- serves the container contract (`GET /ping`, `POST /invocations`) and the
  SageMaker runtime API (`POST /endpoints/{name}/invocations`), where model
  failures become `ModelError` (HTTP 424) with `OriginalStatusCode` and
  `OriginalMessage`, so boto3's `sagemaker-runtime` client pointed at it with
  `endpoint_url` behaves as against AWS;
- can inject the service's own faults on the runtime route (throttling,
  serverless cold start, 5xx, invocation timeouts, slow answers), so retry
  logic is tested against real HTTP and real botocore error parsing.

Differences from AWS, on purpose: no authentication; the runtime's oversize
answer is a `ValidationError` whose exact AWS wording is not documented; the
handler runs in this process, so an already-imported `clipsearch` package is
shared with it (a subprocess test checks the vendored copy alone suffices).

What it does not prove. It runs the handler with *our* Python, torch and
transformers, and imitates the toolkit and the model server from their
documented behaviour. So it cannot show that the container's own software
loads the artifact: a processor layout its transformers cannot read, a
keyword argument its transformers lacks, a requirements.txt that replaces
its packages, a worker that dies while `/ping` still says Healthy, or the
model server's request-size limit. That is what the container-parity test
(tests/test_container_parity.py, via `clipsearch.sagemaker.parity`) checks,
with the image's exact versions and the real multi-model-server. The
emulator stays the fast stand-in for the Lambda, encoder and bootstrap tests.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import logging
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from clipsearch.errors import ConfigurationError, ValidationError
from clipsearch.sagemaker import protocol as wire

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT_NAME = "clipsearch-clip"
FAKE_ACCOUNT = "123456789012"
# A request body above this is refused before it is read (memory safety).
HARD_BODY_LIMIT = 128 * 1024 * 1024
_RUNTIME_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
_module_ids = itertools.count()


@dataclass
class Invocation:
    """What the container answered: status, body and Content-Type."""

    status: int
    body: bytes
    content_type: str

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class _Context:
    """The little of the model server's context a handler may look at."""

    system_properties: dict[str, Any]


class ModelHandler:
    """An extracted artifact's `inference.py`, called as the HF toolkit calls it."""

    # Parameter counts of the toolkit's defaults *with* context; a user
    # function with one parameter fewer is called without it.
    _ARITY: ClassVar[dict[str, int]] = {
        "model_fn": 2, "input_fn": 3, "predict_fn": 3, "output_fn": 3, "transform_fn": 5,
    }

    def __init__(self, model_dir: Path, *, cleanup: Path | None = None) -> None:
        self.model_dir = Path(model_dir)
        self._cleanup = cleanup
        script = self.model_dir / "code" / "inference.py"
        if not script.is_file():
            raise ConfigurationError(f"{self.model_dir} has no code/inference.py; build the "
                                     "artifact with scripts/package_model.py")
        self.context = _Context({"model_dir": str(self.model_dir), "gpu_id": 0, "batch_size": 1})
        self.module = _import_script(script)
        names = ("input_fn", "predict_fn", "output_fn")
        transform = getattr(self.module, "transform_fn", None)
        if transform is not None and any(hasattr(self.module, n) for n in names):
            raise ConfigurationError("inference.py defines transform_fn together with "
                                     "input_fn/predict_fn/output_fn; the toolkit refuses that")
        if not hasattr(self.module, "model_fn") or (
            transform is None and not all(hasattr(self.module, n) for n in names)
        ):
            raise ConfigurationError("inference.py must define model_fn and input_fn, "
                                     "predict_fn, output_fn (or transform_fn)")
        started = time.perf_counter()
        self.model = self._call("model_fn", str(self.model_dir))
        self.load_seconds = time.perf_counter() - started

    @classmethod
    def from_artifact(cls, artifact: str | Path, workdir: str | Path | None = None
                      ) -> ModelHandler:
        """Extract `model.tar.gz` (into `workdir`, else a temp dir removed on close)."""
        artifact = Path(artifact)
        if not artifact.is_file():
            raise ConfigurationError(f"model artifact {artifact} does not exist")
        cleanup = None
        if workdir is None:
            cleanup = Path(tempfile.mkdtemp(prefix="clipsearch-endpoint-"))
            target = cleanup
        else:
            target = Path(workdir)
            target.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(artifact, "r:*") as tar:
                tar.extractall(target, filter="data")
        except (tarfile.TarError, OSError) as exc:
            if cleanup:
                shutil.rmtree(cleanup, ignore_errors=True)
            raise ConfigurationError(f"cannot extract {artifact}: {exc}") from None
        return cls(target, cleanup=cleanup)

    def _call(self, name: str, *args: Any) -> Any:
        fn = getattr(self.module, name)
        count = len(inspect.signature(fn).parameters)
        if count == self._ARITY[name]:
            return fn(*args, self.context)
        return fn(*args)

    def invoke(self, body: bytes, content_type: str | None, accept: str | None = None
               ) -> Invocation:
        """One `/invocations` request, with the toolkit's decoding and error rule."""
        if not accept or accept == wire.ANY:
            accept = wire.JSON
        try:
            data: str | bytes = body
            if content_type in wire.UTF8_TYPES:  # exact match, as the toolkit does
                data = body.decode("utf-8")
            if hasattr(self.module, "transform_fn"):
                result = self._call("transform_fn", self.model, data, content_type, accept)
            else:
                decoded = self._call("input_fn", data, content_type)
                prediction = self._call("predict_fn", decoded, self.model)
                result = self._call("output_fn", prediction, accept)
        except Exception as exc:
            logger.info("handler raised %s: %s", type(exc).__name__, exc,
                        exc_info=logger.isEnabledFor(logging.DEBUG))
            return Invocation(400, wire.model_server_error_body(400, str(exc)), wire.JSON)
        if isinstance(result, str):
            result = result.encode("utf-8")
        return Invocation(200, bytes(result), accept)

    def close(self) -> None:
        pool = getattr(self.model, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if self._cleanup is not None:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None


def _import_script(script: Path) -> ModuleType:
    """Import `inference.py` under a unique name, its folder importable.

    The container puts `code/` first on sys.path; in-process we append it
    instead, so the emulator never shadows the host's own packages.
    """
    code_dir = str(script.parent)
    if code_dir not in sys.path:
        sys.path.append(code_dir)
    name = f"_clipsearch_endpoint_{next(_module_ids)}_inference"
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"cannot import {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- faults


FAULTS = ("throttle", "cold_start", "unavailable", "server_error", "timeout", "delay")


@dataclass
class Fault:
    """A SageMaker-side failure to answer instead of (or before) the model."""

    kind: str
    delay: float = 0.0  # seconds to wait before answering ("delay" then answers normally)

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"unknown fault {self.kind!r}; choose from {', '.join(FAULTS)}")


@dataclass
class RecordedRequest:
    """What reached the runtime route, for tests that check batching."""

    path: str
    content_type: str | None
    accept: str | None
    size: int
    status: int = 0


@dataclass
class _FaultQueue:
    queue: deque[Fault] = field(default_factory=deque)
    always: Fault | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> Fault | None:
        with self.lock:
            if self.queue:
                return self.queue.popleft()
            return self.always


# --------------------------------------------------------------------------- server


class EndpointEmulator:
    """HTTP server answering like a SageMaker endpoint hosting `handler`."""

    def __init__(
        self,
        handler: ModelHandler,
        *,
        endpoint_name: str = DEFAULT_ENDPOINT_NAME,
        host: str = "127.0.0.1",
        port: int = 0,
        max_payload_bytes: int = wire.SERVERLESS_MAX_PAYLOAD,
        region: str = "us-east-1",
    ) -> None:
        self.handler = handler
        self.endpoint_name = endpoint_name
        self.max_payload_bytes = max_payload_bytes
        self.region = region
        self.requests: list[RecordedRequest] = []
        self._faults = _FaultQueue()
        self._server = ThreadingHTTPServer((host, port), _make_request_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._served = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host}:{self.port}"

    # -- faults ------------------------------------------------------------

    def inject(self, kind: str, times: int | None = 1, *, delay: float = 0.0) -> None:
        """Answer the next `times` runtime calls with a fault; `times=None`: all of them."""
        fault = Fault(kind, delay)
        with self._faults.lock:
            if times is None:
                self._faults.always = fault
            else:
                self._faults.queue.extend([fault] * times)

    def clear_faults(self) -> None:
        with self._faults.lock:
            self._faults.queue.clear()
            self._faults.always = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> EndpointEmulator:
        """Serve on a daemon thread (tests); `serve_forever` blocks instead (CLI)."""
        self._served = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="sagemaker-emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._served = True
        self._server.serve_forever()

    def stop(self) -> None:
        if self._served:  # shutdown() waits for a serve loop, so only after one ran
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.handler.close()

    def __enter__(self) -> EndpointEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- runtime API ---------------------------------------------------------

    def _log_group_url(self) -> str:
        return (f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region="
                f"{self.region}#logEventViewer:group=/aws/sagemaker/Endpoints/"
                f"{self.endpoint_name}")

    def runtime_error(self, code: str, status: int, message: str,
                      extra: dict[str, Any] | None = None) -> tuple[int, dict[str, str], bytes]:
        """An AWS rest-json error: the code in x-amzn-ErrorType, details in the body."""
        body = {"message": message, **(extra or {})}
        headers = {"Content-Type": "application/x-amz-json-1.1",
                   "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/"
                                       "com.amazon.sagemaker.runtime/"}
        return status, headers, json.dumps(body).encode("utf-8")

    def model_error(self, original_status: int, original_message: str
                    ) -> tuple[int, dict[str, str], bytes]:
        side = "client" if 400 <= original_status < 500 else "server"
        message = (f"Received {side} error ({original_status}) from primary with message "
                   f"\"{original_message}\". See {self._log_group_url()} in account "
                   f"{FAKE_ACCOUNT} for more information.")
        status, headers, _ = self.runtime_error("ModelError", 424, message)
        body = {
            "ErrorCode": ("CLIENT_ERROR_FROM_MODEL" if side == "client"
                          else "INTERNAL_FAILURE_FROM_MODEL"),
            "LogStreamArn": f"arn:aws:logs:{self.region}:{FAKE_ACCOUNT}:log-group:/aws/"
                            f"sagemaker/Endpoints/{self.endpoint_name}",
            "Message": message,
            "OriginalMessage": original_message,
            "OriginalStatusCode": original_status,
        }
        return status, headers, json.dumps(body).encode("utf-8")

    def fault_response(self, fault: Fault) -> tuple[int, dict[str, str], bytes] | None:
        if fault.delay:
            time.sleep(fault.delay)
        if fault.kind == "throttle":
            return self.runtime_error("ThrottlingException", 400, "Rate exceeded")
        if fault.kind == "cold_start":
            return self.runtime_error(
                "ModelNotReadyException", 429,
                "Serverless endpoint resources are still being provisioned. Try again later.")
        if fault.kind == "unavailable":
            return self.runtime_error("ServiceUnavailable", 503, "Service Unavailable")
        if fault.kind == "server_error":
            return self.model_error(500, wire.model_server_error_body(
                500, "Worker died.").decode("utf-8"))
        if fault.kind == "timeout":
            return self.model_error(0, "Your invocation timed out while waiting for a response "
                                       "from container primary. Review the latency metrics for "
                                       "each container in Amazon CloudWatch, resolve the issue, "
                                       "and try again.")
        return None  # "delay": answer normally, late

    def invoke_runtime(self, name: str, body: bytes, content_type: str | None,
                       accept: str | None) -> tuple[int, dict[str, str], bytes]:
        if name != self.endpoint_name:
            return self.runtime_error(
                "ValidationError", 400,
                f"Endpoint {name} of account {FAKE_ACCOUNT} not found.")
        if len(body) > self.max_payload_bytes:
            return self.runtime_error(
                "ValidationError", 400,
                f"Request payload of {len(body):,} bytes exceeds the endpoint's limit of "
                f"{self.max_payload_bytes:,} bytes (4 MB for serverless endpoints).")
        fault = self._faults.next()
        if fault is not None:
            answer = self.fault_response(fault)
            if answer is not None:
                return answer
        result = self.handler.invoke(body, content_type, accept)
        if not result.ok:
            return self.model_error(result.status, result.body.decode("utf-8", "replace"))
        headers = {"Content-Type": result.content_type,
                   "x-Amzn-Invoked-Production-Variant": "AllTraffic"}
        return 200, headers, result.body


def _make_request_handler(emulator: EndpointEmulator) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "clipsearch-sagemaker-emulator"

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            headers = {"x-amzn-RequestId": str(uuid.uuid4()), **headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _read_body(self) -> bytes | None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > HARD_BODY_LIMIT:
                self.close_connection = True
                self._send(413, {"Content-Type": "text/plain"}, b"request body too large")
                return None
            return self.rfile.read(length) if length else b""

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/ping":
                self._send(200, {"Content-Type": wire.JSON}, b'{"status": "Healthy"}\n')
            else:
                self._send(404, {"Content-Type": "text/plain"}, b"not found\n")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            body = self._read_body()
            if body is None:
                return
            content_type = self.headers.get("Content-Type")
            accept = self.headers.get("Accept")
            record = RecordedRequest(path, content_type, accept, len(body))
            emulator.requests.append(record)
            if path == "/invocations":
                result = emulator.handler.invoke(body, content_type, accept)
                record.status = result.status
                self._send(result.status, {"Content-Type": result.content_type}, result.body)
                return
            match = _RUNTIME_PATH.match(path)
            if match is None:
                record.status = 404
                self._send(404, {"Content-Type": "text/plain"}, b"not found\n")
                return
            status, headers, payload = emulator.invoke_runtime(
                match.group("name"), body, content_type, accept)
            record.status = status
            self._send(status, headers, payload)

    return _Handler


def serve(artifact: str | Path, *, port: int = 8080, endpoint_name: str = DEFAULT_ENDPOINT_NAME,
          host: str = "127.0.0.1") -> None:
    """`clipsearch model serve`: load, print how to call it, serve until Ctrl-C."""
    if not 0 <= port <= 65535:
        raise ValidationError(f"--port must be 0-65535, got {port}", field="port")
    started = time.perf_counter()
    handler = ModelHandler.from_artifact(artifact)
    try:
        emulator = EndpointEmulator(handler, endpoint_name=endpoint_name, host=host, port=port)
    except OSError as exc:
        handler.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    print(f"loaded {artifact} in {time.perf_counter() - started:.1f} s", flush=True)
    print(f"endpoint {endpoint_name!r} listening on {emulator.url}", flush=True)
    print(f"  container API: GET {emulator.url}/ping, POST {emulator.url}/invocations")
    print(f"  runtime API:   boto3.client('sagemaker-runtime', endpoint_url='{emulator.url}')"
          f".invoke_endpoint(EndpointName='{endpoint_name}', ...)", flush=True)
    try:
        emulator.serve_forever()
    finally:
        emulator.stop()
