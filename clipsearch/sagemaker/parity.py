"""The SageMaker container's real serving stack, started locally on an artifact.

The emulator (`clipsearch.sagemaker.emulator`) runs our handler in our own
environment, so it cannot see what the container's software does with the
artifact. This module starts what the container's `serve` starts: the
Hugging Face inference toolkit's `serving.main()` (the DLC's
`dockerd-entrypoint.py`), which writes the model server's config, starts the
real multi-model-server (Java) and its Python workers, which load
`code/inference.py` and call `model_fn`. It runs in the container-parity
virtualenv built by `scripts/parity_env.py` (the image's exact pins).

SageMaker's layout is emulated in a temporary directory instead of `/opt/ml`:
the artifact is extracted into `<dir>/opt/ml/model` and `SAGEMAKER_BASE_DIR`
(read by sagemaker-inference) points there. One thing is redirected by hand:
sagemaker-inference writes the model server's config to the fixed path
`/etc/sagemaker-mms.properties`, so the launcher points that constant at the
temporary directory before calling the entry point. TMPDIR/TEMP are private
too, so the model server's pid file and worker sockets do not collide with
another stack on the same machine.

Readiness is a real answer, not `/ping`: multi-model-server answers `/ping`
"Healthy" even while its worker dies on every model load, so `start` waits
until an invocation succeeds, and fails early (with the log) when the worker
keeps dying or the server exits.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clipsearch.sagemaker import container

# What the container's ENTRYPOINT runs for `serve`, with the one redirect above.
_LAUNCHER = """
import sys
import sagemaker_inference.model_server as model_server
import sagemaker_huggingface_inference_toolkit.mms_model_server as hf_model_server
model_server.MMS_CONFIG_FILE = hf_model_server.MMS_CONFIG_FILE = sys.argv[1]
from sagemaker_huggingface_inference_toolkit import serving
serving.main()
"""
# The toolkit's calls on our handler, in the container's Python without the
# model server: body on stdin, the answer on stdout.
_IN_PROCESS = """
import sys
sys.path.insert(0, sys.argv[1] + "/code")
import inference
model = inference.model_fn(sys.argv[1])
request = inference.input_fn(sys.stdin.buffer.read(), sys.argv[2])
answer = inference.output_fn(inference.predict_fn(request, model), sys.argv[2])
sys.stdout.write(answer if isinstance(answer, str) else answer.decode())
"""
# Logged by the model server each time a worker process exits (e.g. model_fn raised).
WORKER_DIED = "Backend worker process died"
# A readiness probe the handler must answer.
READY_PROBE = json.dumps({"texts": ["ready"]}).encode()
# The toolkit loads the model on the first request and answers a model_fn
# failure as a 4xx, without the worker dying: that many refused probes in a row
# mean the model does not load (a model that is still loading does not answer).
REFUSED_PROBES = 3


class ServingStackError(RuntimeError):
    """The serving stack did not become ready; the message carries the log's tail."""


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class ServingStack:
    """A running model server on 127.0.0.1:`port` with the artifact loaded."""

    port: int
    root: Path
    process: subprocess.Popen
    log_path: Path
    started_at: float
    healthy_ping_s: float | None = None
    ready_s: float | None = None
    _closed: bool = field(default=False, repr=False)

    @property
    def model_dir(self) -> Path:
        return self.root / "opt" / "ml" / "model"

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: float = 120) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            answer = conn.getresponse()
            return Response(answer.status, answer.getheader("Content-Type") or "", answer.read())
        finally:
            conn.close()

    def ping(self) -> Response:
        return self.request("GET", "/ping", timeout=5)

    def invoke(self, body: bytes, content_type: str, accept: str | None = None) -> Response:
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        return self.request("POST", "/invocations", body, headers)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Kill the launcher, the model server and its workers (one process group)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def free_port() -> int:
    """A free port below 32767: the model server refuses any port >= Short.MAX_VALUE,
    which rules out the kernel's ephemeral range that `bind(0)` picks from."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # the model server binds every address
            except OSError:
                continue
            return port
    raise ServingStackError("no free port between 20000 and 32000")


def extract_artifact(artifact: Path, root: Path) -> Path:
    """Lay the artifact out as SageMaker does: `model.tar.gz` extracted into opt/ml/model."""
    model_dir = root / "opt" / "ml" / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(artifact, "r:gz") as tar:
        tar.extractall(model_dir, filter="data")
    return model_dir


def serving_environment(root: Path, port: int, venv: Path,
                        extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The container's environment, for a stack rooted at `root`."""
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        # A clean environment: nothing from the caller's venv or PYTHONPATH leaks in.
        # The toolkit starts `multi-model-server` from PATH, as in the image.
        "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(root),
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "UTF-8",
        "TEMP": str(tmp), "TMPDIR": str(tmp),
        "SAGEMAKER_BASE_DIR": str(root / "opt" / "ml"),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        # Nothing may be fetched at start (the artifact is self-contained).
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        **container.MODEL_ENVIRONMENT,
    }
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    env.update(extra or {})
    return env


def invoke_in_process(artifact: Path, root: Path, venv: Path, body: bytes,
                      content_type: str, timeout: float = 180.0) -> str:
    """One request through the handler in the parity venv's Python, without the model server.

    Seconds instead of a stack start: it proves the container's Python,
    torch and transformers load the artifact (with only its code/ on the
    path) and reproduce the vectors, though not the model server's part.
    """
    model_dir = extract_artifact(artifact, root)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _IN_PROCESS, str(model_dir), content_type],
        input=body, capture_output=True, cwd=root, timeout=timeout,
        env=serving_environment(root, 0, venv))
    if result.returncode != 0:
        raise ServingStackError(f"the handler failed in the container's Python:\n"
                                f"{_tail(result.stderr.decode(errors='replace'))}")
    return result.stdout.decode()


def start(artifact: Path, root: Path, venv: Path, *, environment: Mapping[str, str] | None = None,
          timeout: float = 240.0) -> ServingStack:
    """Extract `artifact` under `root`, start the toolkit's entry point, wait until it serves.

    Raises ServingStackError (and stops everything) when the worker cannot
    load the model, the server exits, or `timeout` passes.
    """
    root.mkdir(parents=True, exist_ok=True)
    extract_artifact(artifact, root)
    port = free_port()
    env = serving_environment(root, port, venv, environment)
    log_path = root / "serving.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "python"), "-c", _LAUNCHER, str(root / "sagemaker-mms.properties")],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack = ServingStack(port, root, process, log_path, time.monotonic())
    try:
        _wait_ready(stack, timeout)
    except BaseException:
        stack.stop()
        raise
    return stack


def _wait_ready(stack: ServingStack, timeout: float) -> None:
    deadline = stack.started_at + timeout
    refused = 0
    while True:
        if stack.process.poll() is not None:
            raise ServingStackError(f"the serving stack exited ({stack.process.returncode}) "
                                    f"before serving:\n{_tail(stack.log())}")
        log = stack.log()
        if log.count(WORKER_DIED) >= 2:  # the model server retries; twice is a pattern
            raise ServingStackError(f"the model server's worker keeps dying while loading the "
                                    f"model:\n{_tail(log)}")
        try:
            if stack.healthy_ping_s is None:
                if stack.ping().status == 200:
                    stack.healthy_ping_s = time.monotonic() - stack.started_at
            else:
                answer = stack.invoke(READY_PROBE, "application/json")
                if answer.status == 200:
                    stack.ready_s = time.monotonic() - stack.started_at
                    return
                refused = refused + 1 if 400 <= answer.status < 500 else 0
                if refused >= REFUSED_PROBES:
                    raise ServingStackError(
                        f"the handler refuses every request ({answer.status} "
                        f"{answer.body[:300]!r}); the model does not load:\n{_tail(stack.log())}")
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise ServingStackError(f"not serving after {timeout:.0f}s:\n{_tail(stack.log())}")
        time.sleep(0.5)


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])
