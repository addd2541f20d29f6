"""The search page on AWS: one CloudFront distribution in front of the page and the API.

    https://<distribution>/         -> private S3 bucket (origin access control):
                                       the page's files, as `clipsearch serve` serves them
    https://<distribution>/api/*    -> API Gateway stage; a CloudFront Function drops
                                       the /api prefix and CloudFront adds the API key

Why one origin for both: the page calls `/api/...` on its own origin, so no
CORS, `connect-src 'self'` in the CSP, and the API key is added at the edge as
an origin custom header: it is in no file a browser downloads. The key is a
separate API key (its own usage-plan entry, revocable alone) whose value is
generated into Secrets Manager; the template holds only a dynamic reference.

Product images keep coming from the presigned S3 URLs the API already returns
(see docs/aws.md, "Product images"): no second origin on the catalog bucket.

Around it: a response headers policy (CSP from clipsearch/page.py, HSTS,
nosniff, frame denial, referrer policy) on every response, search responses
never cached, HTTPS only, access logs to their own bucket, and in prod a WAF
web ACL with a per-IP rate rule (CLOUDFRONT scope, so us-east-1 only).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from clipsearch.page import PAGE_CSP, page_files
from stacks.common import log_group, removal_policy
from stacks.config import DeploymentConfig
from stacks.nag import acknowledge, finding_text
from stacks.query_api import QueryApi
from stacks.waf import web_acl

# The path the page finds the API under (the page's config.js says so).
API_PATH = "/api"
API_KEY_HEADER = "x-api-key"
HSTS_MAX_AGE = Duration.days(730)

# The header value, and the policy's member for it (the template test compares them).
REFERRER_POLICY = "strict-origin-when-cross-origin"
_REFERRER_POLICY = cloudfront.HeadersReferrerPolicy.STRICT_ORIGIN_WHEN_CROSS_ORIGIN


def response_headers() -> dict[str, str]:
    """The headers the response headers policy puts on every response, as browsers get them.

    The browser test's stand-in for CloudFront sends exactly these, and the
    template test checks the policy against them.
    """
    return {
        "Content-Security-Policy": PAGE_CSP,
        "Strict-Transport-Security": f"max-age={int(HSTS_MAX_AGE.to_seconds())}; "
                                     "includeSubDomains",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": REFERRER_POLICY,
    }


# Viewer-request function on /api/*: "/api/search" reaches the stage as "/search".
# CloudFront Functions (JS runtime 2.0) run at the edge for $0.10 per million.
STRIP_API_PREFIX_JS = f"""function handler(event) {{
  var request = event.request;
  request.uri = request.uri.substring({len(API_PATH)}) || "/";
  return request;
}}
"""

# CDK's singleton Lambda behind BucketDeployment (its id carries this fixed uuid).
_DEPLOYMENT_HANDLER_PREFIX = "Custom::CDKBucketDeployment"


class Web(Construct):
    """Page bucket, page files, the API key CloudFront adds, headers policy, distribution."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig,
                 api: QueryApi, access_log_bucket: s3.IBucket) -> None:
        super().__init__(scope, construct_id)
        common = {
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "encryption": s3.BucketEncryption.S3_MANAGED,
            "enforce_ssl": True,
            "minimum_tls_version": 1.2,
            "removal_policy": removal_policy(config),
            "auto_delete_objects": not config.retain,
            "server_access_logs_bucket": access_log_bucket,
        }
        self.bucket = s3.Bucket(
            self, "Page", object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_prefix="page-bucket/", **common)
        # CloudFront's standard logs are written with an ACL, so this bucket alone
        # keeps ACLs (bucket owner preferred); logs expire like the other access logs.
        self.log_bucket = s3.Bucket(
            self, "CdnLogs", object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            server_access_logs_prefix="cdn-log-bucket/",
            lifecycle_rules=[s3.LifecycleRule(
                id="expire-access-logs",
                expiration=Duration.days(config.access_log_expiration_days),
                abort_incomplete_multipart_upload_after=Duration.days(1))],
            **common)

        self.api_key_secret = secretsmanager.Secret(
            self, "PageApiKeyValue",
            description=f"{config.stack_name}: the API key CloudFront adds to the page's calls",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=40, exclude_punctuation=True, include_space=False),
            removal_policy=removal_policy(config))
        # A {{resolve:secretsmanager:...}} reference: CloudFormation puts the value
        # into the key and the origin header; it is never in the template.
        key_value = self.api_key_secret.secret_value.unsafe_unwrap()
        self.api_key = apigw.ApiKey(
            self, "PageApiKey", value=key_value,
            description="The search page's key: CloudFront adds it, browsers never see it")
        api.usage_plan.add_api_key(self.api_key)

        self.headers_policy = self._headers_policy(config)
        self.web_acl: wafv2.CfnWebACL | None = None
        web_acl_arn = config.web_acl_arn
        if config.web_waf:
            self.web_acl = web_acl(self, "WebAcl", config, acl_scope="CLOUDFRONT",
                                   metric_name=f"{config.stack_name}-web")
            web_acl_arn = self.web_acl.attr_arn
        self.distribution = self._distribution(config, api, key_value, web_acl_arn)

        # The page's files plus config.js for this host, staged from a temporary
        # directory (CDK copies the asset into the cloud assembly right here).
        with tempfile.TemporaryDirectory(prefix="clipsearch-page-") as staging:
            for name, content in page_files(API_PATH).items():
                (Path(staging) / name).write_bytes(content)
            self.page_source = s3deploy.Source.asset(staging)
            self.deployment = s3deploy.BucketDeployment(
                self, "PageFiles", destination_bucket=self.bucket, sources=[self.page_source],
                # Browsers and the edge revalidate (a cheap 304; CloudFront keeps a
                # no-cache object for the cache policy's 1 s minimum), so a deploy is
                # seen at once, as locally, with no invalidation and so no
                # cloudfront:CreateInvalidation on "*" for the deployment's role.
                cache_control=[s3deploy.CacheControl.no_cache()],
                log_group=log_group(self, "PageFilesLogs", config), memory_limit=256)
        host = config.web_domain_name or self.distribution.distribution_domain_name
        self.url = f"https://{host}/"
        self._acknowledge(config)

    def _headers_policy(self, config: DeploymentConfig) -> cloudfront.ResponseHeadersPolicy:
        return cloudfront.ResponseHeadersPolicy(
            self, "SecurityHeaders",
            comment=f"{config.stack_name}: CSP, HSTS, nosniff, frame denial",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=PAGE_CSP, override=True),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=HSTS_MAX_AGE, include_subdomains=True,
                    override=True),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(
                    override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=_REFERRER_POLICY, override=True),
            ))

    def _distribution(self, config: DeploymentConfig, api: QueryApi, key_value: str,
                      web_acl_arn: str | None) -> cloudfront.Distribution:
        strip_prefix = cloudfront.Function(
            self, "StripApiPrefix", runtime=cloudfront.FunctionRuntime.JS_2_0,
            code=cloudfront.FunctionCode.from_inline(STRIP_API_PREFIX_JS),
            comment=f"{API_PATH}/x reaches the API stage as /x")
        api_behaviour = cloudfront.BehaviorOptions(
            # The stage is the origin path; the API key is an origin custom header,
            # which also replaces any x-api-key a viewer sends.
            origin=origins.RestApiOrigin(api.api, custom_headers={API_KEY_HEADER: key_value}),
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
            # Search answers carry presigned image URLs that expire: never cached.
            cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
            origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
            response_headers_policy=self.headers_policy,
            function_associations=[cloudfront.FunctionAssociation(
                function=strip_prefix, event_type=cloudfront.FunctionEventType.VIEWER_REQUEST)],
        )
        certificate = (acm.Certificate.from_certificate_arn(
            self, "Certificate", config.web_certificate_arn)
            if config.web_certificate_arn else None)
        return cloudfront.Distribution(
            self, "Distribution",
            comment=f"{config.stack_name} search page and API",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                # A plain-HTTP visitor gets a redirect; nothing is served over HTTP.
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=self.headers_policy,
                compress=True,
            ),
            additional_behaviors={f"{API_PATH}/*": api_behaviour},
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            price_class=cloudfront.PriceClass[config.web_price_class.upper().replace(
                "PRICECLASS_", "PRICE_CLASS_")],
            certificate=certificate,
            domain_names=[config.web_domain_name] if config.web_domain_name else None,
            minimum_protocol_version=(cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021
                                      if certificate else None),
            enable_logging=True, log_bucket=self.log_bucket, log_file_prefix="cloudfront/",
            web_acl_id=web_acl_arn,
        )

    def _deployment_wildcards(self, stack: Stack) -> list[str]:
        """The wildcard findings on CDK's BucketDeployment role, named as cdk-nag names them."""
        def concrete(value: str, token: str) -> str:
            return token if Token.is_unresolved(value) else value

        assets = (f"arn:{concrete(stack.partition, '<AWS::Partition>')}:s3:::cdk-hnb659fds-"
                  f"assets-{concrete(stack.account, '<AWS::AccountId>')}-"
                  f"{concrete(stack.region, '<AWS::Region>')}/*")
        actions = ("s3:GetBucket*", "s3:GetObject*", "s3:List*", "s3:Abort*",
                   "s3:DeleteObject*")
        return ([f"Action::{a}" for a in actions]
                + [f"Resource::{assets}",
                   f"Resource::{finding_text(self, self.bucket.arn_for_objects('*'))}"])

    def _acknowledge(self, config: DeploymentConfig) -> None:
        """Findings accepted for the page, each with its reason."""
        acknowledge(self.distribution, "AwsSolutions-CFR1",
                    "A storefront search page is meant for visitors from anywhere; geo "
                    "restriction would be a business decision, not a security default.")
        if config.web_certificate_arn is None:
            acknowledge(self.distribution, "AwsSolutions-CFR4",
                        "On the default *.cloudfront.net certificate CloudFront fixes the "
                        "viewer policy at TLSv1; TLSv1.2_2021 applies once web_domain_name "
                        "and web_certificate_arn are set. HSTS keeps browsers on HTTPS.")
        if config.web_acl_arn is None and not config.web_waf:
            acknowledge(self.distribution, "AwsSolutions-CFR2",
                        "WAF is off in this profile to save its fixed monthly cost; the API "
                        "key's usage plan and stage throttling bound abuse. Set waf_enabled.")
        acknowledge(self.api_key_secret, "AwsSolutions-SMG4",
                    "The value is resolved into the API key and the CloudFront origin header "
                    "at deploy time; rotate it by redeploying after a new value, since "
                    "rotation alone would not update either.")
        stack = Stack.of(self)
        for child in stack.node.children:
            if child.node.id.startswith(_DEPLOYMENT_HANDLER_PREFIX):
                acknowledge(child, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:"
                            "policy/service-role/AWSLambdaBasicExecutionRole]",
                            "CDK's own BucketDeployment handler copies the page's files at "
                            "deploy time; this AWS policy only lets it write its logs.")
                for finding in self._deployment_wildcards(stack):
                    acknowledge(child, f"AwsSolutions-IAM5[{finding}]",
                                "CDK's BucketDeployment handler reads the page's asset zip "
                                "from the CDK assets bucket and syncs it into the page bucket "
                                "(keys vary, removed files are pruned): those buckets only.")
                acknowledge(child, "AwsSolutions-L1",
                            "CDK pins the runtime of its BucketDeployment handler (it bundles "
                            "the AWS CLI layer for it); the function runs only at deploy time.")
