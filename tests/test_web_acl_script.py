"""scripts/web_acl.py: the page's CLOUDFRONT web ACL for stacks outside us-east-1.

The printed document is checked against botocore's model of CreateWebACL (the
API's own input schema), and `--create` runs against moto's WAFv2; the ARN it
prints is what `-c web_acl_arn=` accepts.
"""

from __future__ import annotations

import json

import boto3
import botocore.session
import pytest
from botocore.validate import ParamValidator
from moto import mock_aws

from scripts.web_acl import main
from stacks.config import load_config
from stacks.waf import RATE_RULE


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "eu-west-1")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def test_the_printed_document_is_a_valid_create_web_acl_input(capsys) -> None:
    assert main(["--name", "clipsearch-prod-web", "--rate-limit", "500"]) == 0
    document = json.loads(capsys.readouterr().out)
    shape = botocore.session.get_session().get_service_model("wafv2").operation_model(
        "CreateWebACL").input_shape
    report = ParamValidator().validate(document, shape)
    assert not report.has_errors(), report.generate_report()
    assert document["Scope"] == "CLOUDFRONT" and document["Name"] == "clipsearch-prod-web"
    rules = {r["Name"]: r for r in document["Rules"]}
    assert rules[RATE_RULE]["Statement"]["RateBasedStatement"] == {
        "AggregateKeyType": "IP", "Limit": 500}
    assert rules[RATE_RULE]["Action"] == {"Block": {}}
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} < set(rules)


def test_create_prints_an_arn_the_stack_accepts(aws, capsys) -> None:
    assert main(["--name", "clipsearch-prod-web", "--create"]) == 0
    arn = capsys.readouterr().out.strip()
    assert arn.startswith("arn:aws:wafv2:us-east-1:") and ":global/webacl/" in arn
    (summary,) = boto3.client("wafv2", region_name="us-east-1").list_web_acls(
        Scope="CLOUDFRONT")["WebACLs"]
    assert summary["ARN"] == arn
    config = load_config({"profile": "prod", "region": "eu-west-1", "web_acl_arn": arn},
                         environ={})
    assert config.web and config.web_acl_arn == arn and not config.web_waf


def test_failures_are_one_clear_line(aws, capsys) -> None:
    visibility = {"SampledRequestsEnabled": False, "CloudWatchMetricsEnabled": False,
                  "MetricName": "taken"}
    boto3.client("wafv2", region_name="us-east-1").create_web_acl(
        Name="clipsearch-prod-web", Scope="CLOUDFRONT", DefaultAction={"Allow": {}},
        VisibilityConfig=visibility)
    assert main(["--name", "clipsearch-prod-web", "--create"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not create web ACL 'clipsearch-prod-web' in us-east-1")
    assert "Traceback" not in err
    assert main(["--name", "x", "--rate-limit", "10"]) == 2
    assert "waf_rate_limit_per_5min must be >= 100" in capsys.readouterr().err
