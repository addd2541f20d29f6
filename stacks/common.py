"""Small helpers every component uses, so profile-dependent choices are made in one place."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import LOG_RETENTION_DAYS, DeploymentConfig

# RetentionDays members in the same order as the day counts CloudWatch accepts.
_RETENTION = dict(zip(LOG_RETENTION_DAYS,
                      [m for m in logs.RetentionDays if m.name != "INFINITE"], strict=True))


def retention(days: int) -> logs.RetentionDays:
    """The RetentionDays member for a validated day count."""
    return _RETENTION[days]


def removal_policy(config: DeploymentConfig) -> RemovalPolicy:
    """Retain data in prod (a stack delete must not delete the catalog); destroy in dev."""
    return RemovalPolicy.RETAIN if config.retain else RemovalPolicy.DESTROY


def log_group(scope: Construct, construct_id: str, config: DeploymentConfig,
              name: str | None = None) -> logs.LogGroup:
    """A log group with the profile's retention and removal policy."""
    return logs.LogGroup(scope, construct_id, log_group_name=name,
                         retention=retention(config.log_retention_days),
                         removal_policy=removal_policy(config))
