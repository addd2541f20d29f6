#!/usr/bin/env python3
"""Run a real single-node OpenSearch 2.19.1 (+ k-NN 2.19.1.0) on 127.0.0.1.

Why this exists
---------------
clipsearch's search backend is OpenSearch with the k-NN plugin, and its tests
should talk to the real engine, not a mock. The usual routes are closed here:
there is no Docker, and the OpenSearch release tarballs cannot be downloaded
(only package registries are reachable). Maven Central, however, carries the
server (``org.opensearch:opensearch``), the modules a distribution bundles
(netty4 transport, analysis-common, painless, reindex, mapper-extras) and the
k-NN plugin zip. So this script builds a tiny Maven project
(``scripts/opensearch/pom.xml`` + one launcher class, ``ClipsearchNode``) that
puts all of them on one classpath and starts an embedded ``Node`` with them as
classpath plugins.

Usage::

    python scripts/opensearch_node.py start [--port 9250] [--data DIR] [--heap 1g]
                                            [--no-painless] [--full-jit] [--timeout S]
    python scripts/opensearch_node.py status [--port N]   # exit 0 running, 1 not
    python scripts/opensearch_node.py stop [--port N | --all]
    python scripts/opensearch_node.py build [--force]     # only build the classpath

or, from Python (e.g. a pytest fixture)::

    from opensearch_node import start, stop, status
    url = start(port, tmp_path / "os-data", "1g")   # -> "http://127.0.0.1:<port>"
    ...
    stop(port)

The default port is 9250 (not 9200, to stay clear of any other OpenSearch or
Elasticsearch on the machine); ``stop`` without ``--port`` stops only that one.
The node runs detached (own session), so it outlives this script; state lives
under ``$CLIPSEARCH_OPENSEARCH_HOME`` (default ``~/.cache/clipsearch/opensearch``)::

    build-<hash>/lib, build-<hash>/knn   Maven output (the classpath)
    cds/<key>.jsa                        JVM class-data-sharing archive
    nodes/<port>/node.pid, node.log      pid file and log of the node on <port>
    nodes/<port>/node.json               how it was started (data dir, heap, ...)
    nodes/<port>/home, nodes/<port>/data path.home and default path.data

The Maven build runs on first use and again only when ``pom.xml`` or the Java
source changes (content hash). The first start after a build also records a
class-data-sharing (CDS) archive, written by the JVM when that node is stopped
cleanly (that one stop takes ~15 s); later starts load it, which halves JVM
start-up. The JVM runs with the C1 JIT only (see ``start``).

Measured on the 2-core box while other jobs kept it at load ~7 (so an idle
machine does better): cold ~/.m2, Maven build 31 s (~90 MB downloaded);
warm ~/.m2, build 17 s + first start 12 s; cached start 4.7-5.9 s, or
2.9-4.4 s with ``--no-painless``. A node uses ~230 MB RSS idle (1 GB heap
reserved) and ~640 MB after indexing 5k 512-d vectors.

Things to know about the engine:

* No native k-NN libraries. The Maven zip ships only jars, so the faiss and
  nmslib engines (faiss is k-NN's default) cannot work: every ``knn_vector``
  mapping on an ``"index.knn": true`` index must say
  ``"method": {"name": "hnsw", "engine": "lucene", ...}``. The launcher
  rejects other engines with a 400 on create-index / put-mapping (without
  that the shard dies on its first refresh with ``UnsatisfiedLinkError`` and
  the request hangs); mappings from index templates are not checked.
* One node, so new indices default to 0 replicas
  (``cluster.default_number_of_replicas`` is set on start) and health is green.
* k-NN's painless functions (``cosineSimilarity``, ``l2Squared``, ...) and
  its ``"lang": "knn"`` scoring script both work.
* No security plugin: plain HTTP, no auth.

Only the standard library is used. Needs ``java`` (17+) and ``mvn`` on PATH
(``JAVA_HOME`` is honoured for java).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

OPENSEARCH_VERSION = "2.19.1"
KNN_VERSION = "2.19.1.0"
DEFAULT_PORT = 9250
DEFAULT_HEAP = "1g"
DEFAULT_START_TIMEOUT_S = 180.0
DEFAULT_STOP_TIMEOUT_S = 30.0
HOST = "127.0.0.1"

MAVEN_PROJECT = Path(__file__).resolve().parent / "opensearch"
MAIN_CLASS = "clipsearch.opensearch.ClipsearchNode"

# Mirrors the relevant parts of a distribution's config/jvm.options.
JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+HeapDumpOnOutOfMemoryError",
    "-Dfile.encoding=UTF-8",
    "-Djava.locale.providers=SPI,COMPAT",
    "-Djna.nosys=true",
    "-Dio.netty.noUnsafe=true",
    "-Dio.netty.noKeySetOptimization=true",
    "-Dio.netty.recycler.maxCapacityPerThread=0",
    "-Dlog4j.shutdownHookEnabled=false",
    "-Dlog4j2.disable.jmx=true",
    # The CDS dump warns about every pre-Java-6 class in the jars; not useful.
    "-Xlog:cds*=error",
]


class OpenSearchNodeError(RuntimeError):
    """The node could not be built, started or stopped."""


# --------------------------------------------------------------------------
# paths and small helpers
# --------------------------------------------------------------------------


def home_dir() -> Path:
    """Cache/state directory (``$CLIPSEARCH_OPENSEARCH_HOME`` or ~/.cache/...)."""
    env = os.environ.get("CLIPSEARCH_OPENSEARCH_HOME")
    if env:
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().resolve() / "clipsearch" / "opensearch"


def _node_dir(port: int) -> Path:
    return home_dir() / "nodes" / str(port)


def _url(port: int) -> str:
    return f"http://{HOST}:{port}"


def _log(msg: str) -> None:
    print(f"[opensearch_node] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (serialises concurrent start/stop/build calls)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log, Java stack frames dropped."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    kept = [ln for ln in text.splitlines() if not ln.startswith("\tat ")]
    return "\n".join(kept[-lines:])


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise OpenSearchNodeError("java not found (install a JDK 17+ or set JAVA_HOME)")
    return java


# --------------------------------------------------------------------------
# Maven build (cached by content hash)
# --------------------------------------------------------------------------


def _source_hash() -> str:
    digest = hashlib.sha256()
    files = [MAVEN_PROJECT / "pom.xml", *sorted((MAVEN_PROJECT / "src").rglob("*"))]
    for f in files:
        if f.is_file():
            digest.update(str(f.relative_to(MAVEN_PROJECT)).encode() + b"\0")
            digest.update(f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _classpath(build: Path) -> str:
    return f"{build / 'lib'}/*{os.pathsep}{build / 'knn'}/*"


def _running_build_dirs() -> set[str]:
    used = set()
    for info in _all_node_infos():
        if _pid_alive(int(info.get("pid", 0))):
            used.add(str(info.get("build", "")))
    return used


def ensure_built(force: bool = False) -> Path:
    """Build the classpath with Maven unless an up-to-date build is cached.

    Returns the build directory (``lib/`` and ``knn/`` inside it).
    """
    home = home_dir()
    key = _source_hash()
    build = home / f"build-{key}"
    stamp = build / ".complete"
    with _locked(home / "build.lock"):
        if stamp.exists() and not force:
            stamp.touch()  # last-used time, see the clean-up below
            return build
        mvn = shutil.which("mvn")
        if not mvn:
            raise OpenSearchNodeError("mvn (Apache Maven) not found on PATH")
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir(parents=True)
        log = home / "maven.log"
        cmd = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(MAVEN_PROJECT / "pom.xml"),
            f"-Dclipsearch.build.dir={build}",
            "package",
        ]
        _log(
            f"building OpenSearch {OPENSEARCH_VERSION} + k-NN {KNN_VERSION} classpath "
            f"with Maven (first time only; ~60 MB from Maven Central into ~/.m2) ..."
        )
        t0 = time.monotonic()
        with open(log, "wb") as out:
            rc = subprocess.call(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=MAVEN_PROJECT,
            )
        if rc != 0 or not (build / "lib").is_dir() or not (build / "knn").is_dir():
            text = log.read_text(errors="replace")
            print(text[-20000:], file=sys.stderr)
            shutil.rmtree(build, ignore_errors=True)
            raise OpenSearchNodeError(f"Maven build failed (exit {rc}); full log: {log}")
        stamp.write_text(key + "\n")
        _log(f"build done in {time.monotonic() - t0:.1f}s -> {build}")
        # Drop builds of older sources (and their CDS archives) unless a node
        # runs from one or it was used in the last hour (another checkout).
        in_use = _running_build_dirs()
        for old in home.glob("build-*"):
            try:
                idle = time.time() - (old / ".complete").stat().st_mtime
            except OSError:
                idle = float("inf")
            if old != build and str(old) not in in_use and idle > 3600:
                shutil.rmtree(old, ignore_errors=True)
                for jsa in (home / "cds").glob(f"{old.name}-*"):
                    with contextlib.suppress(OSError):
                        jsa.unlink()
        return build


# --------------------------------------------------------------------------
# class-data-sharing archive (start-up speed)
# --------------------------------------------------------------------------


def _cds_archive(build: Path, java: str) -> Path:
    """Archive path keyed by build and JVM (a stale one would just be ignored)."""
    real = Path(java).resolve()
    st = real.stat()
    key = hashlib.sha256(f"{build}|{real}|{st.st_size}|{st.st_mtime_ns}".encode())
    return home_dir() / "cds" / f"{build.name}-{key.hexdigest()[:12]}.jsa"


def _finish_cds(info: dict[str, object]) -> None:
    """After a clean stop, publish the archive the JVM wrote at exit."""
    pending = info.get("cds_pending")
    final = info.get("cds_archive")
    if not pending or not final:
        return
    src = Path(str(pending))
    try:
        if src.stat().st_size > 0 and not Path(str(final)).exists():
            os.replace(src, str(final))
    except OSError:
        pass
    with contextlib.suppress(OSError):
        src.unlink()


# --------------------------------------------------------------------------
# process / health inspection
# --------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) ClipsearchNode JVM."""
    if pid <= 0:
        return False
    if not Path("/proc/self").is_dir():  # not Linux: best effort
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    proc = Path(f"/proc/{pid}")
    try:
        if MAIN_CLASS.encode() not in (proc / "cmdline").read_bytes():
            return False  # pid reused by something else
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _read_info(port: int) -> dict[str, object] | None:
    try:
        return dict(json.loads((_node_dir(port) / "node.json").read_text()))
    except (OSError, ValueError):
        return None


def _all_node_infos() -> list[dict[str, object]]:
    infos = []
    for d in sorted((home_dir() / "nodes").glob("*")):
        if d.name.isdigit():
            info = _read_info(int(d.name))
            if info:
                infos.append(info)
    return infos


def _running_pid(port: int) -> int | None:
    try:
        pid = int((_node_dir(port) / "node.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


# Loopback only: never go through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(
    method: str, url: str, body: dict[str, object] | None = None, timeout: float = 2.0
) -> dict[str, object] | None:
    """JSON request; None when nothing (healthy) answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return dict(json.loads(resp.read() or b"{}"))
    except (OSError, http.client.HTTPException, ValueError):
        # URLError/HTTPError/timeouts are OSErrors; ValueError: not JSON.
        return None


def _health(port: int) -> str | None:
    """Cluster health colour, or None if the HTTP port does not answer."""
    res = _http("GET", f"{_url(port)}/_cluster/health", timeout=2.0)
    return str(res.get("status")) if res else None


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _wait_healthy(port: int, pid: int, deadline: float, log: Path) -> None:
    delay = 0.05
    while True:
        if not _pid_alive(pid):
            raise OpenSearchNodeError(
                f"OpenSearch exited during start-up; log {log}:\n{_tail(log)}"
            )
        if _health(port) in ("green", "yellow"):
            return
        if time.monotonic() > deadline:
            raise OpenSearchNodeError(
                f"OpenSearch on port {port} not healthy after the start timeout "
                f"(pid {pid}); log {log}:\n{_tail(log)}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def start(
    port: int = DEFAULT_PORT,
    data_dir: Path | None = None,
    heap: str = DEFAULT_HEAP,
    *,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    full_jit: bool = False,
    painless: bool = True,
    java_opts: list[str] | None = None,
) -> str:
    """Start (or reuse) the node on ``port``; return its URL once yellow/green.

    ``data_dir`` defaults to a persistent dir under the state dir. If a node is
    already running on ``port`` it is reused, unless ``data_dir`` was given and
    differs from the running node's (then OpenSearchNodeError).

    By default the JVM only uses the C1 JIT (``-XX:TieredStopAtLevel=1``):
    on a busy 2-core box that starts ~2x faster and was also faster for
    test-sized work (5k docs, 200 queries). ``full_jit=True`` (CLI
    ``--full-jit``) restores C2 for long, heavy runs such as benchmarks.
    ``painless=False`` (CLI ``--no-painless``) leaves the painless script
    engine out, the slowest plugin to start (~40% of start-up): fine unless
    you need painless scripts (k-NN's own ``"lang": "knn"`` scripts still work).
    ``java_opts`` (and ``$CLIPSEARCH_OPENSEARCH_JAVA_OPTS``) add JVM flags.
    """
    node_dir = _node_dir(port)
    log = node_dir / "node.log"
    deadline = time.monotonic() + timeout
    with _locked(node_dir / "node.lock"):
        pid = _running_pid(port)
        if pid is not None:
            info = _read_info(port) or {}
            running_data = str(info.get("data", ""))
            if data_dir is not None and Path(data_dir).resolve() != Path(running_data):
                raise OpenSearchNodeError(
                    f"a node is already running on port {port} with data dir "
                    f"{running_data}; stop it first or use another port"
                )
            _wait_healthy(port, pid, deadline, log)
            return _url(port)
        if _port_in_use(port):
            raise OpenSearchNodeError(f"port {port} on {HOST} is in use by another process")

        build = ensure_built()
        java = _java()
        data = Path(data_dir).resolve() if data_dir is not None else node_dir / "data"
        path_home = node_dir / "home"
        for d in (data, path_home):
            d.mkdir(parents=True, exist_ok=True)

        cds_final = _cds_archive(build, java)
        cds_final.parent.mkdir(parents=True, exist_ok=True)
        cds_pending: Path | None = None
        for stale in cds_final.parent.glob(f"{cds_final.stem}.*.tmp"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > 24 * 3600:
                    stale.unlink()
        cds_flags: list[str] = []
        if cds_final.exists():
            cds_flags = [f"-XX:SharedArchiveFile={cds_final}"]
        elif painless:  # record from full runs only, so the archive covers painless
            cds_pending = cds_final.with_name(f"{cds_final.stem}.{secrets.token_hex(4)}.tmp")
            cds_flags = [f"-XX:ArchiveClassesAtExit={cds_pending}"]

        tuning = [] if full_jit else ["-XX:TieredStopAtLevel=1"]
        if not painless:
            tuning.append("-Dclipsearch.painless=false")
        extra = list(java_opts or [])
        extra += os.environ.get("CLIPSEARCH_OPENSEARCH_JAVA_OPTS", "").split()
        cmd = [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            *JVM_FLAGS,
            *tuning,
            *cds_flags,
            f"-Djava.io.tmpdir={path_home / 'tmp'}",
            *extra,
            "-cp",
            _classpath(build),
            MAIN_CLASS,
            f"path.home={path_home}",
            f"path.data={data}",
            f"http.port={port}",
            f"network.host={HOST}",
        ]
        (path_home / "tmp").mkdir(exist_ok=True)
        # Launch through sh so the JVM is re-parented to init: no zombie and no
        # "subprocess still running" warning in the (possibly long-lived) caller.
        launcher = 'exec "$@" </dev/null >"$CLIPSEARCH_NODE_LOG" 2>&1 & echo $!'
        env = dict(os.environ, CLIPSEARCH_NODE_LOG=str(log))
        t0 = time.monotonic()
        out = subprocess.run(
            ["/bin/sh", "-c", launcher, "sh", *cmd],
            env=env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            check=True,
            cwd=node_dir,
        )
        pid = int(out.stdout.decode().strip())
        (node_dir / "node.pid").write_text(f"{pid}\n")
        info = {
            "pid": pid,
            "port": port,
            "url": _url(port),
            "data": str(data),
            "heap": heap,
            "painless": painless,
            "build": str(build),
            "log": str(log),
            "cds_archive": str(cds_final),
            "cds_pending": str(cds_pending) if cds_pending else None,
            "started_at": time.time(),
            "command": cmd,
        }
        (node_dir / "node.json").write_text(json.dumps(info, indent=2) + "\n")

        try:
            _wait_healthy(port, pid, deadline, log)
            # A single node can never assign replicas: default new indices to 0
            # so health stays green. Kept in the cluster state; cheap to repeat.
            res = _http(
                "PUT",
                f"{_url(port)}/_cluster/settings",
                {"persistent": {"cluster.default_number_of_replicas": 0}},
                timeout=30.0,
            )
            if not res or not res.get("acknowledged"):
                raise OpenSearchNodeError(f"could not set default replicas: {res}")
        except BaseException:
            # Leave nothing behind (timeout, Ctrl-C, ...); the log stays.
            _kill(pid, DEFAULT_STOP_TIMEOUT_S)
            with contextlib.suppress(OSError):
                (node_dir / "node.pid").unlink()
            raise
        _log(
            f"OpenSearch {OPENSEARCH_VERSION} up on {_url(port)} in "
            f"{time.monotonic() - t0:.1f}s (pid {pid}, log {log})"
        )
        return _url(port)


def _kill(pid: int, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout`` s; True if it exited on SIGTERM."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _pid_alive(pid):
        return True
    _log(f"pid {pid} ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _pid_alive(pid):
        time.sleep(0.05)
    return False


def _stop_port(port: int, timeout: float) -> bool:
    """Stop the node on ``port``; True if one was running."""
    node_dir = _node_dir(port)
    with _locked(node_dir / "node.lock"):
        info = _read_info(port) or {}
        pid = _running_pid(port)
        if pid is None:
            with contextlib.suppress(OSError):
                (node_dir / "node.pid").unlink()
            return False
        if info.get("cds_pending") and not Path(str(info.get("cds_archive"))).exists():
            # The JVM writes its class-data-sharing archive while exiting; give
            # it time (can take ~20 s on a busy 2-core box) before SIGKILL.
            timeout = max(timeout, 90.0)
        clean = _kill(pid, timeout)
        with contextlib.suppress(OSError):
            (node_dir / "node.pid").unlink()
        if clean:
            _finish_cds(info)
        return True


def stop(port: int = DEFAULT_PORT, *, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
    """Stop the node on ``port``: SIGTERM, then SIGKILL after ``timeout`` s.

    A no-op if none is running there.
    """
    if _stop_port(port, timeout):
        _log(f"stopped OpenSearch on port {port}")


def stop_all(*, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
    """Stop every node started from this state dir (other sessions' too)."""
    for d in sorted((home_dir() / "nodes").glob("*")):
        if d.name.isdigit():
            stop(int(d.name), timeout=timeout)


def status(port: int | None = None) -> str | None:
    """URL of the running node on ``port`` (default: any, 9250 first), else None."""
    if port is not None:
        ports = [port]
    else:
        others = [
            int(d.name)
            for d in (home_dir() / "nodes").glob("*")
            if d.name.isdigit() and int(d.name) != DEFAULT_PORT
        ]
        ports = [DEFAULT_PORT, *sorted(others)]
    for p in ports:
        if _running_pid(p) is not None and _health(p) is not None:
            return _url(p)
    return None


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a single-node OpenSearch 2.19.1 + k-NN built from Maven Central jars."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start in the background; print the URL")
    p_start.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})"
    )
    p_start.add_argument(
        "--data", type=Path, default=None, help="path.data (default: <state dir>/nodes/<port>/data)"
    )
    p_start.add_argument(
        "--heap", default=DEFAULT_HEAP, help=f"JVM heap, -Xms/-Xmx (default {DEFAULT_HEAP})"
    )
    p_start.add_argument(
        "--full-jit",
        action="store_true",
        help="enable the C2 JIT (slower start, faster long/heavy runs)",
    )
    p_start.add_argument(
        "--no-painless",
        action="store_true",
        help="leave out the painless script engine (faster start)",
    )
    p_start.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT_S,
        help="seconds to wait for yellow/green health",
    )
    p_stop = sub.add_parser("stop", help="stop the node (SIGTERM, then SIGKILL)")
    which = p_stop.add_mutually_exclusive_group()
    which.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})"
    )
    which.add_argument(
        "--all", action="store_true", help="stop every node in the state dir, any port"
    )
    p_stop.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT_S,
        help="seconds between SIGTERM and SIGKILL",
    )
    p_status = sub.add_parser("status", help="print state; exit 0 if running, 1 if not")
    p_status.add_argument("--port", type=int, default=None)
    p_build = sub.add_parser("build", help="only build (or rebuild) the classpath")
    p_build.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            if _running_pid(args.port) is not None:
                _log(f"already running on port {args.port}")
            url = start(
                args.port,
                args.data,
                args.heap,
                timeout=args.timeout,
                full_jit=args.full_jit,
                painless=not args.no_painless,
            )
            print(url, flush=True)
            return 0
        if args.command == "stop":
            if args.all:
                stop_all(timeout=args.timeout)
            else:
                stop(args.port, timeout=args.timeout)
            return 0
        if args.command == "status":
            url = status(args.port)
            if url:
                print(f"running: {url}")
                return 0
            for p in [args.port] if args.port else [DEFAULT_PORT]:
                pid = _running_pid(p)
                if pid is not None:
                    print(f"starting or unresponsive (pid {pid}): {_url(p)}")
                    return 1
            print("not running")
            return 1
        if args.command == "build":
            print(ensure_built(force=args.force))
            return 0
    except OpenSearchNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
