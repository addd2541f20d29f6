"""Catalog storage: the catalog bucket and the bucket its access logs go to.

Layout of the catalog bucket (the prefixes are constants in stacks.config):
  images/     product images; S3 events on it feed ingestion
  catalog/    JSONL product metadata; S3 events on it feed ingestion
  models/     packaged model artifacts (scripts/package_model.py --s3-uri)
  transform/  batch-transform input/output written by the bootstrap

Both buckets block public access, encrypt at rest, deny non-TLS requests and
follow the profile's removal policy (dev: emptied and deleted with the stack).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.common import removal_policy
from stacks.config import DeploymentConfig


class Storage(Construct):
    """The catalog bucket (versioned) and its server-access-log bucket (expiring)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        common = {
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "enforce_ssl": True,
            "minimum_tls_version": 1.2,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "removal_policy": removal_policy(config),
            # Dev stacks are thrown away often; without emptying, the delete fails.
            "auto_delete_objects": not config.retain,
        }
        self.log_bucket = s3.Bucket(
            self, "AccessLogs",
            # Server access log delivery only supports SSE-S3 on the target bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[s3.LifecycleRule(
                id="expire-access-logs",
                expiration=Duration.days(config.access_log_expiration_days),
                abort_incomplete_multipart_upload_after=Duration.days(1),
            )],
            **common,
        )
        self.bucket = s3.Bucket(
            self, "Catalog",
            # SSE-S3: SageMaker, the Lambdas and the bootstrap read it without key grants.
            encryption=s3.BucketEncryption.S3_MANAGED,
            versioned=True,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="catalog-bucket/",
            lifecycle_rules=[s3.LifecycleRule(
                id="expire-old-versions",
                noncurrent_version_expiration=Duration.days(
                    config.noncurrent_version_expiration_days),
                abort_incomplete_multipart_upload_after=Duration.days(7),
            )],
            **common,
        )
