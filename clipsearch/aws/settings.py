"""The Lambdas' configuration: the environment variables the CDK stack sets.

Why one validated object: a Lambda that starts with a missing or mistyped
variable should fail its first request with a message naming the variable,
not with a `KeyError` deep in boto3 on some later request. The names match
`stacks/config.py` (`ENV_*`); a test checks that they stay in sync.

Besides the stack's variables, a few optional knobs exist so the handlers can
run against local stand-ins (the SageMaker endpoint emulator, a plain-HTTP
OpenSearch node) and so tests can shorten retry waits. None is needed on AWS.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

from clipsearch import config
from clipsearch.errors import ConfigurationError

ENV_BUCKET = "CLIPSEARCH_BUCKET"
ENV_ENDPOINT = "CLIPSEARCH_SAGEMAKER_ENDPOINT"
ENV_OPENSEARCH_URL = "CLIPSEARCH_OPENSEARCH_URL"
ENV_INDEX_ALIAS = "CLIPSEARCH_INDEX_ALIAS"
ENV_MODEL = "CLIPSEARCH_MODEL"
ENV_IMAGE_URL_TTL = "CLIPSEARCH_IMAGE_URL_TTL"
ENV_IMAGES_PREFIX = "CLIPSEARCH_IMAGES_PREFIX"
ENV_CATALOG_PREFIX = "CLIPSEARCH_CATALOG_PREFIX"
# Replicas of every index the Lambdas create: the stack sets 1 when the domain
# has more than one data node (zone awareness without replicas loses data).
ENV_INDEX_REPLICAS = "CLIPSEARCH_INDEX_REPLICAS"
# Read by the query handler itself (gateway.CorsPolicy), so that even a
# container whose other settings are wrong answers with CORS headers.
ENV_CORS_ORIGINS = "CLIPSEARCH_CORS_ALLOW_ORIGINS"
# Optional: local stand-ins and tuning (not set by the stack).
ENV_ENDPOINT_URL = "CLIPSEARCH_SAGEMAKER_ENDPOINT_URL"
ENV_OPENSEARCH_SIGV4 = "CLIPSEARCH_OPENSEARCH_SIGV4"
ENV_OPENSEARCH_TIMEOUT = "CLIPSEARCH_OPENSEARCH_TIMEOUT_S"
ENV_ENCODER_ATTEMPTS = "CLIPSEARCH_ENCODER_MAX_ATTEMPTS"
ENV_ENCODER_BASE_DELAY = "CLIPSEARCH_ENCODER_BASE_DELAY_S"
ENV_ENCODER_TIME_BUDGET = "CLIPSEARCH_ENCODER_TIME_BUDGET_S"
ENV_ENCODER_READ_TIMEOUT = "CLIPSEARCH_ENCODER_READ_TIMEOUT_S"
ENV_INGEST_ENCODE_BATCH = "CLIPSEARCH_INGEST_ENCODE_BATCH"
ENV_INGEST_TIME_MARGIN = "CLIPSEARCH_INGEST_TIME_MARGIN_S"
# The query Lambda's query-vector cache (per container); 0 turns it off.
ENV_QUERY_CACHE_ENTRIES = "CLIPSEARCH_QUERY_CACHE_ENTRIES"
ENV_QUERY_CACHE_MB = "CLIPSEARCH_QUERY_CACHE_MB"

N = TypeVar("N", int, float)

DEFAULT_ALIAS = "products"
DEFAULT_IMAGES_PREFIX = "images/"
DEFAULT_CATALOG_PREFIX = "catalog/"
DEFAULT_IMAGE_URL_TTL = 300


@dataclass(frozen=True)
class RetryBudget:
    """How long the encoder may keep retrying one call, for one kind of Lambda.

    The query Lambda has 25 s before API Gateway gives up at 29 s, so its
    budget is short enough to still answer 503 itself; the ingest Lambda can
    wait longer (120 s timeout), since a retry there is cheaper than a redelivery.
    """

    max_attempts: int
    base_delay: float
    time_budget: float
    read_timeout: float


QUERY_BUDGET = RetryBudget(max_attempts=4, base_delay=0.25, time_budget=10.0, read_timeout=8.0)
INGEST_BUDGET = RetryBudget(max_attempts=6, base_delay=0.5, time_budget=45.0, read_timeout=60.0)


@dataclass(frozen=True)
class LambdaSettings:
    bucket: str
    endpoint_name: str
    opensearch_url: str
    index_alias: str = DEFAULT_ALIAS
    model: str | None = None
    images_prefix: str = DEFAULT_IMAGES_PREFIX
    catalog_prefix: str = DEFAULT_CATALOG_PREFIX
    image_url_ttl: int = DEFAULT_IMAGE_URL_TTL
    index_replicas: int = 0
    endpoint_url: str | None = None
    opensearch_sigv4: bool = False
    opensearch_timeout: float = 10.0
    encoder_budget: RetryBudget = QUERY_BUDGET
    ingest_encode_batch: int = 16
    ingest_time_margin: float = 15.0
    query_cache_entries: int = config.DEFAULT_QUERY_CACHE_ENTRIES
    query_cache_mb: float = config.DEFAULT_QUERY_CACHE_MB

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 budget: RetryBudget = QUERY_BUDGET) -> LambdaSettings:
        """Read and check every variable; `budget` is the Lambda kind's retry default."""
        env = os.environ if environ is None else environ

        def required(name: str) -> str:
            value = (env.get(name) or "").strip()
            if not value:
                raise ConfigurationError(f"environment variable {name} is not set; the CDK "
                                         "stack sets it (see docs/aws.md)")
            return value

        def optional(name: str) -> str | None:
            value = (env.get(name) or "").strip()
            return value or None

        opensearch_url = required(ENV_OPENSEARCH_URL)
        if "://" not in opensearch_url:  # the domain endpoint is a bare host name
            opensearch_url = f"https://{opensearch_url}"
        host = urlparse(opensearch_url).hostname or ""
        sigv4 = _boolean(env, ENV_OPENSEARCH_SIGV4,
                         default=host.endswith((".amazonaws.com", ".amazonaws.com.cn")))
        attempts = _number(env, ENV_ENCODER_ATTEMPTS, budget.max_attempts, 1, 20, int)
        return cls(
            bucket=required(ENV_BUCKET),
            endpoint_name=required(ENV_ENDPOINT),
            opensearch_url=opensearch_url,
            index_alias=optional(ENV_INDEX_ALIAS) or DEFAULT_ALIAS,
            model=optional(ENV_MODEL),
            images_prefix=_prefix(env, ENV_IMAGES_PREFIX, DEFAULT_IMAGES_PREFIX),
            catalog_prefix=_prefix(env, ENV_CATALOG_PREFIX, DEFAULT_CATALOG_PREFIX),
            image_url_ttl=_number(env, ENV_IMAGE_URL_TTL, DEFAULT_IMAGE_URL_TTL, 1, 604800, int),
            index_replicas=_number(env, ENV_INDEX_REPLICAS, 0, 0, 5, int),
            endpoint_url=optional(ENV_ENDPOINT_URL),
            opensearch_sigv4=sigv4,
            opensearch_timeout=_number(env, ENV_OPENSEARCH_TIMEOUT, 10.0, 0.5, 120.0, float),
            encoder_budget=RetryBudget(
                max_attempts=attempts,
                base_delay=_number(env, ENV_ENCODER_BASE_DELAY, budget.base_delay, 0.0, 10.0,
                                   float),
                time_budget=_number(env, ENV_ENCODER_TIME_BUDGET, budget.time_budget, 0.1,
                                    600.0, float),
                read_timeout=_number(env, ENV_ENCODER_READ_TIMEOUT, budget.read_timeout, 0.5,
                                     120.0, float),
            ),
            ingest_encode_batch=_number(env, ENV_INGEST_ENCODE_BATCH, 16, 1, 256, int),
            ingest_time_margin=_number(env, ENV_INGEST_TIME_MARGIN, 15.0, 0.0, 600.0, float),
            query_cache_entries=_number(env, ENV_QUERY_CACHE_ENTRIES,
                                        config.DEFAULT_QUERY_CACHE_ENTRIES, 0, 10_000_000, int),
            query_cache_mb=_number(env, ENV_QUERY_CACHE_MB, config.DEFAULT_QUERY_CACHE_MB,
                                   0.0, 4096.0, float),
        )


def _prefix(env: Mapping[str, str], name: str, default: str) -> str:
    value = (env.get(name) or "").strip() or default
    if value.startswith("/") or ".." in value.split("/"):
        raise ConfigurationError(f"{name}={value!r} must be a relative S3 key prefix")
    return value if value.endswith("/") else value + "/"


def _boolean(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = (env.get(name) or "").strip().lower()
    if value in ("", "auto"):
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={value!r} must be true, false or auto")


def _number(env: Mapping[str, str], name: str, default: N, low: N, high: N,
            kind: Callable[[str], N]) -> N:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigurationError(f"{name}={raw!r} is not {what}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name}={raw} must be between {low} and {high}")
    return value
