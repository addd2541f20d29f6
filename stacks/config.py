"""Deployment configuration: every infrastructure knob, its dev and prod values, and checks.

All knobs live in `DeploymentConfig`. A profile (`dev` or `prod`) gives the
defaults; any field can be overridden with CDK context of the same name,
either in `cdk.json` or on the command line:

    cdk deploy -c profile=prod -c serverless_memory_mb=4096 -c admin_role_arn=arn:aws:iam::...

Values from the command line arrive as strings, so each is coerced to the
field's type. `validate()` rejects impossible values (serverless memory 5000,
max concurrency 0, an unknown profile...) at synth time with a message that
names the knob, so a mistake never reaches CloudFormation half-deployed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipsearch import config as core_config

# Environment variables the stack sets on the Lambdas: the names are defined
# once, beside the code that reads them (clipsearch.aws.settings).
from clipsearch.aws import settings as lambda_settings
from clipsearch.aws.settings import (
    ENV_BUCKET,
    ENV_CATALOG_PREFIX,
    ENV_CORS_ORIGINS,
    ENV_ENDPOINT,
    ENV_IMAGE_URL_TTL,
    ENV_IMAGES_PREFIX,
    ENV_INDEX_ALIAS,
    ENV_INDEX_REPLICAS,
    ENV_MODEL,
    ENV_OPENSEARCH_URL,
)
from clipsearch.sagemaker import container

REPO_ROOT = Path(__file__).resolve().parent.parent

PROFILES = ("dev", "prod")

# The S3 layout shared with the Lambdas and the bootstrap script.
IMAGES_PREFIX = lambda_settings.DEFAULT_IMAGES_PREFIX
CATALOG_PREFIX = lambda_settings.DEFAULT_CATALOG_PREFIX
MODELS_PREFIX = "models/"
TRANSFORM_PREFIX = "transform/"

# SageMaker serverless inference accepts 1024-6144 MB in 1 GB steps and a max
# concurrency of 1-200 per endpoint (service quotas can lower the latter).
SERVERLESS_MEMORY_CHOICES = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = 200

# CloudFront price classes, cheapest (North America and Europe edges) first.
WEB_PRICE_CLASSES = ("PriceClass_100", "PriceClass_200", "PriceClass_All")

# The values CloudWatch Logs accepts for a retention period.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)

# Hugging Face PyTorch inference DLC, CPU flavour (serverless inference has no
# GPU). The tag is chosen in clipsearch/sagemaker/container.py, which also
# holds the versions the packager and the container-parity test rely on.
DLC_REPOSITORY = container.DLC_REPOSITORY
DEFAULT_DLC_TAG = container.DLC_TAG

DEFAULT_MODEL_ARTIFACT = "build/model.tar.gz"


class ConfigError(ValueError):
    """An impossible or unknown setting; the message names the knob and what is allowed."""


@dataclass(frozen=True)
class DeploymentConfig:
    """Every knob of a deployment. Field comments say why the default is what it is."""

    profile: str = "dev"
    # Synth needs a concrete region: the DLC image account is a per-region fact
    # and the VPC's availability zones are named after it.
    region: str = "us-east-1"
    # Pin the account only if you want it in the template (the CLI fills it in at deploy).
    account: str | None = None
    stack_name: str = "Clipsearch-dev"

    # -- lifecycle
    # "destroy" empties and deletes buckets and the domain with the stack (dev);
    # "retain" keeps data when the stack goes (prod).
    removal_policy: str = "destroy"
    log_retention_days: int = 14
    access_log_expiration_days: int = 30
    noncurrent_version_expiration_days: int = 7

    # -- network
    vpc_enabled: bool = False
    vpc_cidr: str = "10.40.0.0/16"
    # Empty: the environment's, as many as the domain needs (see stacks/network.py).
    availability_zones: tuple[str, ...] = ()

    # -- OpenSearch domain
    domain_name: str = "clipsearch-dev"
    domain_instance_type: str = "t3.small.search"
    domain_instance_count: int = 1
    # 1 disables zone awareness; 2 or 3 spreads data nodes (and subnets) over AZs.
    domain_az_count: int = 1
    domain_master_instance_type: str | None = None
    domain_master_count: int = 0
    domain_volume_gb: int = 10
    # A role that may call the domain besides the Lambdas (bootstrap, admin tools).
    admin_role_arn: str | None = None
    index_alias: str = "products"

    # -- model endpoint
    endpoint_name: str = "clipsearch-dev"
    model_name: str = core_config.DEFAULT_MODEL
    serverless_memory_mb: int = 4096
    serverless_max_concurrency: int = 5
    serverless_provisioned_concurrency: int | None = None
    # s3://bucket/key/model.tar.gz; without it the file below becomes a CDK asset.
    model_data_url: str | None = None
    model_artifact: str = DEFAULT_MODEL_ARTIFACT
    # Synth refuses an artifact packaged from random weights unless this is true.
    allow_random_model: bool = False
    dlc_image_tag: str = DEFAULT_DLC_TAG
    # Overrides the region->account fact, for regions CDK does not know yet.
    dlc_account: str | None = None
    # Overrides the whole image URI (a private copy of the DLC, for example).
    image_uri: str | None = None

    # -- Lambdas
    # arm64 (Graviton) costs about 20% less per GB-second than x86_64 and every
    # dependency is pure Python or ships aarch64 wheels.
    lambda_architecture: str = "arm64"
    # Query: boto3 + opensearch-py + JSON; 512 MB gives enough CPU for sub-100 ms
    # handler overhead. 25 s leaves API Gateway's 29 s limit to the gateway so a
    # cold endpoint ends as the handler's 503 with Retry-After, not a gateway 504.
    query_memory_mb: int = 512
    query_timeout_s: int = 25
    query_reserved_concurrency: int | None = None
    # Ingest: holds a batch of images in memory and waits on the endpoint
    # (cold start included), so more memory and a longer timeout.
    ingest_memory_mb: int = 1024
    ingest_timeout_s: int = 120
    ingest_batch_size: int = 10
    ingest_batching_window_s: int = 5
    # Caps concurrent ingest invocations so ingestion cannot starve queries
    # of endpoint concurrency. SQS event sources accept 2-1000.
    ingest_max_concurrency: int = 2
    max_receive_count: int = 5
    image_url_ttl_s: int = 300
    # Bundle wheels into the Lambda assets. Off: source only (fast synth for tests,
    # not deployable). Also switched off by the env var CLIPSEARCH_BUNDLE_DEPS=0.
    bundle_dependencies: bool = True

    # -- API
    api_key_required: bool = True
    # "none" or "iam". A public storefront search uses none (+ api_key_required=false).
    api_authorization: str = "none"
    api_rate_limit: int = 20
    api_burst_limit: int = 40
    api_quota_per_day: int | None = None
    # Empty disables CORS; "*" lets any page call the API (the key still applies).
    cors_allow_origins: tuple[str, ...] = ("*",)
    api_execution_log_level: str = "INFO"
    waf_enabled: bool = False
    waf_rate_limit_per_5min: int = 2000

    # -- search page (CloudFront in front of the page's bucket and the API; docs/aws.md)
    # false (-c web=false): no page bucket, no distribution, no WebUrl output.
    web: bool = True
    # A domain of your own for the page and its ACM certificate (CloudFront only
    # takes certificates from us-east-1). Only then can CloudFront refuse TLS
    # below 1.2: on its default *.cloudfront.net certificate the policy is TLSv1.
    web_domain_name: str | None = None
    web_certificate_arn: str | None = None
    # PriceClass_100 (edges in North America and Europe) is the cheapest class.
    web_price_class: str = "PriceClass_100"
    # CloudFront only takes a web ACL made in us-east-1. With waf_enabled the
    # stack makes one when it is itself in us-east-1; in any other region, name
    # an existing CLOUDFRONT-scope ACL here (docs/aws.md says how to make one).
    web_acl_arn: str | None = None

    # -- monitoring
    alarm_email: str | None = None
    api_latency_alarm_ms: int = 5000

    @property
    def is_prod(self) -> bool:
        return self.profile == "prod"

    @property
    def retain(self) -> bool:
        return self.removal_policy == "retain"

    @property
    def vpc_az_count(self) -> int:
        """How many AZs the VPC spans: the domain's zones, and at least two."""
        return max(self.domain_az_count, 2, len(self.availability_zones))

    @property
    def index_replicas(self) -> int:
        """One replica of every shard as soon as there is a second data node to hold it.

        Without it, zone awareness spreads single copies over the zones: losing a
        node or a zone turns the index red and search answers 5xx.
        """
        return 1 if self.domain_instance_count > 1 else 0

    @property
    def visibility_timeout_s(self) -> int:
        """Six times the ingest timeout, the AWS guidance for SQS-triggered Lambdas."""
        return 6 * self.ingest_timeout_s

    def validate(self) -> DeploymentConfig:
        """Reject impossible values with a message naming the knob; returns self."""
        errors: list[str] = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                errors.append(message)

        check(self.profile in PROFILES,
              f"profile must be one of {', '.join(PROFILES)}; got {self.profile!r}")
        check(bool(re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", self.region)),
              f"region must look like us-east-1; got {self.region!r}")
        check(self.account is None or bool(re.fullmatch(r"\d{12}", self.account)),
              f"account must be 12 digits; got {self.account!r}")
        check(bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,127}", self.stack_name)),
              f"stack_name must be letters, digits and hyphens; got {self.stack_name!r}")
        check(self.removal_policy in ("destroy", "retain"),
              f"removal_policy must be destroy or retain; got {self.removal_policy!r}")
        for name in ("log_retention_days",):
            check(getattr(self, name) in LOG_RETENTION_DAYS,
                  f"{name} must be one of {LOG_RETENTION_DAYS}; got {getattr(self, name)}")
        check(self.access_log_expiration_days >= 1, "access_log_expiration_days must be >= 1")
        check(self.noncurrent_version_expiration_days >= 1,
              "noncurrent_version_expiration_days must be >= 1")
        check(bool(re.fullmatch(r"\d+\.\d+\.\d+\.\d+/(1[6-9]|2[0-4])", self.vpc_cidr)),
              f"vpc_cidr must be an IPv4 CIDR between /16 and /24; got {self.vpc_cidr!r}")

        # OpenSearch
        check(bool(re.fullmatch(r"[a-z][a-z0-9-]{2,27}", self.domain_name)),
              "domain_name must be 3-28 characters: lowercase letters, digits, hyphens, "
              f"starting with a letter; got {self.domain_name!r}")
        check(self.domain_instance_type.endswith(".search"),
              f"domain_instance_type must be an OpenSearch type like t3.small.search; "
              f"got {self.domain_instance_type!r}")
        check(self.domain_az_count in (1, 2, 3),
              f"domain_az_count must be 1, 2 or 3; got {self.domain_az_count}")
        check(self.domain_instance_count >= 1, "domain_instance_count must be >= 1")
        if self.domain_az_count > 1:
            check(self.domain_instance_count % self.domain_az_count == 0,
                  f"domain_instance_count ({self.domain_instance_count}) must be a multiple of "
                  f"domain_az_count ({self.domain_az_count}) so every zone holds a replica")
        check(self.domain_master_count in (0, 3, 5),
              f"domain_master_count must be 0, 3 or 5; got {self.domain_master_count}")
        check((self.domain_master_count == 0) == (self.domain_master_instance_type is None),
              "domain_master_instance_type and domain_master_count go together: set both "
              "(dedicated masters) or neither")
        check(10 <= self.domain_volume_gb <= 16384,
              f"domain_volume_gb must be 10-16384; got {self.domain_volume_gb}")
        check(self.admin_role_arn is None
              or bool(re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", self.admin_role_arn)),
              f"admin_role_arn must be an IAM role ARN; got {self.admin_role_arn!r}")
        check(bool(re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,254}", self.index_alias)),
              f"index_alias must be a lowercase OpenSearch name; got {self.index_alias!r}")
        if self.vpc_enabled and self.availability_zones:
            check(len(self.availability_zones) >= max(self.domain_az_count, 2),
                  f"availability_zones lists {len(self.availability_zones)} zone(s); the VPC "
                  f"needs {max(self.domain_az_count, 2)} (domain_az_count, and at least 2)")
            check(all(az.startswith(self.region) for az in self.availability_zones),
                  f"availability_zones {self.availability_zones} must be in region "
                  f"{self.region}")

        # Model endpoint
        check(bool(re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", self.endpoint_name)),
              f"endpoint_name must be 1-63 letters, digits and hyphens; got {self.endpoint_name!r}")
        check(self.serverless_memory_mb in SERVERLESS_MEMORY_CHOICES,
              "serverless_memory_mb must be 1024-6144 in 1 GB steps "
              f"({', '.join(map(str, SERVERLESS_MEMORY_CHOICES))}); "
              f"got {self.serverless_memory_mb}")
        check(1 <= self.serverless_max_concurrency <= SERVERLESS_MAX_CONCURRENCY,
              f"serverless_max_concurrency must be 1-{SERVERLESS_MAX_CONCURRENCY}; "
              f"got {self.serverless_max_concurrency}")
        if self.serverless_provisioned_concurrency is not None:
            check(1 <= self.serverless_provisioned_concurrency <= self.serverless_max_concurrency,
                  "serverless_provisioned_concurrency must be between 1 and "
                  f"serverless_max_concurrency ({self.serverless_max_concurrency}); "
                  f"got {self.serverless_provisioned_concurrency}")
        if self.model_data_url is not None:
            check(bool(re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+\.tar\.gz",
                                    self.model_data_url)),
                  "model_data_url must be s3://bucket/key.tar.gz (the output of "
                  f"scripts/package_model.py); got {self.model_data_url!r}")
        check(bool(re.fullmatch(r"[A-Za-z0-9._-]+", self.dlc_image_tag)),
              f"dlc_image_tag is not an image tag: {self.dlc_image_tag!r}")
        check(self.dlc_account is None or bool(re.fullmatch(r"\d{12}", self.dlc_account)),
              f"dlc_account must be 12 digits; got {self.dlc_account!r}")

        # Lambdas
        check(self.lambda_architecture in ("arm64", "x86_64"),
              f"lambda_architecture must be arm64 or x86_64; got {self.lambda_architecture!r}")
        for name in ("query_memory_mb", "ingest_memory_mb"):
            check(128 <= getattr(self, name) <= 10240,
                  f"{name} must be 128-10240; got {getattr(self, name)}")
        check(1 <= self.query_timeout_s <= 29,
              "query_timeout_s must be 1-29: API Gateway gives up on an integration after 29 s; "
              f"got {self.query_timeout_s}")
        # 6x the timeout must fit SQS's 12-hour visibility limit.
        check(1 <= self.ingest_timeout_s <= 900,
              f"ingest_timeout_s must be 1-900; got {self.ingest_timeout_s}")
        check(self.query_reserved_concurrency is None or self.query_reserved_concurrency >= 1,
              "query_reserved_concurrency must be >= 1 or unset")
        check(1 <= self.ingest_batch_size <= 10000,
              f"ingest_batch_size must be 1-10000; got {self.ingest_batch_size}")
        check(0 <= self.ingest_batching_window_s <= 300,
              f"ingest_batching_window_s must be 0-300; got {self.ingest_batching_window_s}")
        check(self.ingest_batch_size <= 10 or self.ingest_batching_window_s >= 1,
              "ingest_batch_size above 10 needs ingest_batching_window_s >= 1 (an SQS rule)")
        check(2 <= self.ingest_max_concurrency <= 1000,
              f"ingest_max_concurrency must be 2-1000 (SQS event source limits); "
              f"got {self.ingest_max_concurrency}")
        check(self.ingest_max_concurrency <= self.serverless_max_concurrency,
              f"ingest_max_concurrency ({self.ingest_max_concurrency}) must not exceed "
              f"serverless_max_concurrency ({self.serverless_max_concurrency}), or ingestion "
              "throttles itself and the queries on the endpoint")
        check(1 <= self.max_receive_count <= 1000,
              f"max_receive_count must be 1-1000; got {self.max_receive_count}")
        check(1 <= self.image_url_ttl_s <= 3600,
              f"image_url_ttl_s must be 1-3600; got {self.image_url_ttl_s}")

        # API
        check(self.api_authorization in ("none", "iam"),
              f"api_authorization must be none or iam; got {self.api_authorization!r}")
        check(self.api_rate_limit >= 1, f"api_rate_limit must be >= 1; got {self.api_rate_limit}")
        check(self.api_burst_limit >= 1,
              f"api_burst_limit must be >= 1; got {self.api_burst_limit}")
        check(self.api_quota_per_day is None or self.api_quota_per_day >= 1,
              "api_quota_per_day must be >= 1 or unset")
        check(self.api_execution_log_level in ("INFO", "ERROR"),
              "api_execution_log_level must be INFO or ERROR; "
              f"got {self.api_execution_log_level!r}")
        check(all(o == "*" or re.fullmatch(r"https?://[^/\s]+", o)
                  for o in self.cors_allow_origins),
              "cors_allow_origins must be '*' or origins like https://shop.example.com; "
              f"got {self.cors_allow_origins}")
        check(100 <= self.waf_rate_limit_per_5min <= 2_000_000_000,
              f"waf_rate_limit_per_5min must be >= 100; got {self.waf_rate_limit_per_5min}")
        self._validate_web(check)
        check(self.alarm_email is None or bool(re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+",
                                                            self.alarm_email)),
              f"alarm_email is not an e-mail address: {self.alarm_email!r}")
        check(self.api_latency_alarm_ms >= 1, "api_latency_alarm_ms must be >= 1")

        if errors:
            raise ConfigError(
                f"invalid clipsearch deployment config (profile {self.profile!r}):\n  - "
                + "\n  - ".join(errors)
            )
        return self


    def _validate_web(self, check: Callable[[bool, str], None]) -> None:
        check((self.web_domain_name is None) == (self.web_certificate_arn is None),
              "web_domain_name and web_certificate_arn go together: a custom domain needs "
              "its certificate, and a certificate needs the domain it is for")
        check(self.web_domain_name is None or bool(re.fullmatch(
                  r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", self.web_domain_name)),
              f"web_domain_name must be a host name like shop.example.com; "
              f"got {self.web_domain_name!r}")
        check(self.web_certificate_arn is None or bool(re.fullmatch(
                  r"arn:aws[a-z-]*:acm:us-east-1:\d{12}:certificate/[\w-]+",
                  self.web_certificate_arn)),
              "web_certificate_arn must be an ACM certificate ARN in us-east-1 (CloudFront "
              f"takes no other region); got {self.web_certificate_arn!r}")
        check(self.web_price_class in WEB_PRICE_CLASSES,
              f"web_price_class must be one of {', '.join(WEB_PRICE_CLASSES)}; "
              f"got {self.web_price_class!r}")
        check(self.web_acl_arn is None or bool(re.fullmatch(
                  r"arn:aws[a-z-]*:wafv2:us-east-1:\d{12}:global/webacl/.+", self.web_acl_arn)),
              "web_acl_arn must be a CLOUDFRONT-scope WAFv2 web ACL ARN "
              f"(arn:aws:wafv2:us-east-1:ACCOUNT:global/webacl/...); got {self.web_acl_arn!r}")
        if not self.web:
            return
        check(self.api_authorization == "none",
              "web=true needs api_authorization=none: CloudFront adds the API key to the "
              "page's API calls but cannot sign them with IAM; set web=false for an IAM API")
        check(not self.waf_enabled or self.region == "us-east-1" or self.web_acl_arn is not None,
              f"waf_enabled with web=true in {self.region}: CloudFront only takes a web ACL "
              "made in us-east-1, which a stack in another region cannot create. Pass "
              "web_acl_arn=<a CLOUDFRONT-scope ACL in us-east-1> (scripts/web_acl.py --name "
              "NAME --create makes one; docs/aws.md, 'WAF for the page'), deploy to us-east-1, "
              "or set web=false")

    @property
    def web_waf(self) -> bool:
        """Whether the stack itself creates the distribution's web ACL (us-east-1 only)."""
        return self.web and self.waf_enabled and self.web_acl_arn is None


def _profile_defaults(profile: str) -> dict[str, Any]:
    """The values that differ between profiles; everything else is the dataclass default."""
    if profile == "dev":
        return {"stack_name": "Clipsearch-dev"}
    if profile == "prod":
        return {
            "stack_name": "Clipsearch-prod",
            "removal_policy": "retain",
            "log_retention_days": 90,
            "access_log_expiration_days": 365,
            "noncurrent_version_expiration_days": 90,
            "vpc_enabled": True,
            "domain_name": "clipsearch-prod",
            "domain_instance_type": "r7g.large.search",
            "domain_instance_count": 3,
            "domain_az_count": 3,
            "domain_master_instance_type": "m7g.large.search",
            "domain_master_count": 3,
            "domain_volume_gb": 100,
            "endpoint_name": "clipsearch-prod",
            "serverless_memory_mb": 6144,
            "serverless_max_concurrency": 20,
            "ingest_max_concurrency": 5,
            "query_reserved_concurrency": None,
            "api_rate_limit": 200,
            "api_burst_limit": 400,
            "cors_allow_origins": (),
            "api_execution_log_level": "ERROR",
            "waf_enabled": True,
        }
    raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(DeploymentConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(DeploymentConfig)}


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Turn a context value (a string from `-c`, or JSON from cdk.json) into the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none",
                                                                                  "null")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false; got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer; got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer; got {value!r}") from None
    if origin is tuple:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        raise ConfigError(f"{name} must be a list or a comma-separated string; got {value!r}")
    if annotation is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a string; got {value!r}")
        return str(value)
    raise AssertionError(f"unhandled config type for {name}: {annotation}")  # pragma: no cover


def load_config(context: Mapping[str, Any], environ: Mapping[str, str] | None = None
                ) -> DeploymentConfig:
    """Build and validate the config: profile defaults, then context overrides.

    `context` is the CDK context (cdk.json plus `-c` flags); only keys naming a
    field are read, so CDK feature flags pass through untouched. Overrides for
    the wrong profile are fine: `-c profile=prod -c domain_instance_count=6`.
    """
    environ = os.environ if environ is None else environ
    profile = str(context.get("profile") or "dev")
    values: dict[str, Any] = {"profile": profile, **_profile_defaults(profile)}
    types_by_name = _field_types()
    for name, annotation in types_by_name.items():
        if name in context and name != "profile":
            values[name] = _coerce(name, context[name], annotation)
    if "region" not in context:
        values["region"] = environ.get("CDK_DEFAULT_REGION") or values.get("region", "us-east-1")
    if "account" not in context and environ.get("CDK_DEFAULT_ACCOUNT"):
        values["account"] = environ["CDK_DEFAULT_ACCOUNT"]
    if environ.get("CLIPSEARCH_BUNDLE_DEPS", "").strip().lower() in ("0", "false", "no", "off"):
        values["bundle_dependencies"] = False
    # CDK's own keys (feature flags, lookups, CLI settings) all contain '@', ':' or
    # '-'; a snake_case key is meant for us, so a typo there is an error, not a no-op.
    unknown = sorted(k for k in context
                     if re.fullmatch(r"[a-z][a-z0-9_]*", k) and k not in types_by_name)
    if unknown:
        known = ", ".join(sorted(types_by_name))
        raise ConfigError(f"unknown clipsearch setting(s) {', '.join(unknown)}; known: {known}")
    return DeploymentConfig(**values).validate()


def field_names() -> list[str]:
    """The knobs, for docs and error messages."""
    return [f.name for f in dataclasses.fields(DeploymentConfig)]


__all__ = [
    "CATALOG_PREFIX",
    "ENV_BUCKET",
    "ENV_CATALOG_PREFIX",
    "ENV_CORS_ORIGINS",
    "ENV_ENDPOINT",
    "ENV_IMAGES_PREFIX",
    "ENV_IMAGE_URL_TTL",
    "ENV_INDEX_ALIAS",
    "ENV_INDEX_REPLICAS",
    "ENV_MODEL",
    "ENV_OPENSEARCH_URL",
    "IMAGES_PREFIX",
    "MODELS_PREFIX",
    "TRANSFORM_PREFIX",
    "ConfigError",
    "DeploymentConfig",
    "load_config",
]
