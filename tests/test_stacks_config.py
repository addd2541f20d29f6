"""Deployment config: profiles, context overrides, and impossible values failing clearly.

No synth here except where a construct must be built to see its effect; these
run in a few seconds.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3

from clipsearch.sagemaker.package import sha256_file
from stacks.app_factory import build_app, cdk_json_context
from stacks.config import (
    SERVERLESS_MEMORY_CHOICES,
    ConfigError,
    DeploymentConfig,
    load_config,
)
from stacks.model_endpoint import (
    ModelArtifactMissing,
    ModelEndpoint,
    RandomModelArtifact,
    dlc_image_uri,
)


def test_profiles_load_and_validate() -> None:
    dev = load_config({"profile": "dev"}, environ={})
    prod = load_config({"profile": "prod"}, environ={})
    assert dev.removal_policy == "destroy" and prod.removal_policy == "retain"
    assert not dev.vpc_enabled and prod.vpc_enabled
    assert dev.domain_instance_count == 1 and prod.domain_az_count == 3
    assert prod.domain_master_count == 3
    assert dev.stack_name != prod.stack_name and dev.domain_name != prod.domain_name
    assert prod.waf_enabled and not dev.waf_enabled


def test_default_profile_is_dev_and_cdk_json_sets_it() -> None:
    assert load_config({}, environ={}).profile == "dev"
    assert cdk_json_context()["profile"] == "dev"


def test_cli_strings_are_coerced_to_field_types() -> None:
    config = load_config({
        "profile": "prod",
        "serverless_memory_mb": "2048",
        "vpc_enabled": "false",
        "serverless_provisioned_concurrency": "2",
        "cors_allow_origins": "https://shop.example.com, https://www.example.com",
        "admin_role_arn": "arn:aws:iam::123456789012:role/admin",
        "query_reserved_concurrency": "none",
    }, environ={})
    assert config.serverless_memory_mb == 2048
    assert config.vpc_enabled is False
    assert config.serverless_provisioned_concurrency == 2
    assert config.cors_allow_origins == ("https://shop.example.com", "https://www.example.com")
    assert config.query_reserved_concurrency is None


def test_region_and_account_come_from_the_cli_environment() -> None:
    config = load_config({}, environ={"CDK_DEFAULT_REGION": "eu-west-1",
                                      "CDK_DEFAULT_ACCOUNT": "123456789012"})
    assert (config.region, config.account) == ("eu-west-1", "123456789012")
    assert load_config({"region": "us-west-2"}, environ={"CDK_DEFAULT_REGION": "eu-west-1"}
                       ).region == "us-west-2"


def test_env_var_switches_off_dependency_bundling() -> None:
    assert load_config({}, environ={}).bundle_dependencies is True
    assert load_config({}, environ={"CLIPSEARCH_BUNDLE_DEPS": "0"}).bundle_dependencies is False


@pytest.mark.parametrize(("context", "message"), [
    ({"profile": "staging"}, "unknown profile 'staging'"),
    ({"serverless_memory_mb": 5000}, "serverless_memory_mb must be 1024-6144 in 1 GB steps"),
    ({"serverless_memory_mb": 8192}, "serverless_memory_mb must be 1024-6144"),
    ({"serverless_max_concurrency": 0}, "serverless_max_concurrency must be 1-200"),
    ({"serverless_max_concurrency": 201}, "serverless_max_concurrency must be 1-200"),
    ({"serverless_provisioned_concurrency": 9}, "serverless_provisioned_concurrency must be"),
    ({"query_timeout_s": 30}, "API Gateway gives up on an integration after 29 s"),
    ({"ingest_max_concurrency": 1}, "ingest_max_concurrency must be 2-1000"),
    ({"ingest_max_concurrency": 6}, "must not exceed serverless_max_concurrency"),
    ({"log_retention_days": 10}, "log_retention_days must be one of"),
    ({"domain_az_count": 4}, "domain_az_count must be 1, 2 or 3"),
    ({"profile": "prod", "domain_instance_count": 4}, "must be a multiple of domain_az_count"),
    ({"domain_master_count": 3}, "domain_master_instance_type and domain_master_count"),
    ({"domain_name": "Clipsearch_Dev"}, "domain_name must be 3-28 characters"),
    ({"model_data_url": "https://example.com/model.tar.gz"}, "model_data_url must be s3://"),
    ({"lambda_architecture": "riscv"}, "lambda_architecture must be arm64 or x86_64"),
    ({"api_authorization": "cognito"}, "api_authorization must be none or iam"),
    ({"cors_allow_origins": "shop.example.com"}, "cors_allow_origins must be"),
    ({"removal_policy": "snapshot"}, "removal_policy must be destroy or retain"),
    ({"vpc_enabled": "maybe"}, "vpc_enabled must be true or false"),
    ({"serverless_memory_mb": "lots"}, "serverless_memory_mb must be an integer"),
    ({"serverless_memory": 4096}, "unknown clipsearch setting(s) serverless_memory"),
    ({"profile": "prod", "availability_zones": "us-east-1a"}, "availability_zones lists 1"),
    ({"web_domain_name": "shop.example.com"}, "web_domain_name and web_certificate_arn go"),
    ({"web_domain_name": "shop.example.com", "web_certificate_arn":
      "arn:aws:acm:eu-west-1:123456789012:certificate/abc"}, "certificate ARN in us-east-1"),
    ({"web_domain_name": "not a host", "web_certificate_arn":
      "arn:aws:acm:us-east-1:123456789012:certificate/abc"}, "web_domain_name must be a host"),
    ({"web_price_class": "PriceClass_1"}, "web_price_class must be one of"),
    ({"web_acl_arn": "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/a/b"},
     "web_acl_arn must be a CLOUDFRONT-scope"),
    ({"api_authorization": "iam"}, "web=true needs api_authorization=none"),
    ({"profile": "prod", "region": "eu-west-1"}, "CloudFront only takes a web ACL made in"),
])
def test_impossible_values_fail_with_a_clear_message(context: dict[str, object],
                                                     message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(context, environ={})
    assert message in str(error.value)


def test_page_waf_outside_us_east_1_takes_an_existing_acl_or_no_page() -> None:
    acl = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/clipsearch-web/0a1b2c"
    here = load_config({"profile": "prod", "region": "us-east-1"}, environ={})
    assert here.web and here.web_waf, "us-east-1: the stack makes the CLOUDFRONT ACL itself"
    elsewhere = load_config({"profile": "prod", "region": "eu-west-1", "web_acl_arn": acl},
                            environ={})
    assert elsewhere.web and not elsewhere.web_waf and elsewhere.web_acl_arn == acl
    no_page = load_config({"profile": "prod", "region": "eu-west-1", "web": "false"},
                          environ={})
    assert not no_page.web and not no_page.web_waf
    assert not load_config({"web": "false", "api_authorization": "iam"}, environ={}).web


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        load_config({"serverless_memory_mb": 5000, "serverless_max_concurrency": 0},
                    environ={})
    assert "serverless_memory_mb" in str(error.value)
    assert "serverless_max_concurrency" in str(error.value)


def test_cdk_feature_flags_are_not_mistaken_for_settings() -> None:
    context = cdk_json_context()
    assert any(key.startswith("@aws-cdk/") for key in context)
    load_config({**context, "aws:cdk:enable-path-metadata": True,
                 "acknowledged-issue-numbers": [1]}, environ={})


def test_build_app_fails_before_synth_on_bad_config() -> None:
    with pytest.raises(ConfigError, match="serverless_memory_mb"):
        build_app({"serverless_memory_mb": 5000, "bundle_dependencies": False}, environ={})


def test_serverless_memory_choices_are_the_1gb_steps() -> None:
    assert tuple(range(1024, 6145, 1024)) == SERVERLESS_MEMORY_CHOICES


@pytest.mark.parametrize(("region", "expected"), [
    ("us-east-1", "763104351884.dkr.ecr.us-east-1.amazonaws.com/"),
    ("eu-west-1", "763104351884.dkr.ecr.eu-west-1.amazonaws.com/"),
    ("ap-east-1", "871362719292.dkr.ecr.ap-east-1.amazonaws.com/"),
    ("cn-north-1", "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/"),
])
def test_dlc_image_uri_is_resolved_from_region_facts(region: str, expected: str) -> None:
    uri = dlc_image_uri(DeploymentConfig(region=region))
    assert uri.startswith(expected)
    assert uri.endswith(f"/huggingface-pytorch-inference:{DeploymentConfig().dlc_image_tag}")


def test_dlc_image_can_be_overridden() -> None:
    assert dlc_image_uri(DeploymentConfig(dlc_account="111122223333", dlc_image_tag="t")) == \
        "111122223333.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:t"
    custom = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-clip:1"
    assert dlc_image_uri(DeploymentConfig(image_uri=custom)) == custom


def test_unknown_dlc_region_asks_for_an_override() -> None:
    with pytest.raises(ConfigError, match="dlc_account"):
        dlc_image_uri(DeploymentConfig(region="xx-nowhere-1"))


def _model_stack(config: DeploymentConfig) -> tuple[Stack, ModelEndpoint]:
    stack = Stack(App(), "ModelOnly", env={"region": config.region})
    bucket = s3.Bucket(stack, "Bucket")
    return stack, ModelEndpoint(stack, "Model", config=config, bucket=bucket)


def test_missing_artifact_names_the_packaging_script(tmp_path: Path) -> None:
    config = DeploymentConfig(model_artifact=str(tmp_path / "model.tar.gz"))
    with pytest.raises(ModelArtifactMissing) as error:
        _model_stack(config)
    assert "scripts/package_model.py" in str(error.value)
    assert "model_data_url" in str(error.value)


def _artifact(tmp_path: Path, *names: str) -> Path:
    artifact = tmp_path / "model.tar.gz"
    with tarfile.open(artifact, "w:gz") as tar:
        for name in ("config.json", *names):
            (tmp_path / name).write_text("{}")
            tar.add(tmp_path / name, arcname=name)
    return artifact


def test_packaged_artifact_becomes_an_s3_asset_ending_in_tar_gz(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    stack, model = _model_stack(DeploymentConfig(model_artifact=str(artifact)))
    url = stack.resolve(model.model.primary_container.model_data_url)  # type: ignore[union-attr]
    assert url["Fn::Sub"].startswith("s3://cdk-hnb659fds-assets-${AWS::AccountId}-us-east-1/")
    key = url["Fn::Sub"].rsplit("/", 1)[1]
    # SageMaker documents ModelDataUrl as a .tar.gz; CDK alone would write <hash>.gz.
    assert key == f"{sha256_file(artifact)}.tar.gz"
    # The model role may read exactly that object.
    statements = stack.resolve(model.role.node.find_child("DefaultPolicy").document)
    assert any(s["Action"] == "s3:GetObject" and key in str(s["Resource"])
               for s in statements["Statement"])


def test_a_random_weight_artifact_is_refused_unless_allowed(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path, "RANDOM_WEIGHTS.txt")
    with pytest.raises(RandomModelArtifact) as error:
        _model_stack(DeploymentConfig(model_artifact=str(artifact)))
    assert "RANDOM_WEIGHTS.txt" in str(error.value) and str(artifact) in str(error.value)
    assert "allow_random_model=true" in str(error.value)
    _, model = _model_stack(DeploymentConfig(model_artifact=str(artifact),
                                             allow_random_model=True))
    assert model.model.primary_container.model_data_url  # type: ignore[union-attr]


def test_every_knob_is_documented() -> None:
    """docs/aws.md lists every field of DeploymentConfig, so the docs cannot fall behind."""
    from stacks.config import REPO_ROOT, field_names

    docs = (REPO_ROOT / "docs" / "aws.md").read_text()
    missing = [name for name in field_names() if f"`{name}`" not in docs]
    assert missing == []


def test_openapi_schemas_become_self_contained_draft4_models() -> None:
    from clipsearch.config import MAX_REQUEST_BYTES
    from stacks.openapi_models import DRAFT4, to_draft4

    components = {"Filters": {"type": "object", "maxProperties": 16,
                              "example": {"color": "red"}}}
    schema = to_draft4({
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "image": {"type": "string"},
            "text": {"type": "string", "maxLength": 1000, "nullable": True},
            "filters": {"$ref": "#/components/schemas/Filters"},
        },
    }, components)
    assert schema["$schema"] == DRAFT4
    assert schema["properties"]["image"]["maxLength"] == MAX_REQUEST_BYTES
    assert schema["properties"]["text"] == {"type": ["string", "null"], "maxLength": 1000}
    assert schema["properties"]["filters"] == {"type": "object", "maxProperties": 16}


def test_openapi_unresolvable_reference_is_an_error() -> None:
    from stacks.openapi_models import to_draft4

    with pytest.raises(ConfigError, match="cannot resolve"):
        to_draft4({"$ref": "#/components/schemas/Nope"}, {})


def test_routes_come_from_the_committed_contract() -> None:
    from stacks.openapi_models import load_openapi, routes

    by_key = {(r.path, r.method): r for r in routes(load_openapi())}
    assert by_key[("/search", "GET")].required_query == ("q",)
    assert by_key[("/search", "POST")].body_schema is not None
    assert by_key[("/products/{id}/similar", "GET")].path_params == ("id",)
    assert ("/health", "GET") in by_key
