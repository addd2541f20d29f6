"""Clients built from `LambdaSettings`: S3, the SageMaker encoder and the OpenSearch index.

Each Lambda builds these once per container (module-level singletons in the
handlers) and reuses them across invocations: TLS sessions, SigV4 signers and
the learned embedding dimension all survive between requests.

OpenSearch throttling: Amazon OpenSearch Service answers 429 when its search
or write thread pools are full. opensearch-py's transport retries 502/503/504
immediately but gives 429 straight back, so a single busy moment would reach a
shopper as a 503. `retry_throttled` adds a short exponential backoff with
jitter for 429 on every request of a client (bulk requests also keep
`streaming_bulk`'s own 429 handling on top).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from clipsearch.aws.settings import LambdaSettings
from clipsearch.encoders.sagemaker import SageMakerEncoder
from clipsearch.index.opensearch import OpenSearchIndex, make_client

log = logging.getLogger(__name__)


def s3_client(*, read_timeout: float = 10.0, region_name: str | None = None) -> Any:
    """S3 with SigV4 (required for presigned URLs in every region) and bounded timeouts."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", region_name=region_name, config=Config(
        signature_version="s3v4",
        connect_timeout=2,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": 3},
    ))


def build_encoder(settings: LambdaSettings, *, dimension: int | None = None,
                  time_left: Callable[[], float] | None = None) -> SageMakerEncoder:
    """The endpoint's encoder; model id from the stack so no probe call is needed at start.

    `time_left` caps every call (see SageMakerEncoder).
    """
    budget = settings.encoder_budget
    return SageMakerEncoder(
        settings.endpoint_name,
        endpoint_url=settings.endpoint_url,
        model_id=settings.model,
        dimension=dimension,
        max_attempts=budget.max_attempts,
        base_delay=budget.base_delay,
        time_budget=budget.time_budget,
        read_timeout=budget.read_timeout,
        time_left=time_left,
    )


def build_index(settings: LambdaSettings, *, time_left: Callable[[], float] | None = None,
                **kwargs: Any) -> OpenSearchIndex:
    """The product index behind the stack's alias, over a 429-retrying client whose
    requests end within `time_left()` seconds, when given."""
    client = make_client(settings.opensearch_url, aws_sigv4=settings.opensearch_sigv4,
                         timeout=settings.opensearch_timeout)
    if time_left is not None:
        bound_by_time(client, time_left, default_timeout=settings.opensearch_timeout)
        # streaming_bulk's own retries of documents answered 429 sleep with
        # time.sleep, blind to any deadline: off here. A whole request answered
        # 429 is still retried (below, within the time left); a document
        # rejected alone fails its product, and SQS redelivers its message.
        kwargs.setdefault("max_retries", 0)
    retry_throttled(client, time_left=time_left)
    return OpenSearchIndex(client, alias=settings.index_alias,
                           replicas=settings.index_replicas, **kwargs)


def retry_throttled(client: Any, *, attempts: int = 4, base_delay: float = 0.1,
                    max_delay: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                    jitter: Callable[[], float] = random.random,
                    time_left: Callable[[], float] | None = None,
                    minimum: float = 0.5) -> Any:
    """Make every request of `client` retry HTTP 429 with backoff (see module docstring).

    With `time_left`, a wait that would leave less than `minimum` seconds for
    the retry is not taken: the 429 is raised instead, so no back-off sleeps
    past a deadline. Wraps this one client's transport in place; other
    clients are untouched.
    """
    from opensearchpy.exceptions import TransportError

    transport = client.transport
    perform = transport.perform_request

    def perform_request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, attempts + 1):
            try:
                return perform(method, url, *args, **kwargs)
            except TransportError as exc:
                if exc.status_code != 429 or attempt == attempts:
                    raise
                delay = max(0.01, jitter() * min(max_delay, base_delay * 2 ** (attempt - 1)))
                if time_left is not None and time_left() - delay < minimum:
                    raise
                log.info("OpenSearch answered 429 to %s %s (attempt %d); retrying in %.2f s",
                         method, url, attempt, delay)
                sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    transport.perform_request = perform_request
    return client


def bound_by_time(client: Any, time_left: Callable[[], float], *, default_timeout: float,
                  minimum: float = 0.5) -> Any:
    """Make every request of `client`, with the transport's own retries, end within
    `time_left()` seconds; with less than `minimum` left, fail at once.

    Each request's timeout becomes min(its own, time left / attempts), so even a
    node that stops answering cannot hold a Lambda past its timeout. Wraps this
    one client's transport in place (before `retry_throttled`, so each throttled
    retry is bounded again).
    """
    from opensearchpy.exceptions import ConnectionTimeout

    transport = client.transport
    perform = transport.perform_request

    def perform_request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        left = time_left()
        if left < minimum:
            raise ConnectionTimeout("TIMEOUT", f"{max(left, 0.0):.1f} s left in the "
                                    f"invocation: no time for {method} {url}", None)
        params = dict(kwargs.get("params") or {})
        own = params.pop("request_timeout", None) or kwargs.get("timeout") or default_timeout
        kwargs["params"] = params
        kwargs["timeout"] = min(float(own), left / (transport.max_retries + 1))
        return perform(method, url, *args, **kwargs)

    transport.perform_request = perform_request
    return client
