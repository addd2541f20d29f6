"""Every knob of the bootstrap, validated once, so each step can trust them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipsearch.errors import ValidationError

# The stack `npx cdk deploy` creates with the default (dev) profile.
DEFAULT_STACK = "Clipsearch-dev"
# Prefixes of the catalog bucket (stacks/config.py); the model's role may read
# images/ and transform/ and write transform/, nothing else.
IMAGES_PREFIX = "images/"
CATALOG_PREFIX = "catalog/"
TRANSFORM_PREFIX = "transform/"
CONTENT_TYPES = ("jsonlines", "x-image")
# ml.c5.xlarge: 4 vCPU, ~$0.20/h on demand; the model runs in the CPU DLC.
DEFAULT_INSTANCE_TYPE = "ml.c5.xlarge"
# SageMaker's own default and its maximum for MaxPayloadInMB.
DEFAULT_MAX_PAYLOAD_MB = 6
MAX_PAYLOAD_MB = 100
# Records per transform input file. SageMaker spreads *files* over
# instances, so a few files per instance keep them all busy; ~1,000 ABO
# images make a ~25 MB file, small enough to retry cheaply.
DEFAULT_RECORDS_PER_FILE = 1000


@dataclass
class BootstrapOptions:
    """What the user asked for; explicit names win over the stack's outputs."""

    catalog: Path
    stack_name: str | None = None
    region: str | None = None
    bucket: str | None = None
    model_name: str | None = None
    opensearch_url: str | None = None
    index_alias: str | None = None
    index_replicas: int | None = None  # None: the stack output IndexReplicas, else 0
    aws_sigv4: bool | None = None  # None: on for *.amazonaws.com endpoints
    content_type: str = "jsonlines"
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    max_payload_mb: int = DEFAULT_MAX_PAYLOAD_MB
    max_concurrent_transforms: int | None = None
    records_per_file: int = DEFAULT_RECORDS_PER_FILE
    upload_workers: int = 16
    local_transform: bool = False
    model_artifact: Path | None = None
    state_dir: Path = Path(".clipsearch") / "bootstrap"
    state_file: Path | None = None
    report_file: Path | None = None
    dry_run: bool = False
    force: bool = False
    new_index: bool = False
    keep_old_index: bool = False
    max_failed_fraction: float = 0.1
    poll_seconds: float = 30.0
    transform_timeout_s: float = 48 * 3600.0
    progress: bool = True
    # Used only when neither a flag nor the stack names them (the global
    # `clipsearch --opensearch/--alias` options and their environment variables).
    fallback_opensearch_url: str | None = None
    fallback_alias: str | None = None

    def validate(self) -> BootstrapOptions:
        """Reject impossible values before anything touches AWS."""
        if not Path(self.catalog).exists():
            raise ValidationError(f"catalog {self.catalog} does not exist", field="catalog")
        if self.content_type not in CONTENT_TYPES:
            raise ValidationError(f"--content-type must be one of {', '.join(CONTENT_TYPES)}",
                                  field="content_type")
        if self.instance_count < 1:
            raise ValidationError("--instance-count must be at least 1", field="instance_count")
        if not 1 <= self.max_payload_mb <= MAX_PAYLOAD_MB:
            raise ValidationError(f"--max-payload-mb must be 1-{MAX_PAYLOAD_MB} "
                                  "(SageMaker's limit)", field="max_payload_mb")
        if self.max_concurrent_transforms is not None and self.max_concurrent_transforms < 1:
            raise ValidationError("--max-concurrent-transforms must be at least 1",
                                  field="max_concurrent_transforms")
        if self.records_per_file < 1:
            raise ValidationError("--records-per-file must be at least 1",
                                  field="records_per_file")
        if self.index_replicas is not None and not 0 <= self.index_replicas <= 5:
            raise ValidationError("--index-replicas must be 0-5", field="index_replicas")
        if self.upload_workers < 1:
            raise ValidationError("--upload-workers must be at least 1", field="upload_workers")
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            raise ValidationError("--max-failed-fraction must be between 0 and 1",
                                  field="max_failed_fraction")
        if self.poll_seconds < 0 or self.transform_timeout_s <= 0:
            raise ValidationError("--poll-seconds must be >= 0 and the timeout positive",
                                  field="poll_seconds")
        if self.model_artifact is not None and not self.local_transform:
            raise ValidationError("--model-artifact only applies with --local-transform (a "
                                  "SageMaker job runs the stack's model)", field="model_artifact")
        return self
