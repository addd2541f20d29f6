"""Every tunable of clipsearch in one place.

Defaults live here and nowhere else; each can be overridden with an
environment variable so the CLI, the local server and the Lambdas read the
same knobs the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
# CLIP's default query template. Each model family has its own default (SigLIP,
# SigLIP 2 and OpenCLIP take the bare query; see clipsearch/encoders); an
# explicit template (CLIPSEARCH_PROMPT_TEMPLATE, --prompt-template) overrides it.
DEFAULT_PROMPT_TEMPLATE = "a photo of {}"
DEFAULT_DATA_DIR = ".clipsearch"

# API limits. They are part of the contract, so the local server and the
# query Lambda enforce exactly the same numbers.
K_MIN = 1
K_MAX = 100
OFFSET_MAX = 1000
MAX_TEXT_CHARS = 1000
# API Gateway caps a request at 10 MB and SageMaker serverless at 4 MB;
# a base64 image of 3 MB stays under both once wrapped in JSON.
MAX_IMAGE_BYTES = 3 * 1024 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_FILTER_CLAUSES = 16
# The local server: seconds a client has to send its request head, and then
# its body. Generous for any real client; a silent one is cut off.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
# Every JSON document we parse (request bodies, catalog lines, SQS/S3 events,
# endpoint requests) goes through clipsearch.strict: nesting deeper than this
# is refused (our documents need 6 at most), and integers must stay within
# what a float64 holds exactly (numeric filters, OpenSearch, JavaScript).
JSON_MAX_DEPTH = 32
JSON_MAX_INT = 2**53 - 1

# Search modes. `hybrid` fuses the vector and lexical (BM25) signals; it is
# the default whenever the query has text, `vector` for image-only queries
# and "more like this" (which have no words to match).
SEARCH_MODES = ("vector", "lexical", "hybrid")
FUSION_METHODS = ("rrf", "weighted")
DEFAULT_FUSION = "rrf"
DEFAULT_LEXICAL_WEIGHT = 0.5
# How deep each signal is read before fusing. Fixed, so that every page of a
# hybrid search slices the same fused list (see clipsearch/fusion.py); a
# hybrid search therefore reaches at most 2 x RANK_WINDOW products deep.
RANK_WINDOW = 100

# Product model limits.
MAX_ID_CHARS = 256
MAX_TITLE_CHARS = 2000
# An image path or URI in a catalog line (file systems stop at 4096).
MAX_IMAGE_REF_CHARS = 4096
MAX_ATTRIBUTES = 64
# A listing's photos (ABO listings have up to ~20) and its free-text
# description; readers that meet longer descriptions (ABO) cut them here.
MAX_IMAGES = 32
MAX_DESCRIPTION_CHARS = 10_000

# LocalIndex: below this many vectors exact search is used. It is exact by
# construction and, measured on this project's 2-core box (docs/benchmarks.md),
# costs about 1 ms per 10k 512-d vectors: ~25 ms at 250k, about what encoding
# the text query itself costs on CPU. Beyond that, HNSW's sub-linear cost pays
# off, at the recall the ef_search below buys.
DEFAULT_ANN_THRESHOLD = 250_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
# ef=256 reaches recall@10 >= 0.99 on embedding-like (low intrinsic dimension)
# data; i.i.d. random 512-d vectors are far harder: at 100k they need ef~4096
# for 0.99 (docs/benchmarks.md). CLIPSEARCH_HNSW_EF_SEARCH raises it.
DEFAULT_HNSW_EF_SEARCH = 256
HNSW_EF_SEARCH = DEFAULT_HNSW_EF_SEARCH
# A filter matching at most this share of the catalog is answered by an
# exact scan of the matching rows: cheaper than HNSW and always returns k.
FILTER_EXACT_FRACTION = 0.2

# Query-vector cache (clipsearch/query_cache.py), on by default in the local
# server and the query Lambda. A 512-d entry costs about 2.3 KB, so 10,000
# entries (a shop's repeated queries several times over) fit in 32 MiB.
# Either bound at 0 turns the cache off.
DEFAULT_QUERY_CACHE_ENTRIES = 10_000
DEFAULT_QUERY_CACHE_MB = 32

# CPU threads per forward pass, CLIPSEARCH_THREADS or --threads: a number
# (0 = one per core) or "auto" = 1 for torch (two spinning torch threads made
# the encoder 5-15x slower on a busy 2-core box) and one per core for ONNX
# Runtime (non-spinning workers; see clipsearch/encoders/threads.py and
# docs/benchmarks.md, "Threads" and "Query speed on a CPU").
DEFAULT_THREADS = "auto"

# Runtime for the local encoder's towers: "onnx" (ONNX Runtime, the faster on
# a CPU: docs/benchmarks.md, "Query speed"), "torch", or "auto" = onnx when the
# `onnx` extra is installed and the model runs on the CPU, else torch.
RUNTIMES = ("auto", "torch", "onnx")
DEFAULT_RUNTIME = "auto"
# "int8": dynamic int8 quantization of the ONNX towers (refused for a model
# where it moves vectors too far from fp32; see clipsearch/encoders/onnx.py).
QUANTIZATIONS = ("none", "int8")
DEFAULT_QUANTIZE = "none"

# Micro-batching in the local server: concurrent encodes of one kind (texts,
# images) are grouped into one forward pass of at most this many items, the
# first waiting at most this long for company. Requests that arrive while a
# pass runs are batched without any wait.
DEFAULT_MAX_BATCH = 16
DEFAULT_BATCH_WAIT_MS = 2.0


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Runtime settings resolved from the environment (CLI flags override them)."""

    model: str = field(default_factory=lambda: _env("CLIPSEARCH_MODEL", DEFAULT_MODEL))
    data_dir: Path = field(
        default_factory=lambda: Path(_env("CLIPSEARCH_DATA_DIR", DEFAULT_DATA_DIR))
    )
    prompt_template: str | None = field(
        default_factory=lambda: os.environ.get("CLIPSEARCH_PROMPT_TEMPLATE") or None
    )
    ann_threshold: int = field(
        default_factory=lambda: int(_env("CLIPSEARCH_ANN_THRESHOLD", str(DEFAULT_ANN_THRESHOLD)))
    )
    hnsw_ef_search: int = field(
        default_factory=lambda: int(_env("CLIPSEARCH_HNSW_EF_SEARCH",
                                         str(DEFAULT_HNSW_EF_SEARCH)))
    )
    batch_size: int = field(default_factory=lambda: int(_env("CLIPSEARCH_BATCH_SIZE", "32")))
    threads: str = field(default_factory=lambda: _env("CLIPSEARCH_THREADS", DEFAULT_THREADS))
    runtime: str = field(default_factory=lambda: _env("CLIPSEARCH_RUNTIME", DEFAULT_RUNTIME))
    quantize: str = field(default_factory=lambda: _env("CLIPSEARCH_QUANTIZE", DEFAULT_QUANTIZE))
    max_batch: int = field(default_factory=lambda: int(
        _env("CLIPSEARCH_MAX_BATCH", str(DEFAULT_MAX_BATCH))))
    batch_wait_ms: float = field(default_factory=lambda: float(
        _env("CLIPSEARCH_BATCH_WAIT_MS", str(DEFAULT_BATCH_WAIT_MS))))
    query_cache_entries: int = field(default_factory=lambda: int(
        _env("CLIPSEARCH_QUERY_CACHE_ENTRIES", str(DEFAULT_QUERY_CACHE_ENTRIES))))
    query_cache_mb: float = field(default_factory=lambda: float(
        _env("CLIPSEARCH_QUERY_CACHE_MB", str(DEFAULT_QUERY_CACHE_MB))))
    opensearch_url: str | None = field(
        default_factory=lambda: os.environ.get("CLIPSEARCH_OPENSEARCH_URL") or None
    )

    @property
    def index_dir(self) -> Path:
        """The live local index (`clipsearch reindex` versions it; see index/versions.py)."""
        from clipsearch.index.versions import current_index_dir

        return current_index_dir(self.data_dir)
