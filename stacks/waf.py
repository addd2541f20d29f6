"""The WAF web ACL shared by the API (REGIONAL) and the page's distribution (CLOUDFRONT).

One rule set for both entry points: a per-IP rate-based rule that blocks, and
AWS's common and known-bad-inputs managed groups. Image searches carry
multi-MB JSON bodies, so the common set's 8 KB body-size rule only counts.
"""

from __future__ import annotations

from typing import Any, Literal

from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from stacks.config import DeploymentConfig

RATE_RULE = "rate-limit-per-ip"


def web_acl(scope: Construct, construct_id: str, config: DeploymentConfig, *,
            acl_scope: Literal["REGIONAL", "CLOUDFRONT"], metric_name: str) -> wafv2.CfnWebACL:
    """A web ACL with the rate rule (config.waf_rate_limit_per_5min) and the managed groups.

    A CLOUDFRONT-scope ACL can only be created in us-east-1 (config.py checks that).
    """

    def visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
        return wafv2.CfnWebACL.VisibilityConfigProperty(
            cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True)

    def managed(priority: int, name: str, overrides: list[str]) -> Any:
        return wafv2.CfnWebACL.RuleProperty(
            name=name, priority=priority,
            override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                    vendor_name="AWS", name=name,
                    rule_action_overrides=[
                        wafv2.CfnWebACL.RuleActionOverrideProperty(
                            name=rule,
                            action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}))
                        for rule in overrides
                    ] or None,
                )),
            visibility_config=visibility(name),
        )

    return wafv2.CfnWebACL(
        scope, construct_id,
        scope=acl_scope,
        default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
        visibility_config=visibility(metric_name),
        rules=[
            wafv2.CfnWebACL.RuleProperty(
                name=RATE_RULE, priority=0,
                action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        aggregate_key_type="IP", limit=config.waf_rate_limit_per_5min)),
                visibility_config=visibility(RATE_RULE),
            ),
            managed(1, "AWSManagedRulesCommonRuleSet", ["SizeRestrictions_BODY"]),
            managed(2, "AWSManagedRulesKnownBadInputsRuleSet", []),
        ],
    )


def create_web_acl_input(config: DeploymentConfig, name: str) -> dict[str, Any]:
    """The page's rules as an `aws wafv2 create-web-acl --cli-input-json` document.

    For a stack outside us-east-1, whose distribution needs a CLOUDFRONT-scope
    ACL it cannot create itself (scripts/web_acl.py prints this). The rules
    are the ones `web_acl` builds, rendered by CDK: CloudFormation's
    WAFv2 properties have the API's names and shapes.
    """
    from aws_cdk import App, Environment, Stack
    from aws_cdk.assertions import Template

    stack = Stack(App(), "WebAclDocument", env=Environment(region="us-east-1"))
    acl = web_acl(stack, "WebAcl", config, acl_scope="CLOUDFRONT", metric_name=name)
    properties = Template.from_stack(stack).to_json()["Resources"][
        stack.get_logical_id(acl)]["Properties"]
    return {"Name": name, "Description": "clipsearch search page (CloudFront)", **properties}
