"""The public query API: API Gateway REST in front of the query Lambda.

Routes, required query parameters and JSON request models come from the API
contract, docs/openapi.json (see stacks/openapi_models.py). Today that is:
  POST /search                  JSON body, validated against the SearchRequest model
  GET  /search?q=&k=&offset=    q required (validated by the gateway)
  GET  /products/{id}
  GET  /products/{id}/similar
  GET  /facets
  GET  /health                  no API key, for uptime checks
All are Lambda proxy integrations of the one query function.

Around the routes: an API key and a usage plan (rate, burst, optional daily
quota), stage throttling, JSON access logs, execution logs and X-Ray, gateway
error responses in the API's own error format, CORS, and optionally WAF.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from stacks.common import log_group
from stacks.config import ConfigError, DeploymentConfig
from stacks.functions import PythonFunction
from stacks.nag import acknowledge
from stacks.openapi_models import load_openapi, routes
from stacks.waf import web_acl

STAGE_NAME = "v1"
HEALTH_PATH = "/health"
JSON = "application/json"

# Gateway-made errors use the API's error body {"error", "message", "field"}.
# $context.error.messageString is the message already quoted for JSON.
_ERROR_TEMPLATE = ('{"error": "%s", "message": $context.error.messageString, '
                   '"field": null}')


class QueryApi(Construct):
    """RestApi + stage settings + usage plan + optional WAF for the query Lambda."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig,
                 function: PythonFunction) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = log_group(self, "AccessLogs", config)
        cors = None
        if config.cors_allow_origins:
            cors = apigw.CorsOptions(
                allow_origins=list(config.cors_allow_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Content-Type", "X-Api-Key", "Authorization", "X-Amz-Date",
                               "X-Amz-Security-Token"],
                max_age=Duration.hours(1),
            )
        self.api = apigw.RestApi(
            self, "Api",
            rest_api_name=f"{config.stack_name}-query",
            description="clipsearch multimodal product search",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Execution logs need the account-level CloudWatch role. It is shared by
            # every API in the account/region, so it outlives this stack.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            default_cors_preflight_options=cors,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=False),
                logging_level=apigw.MethodLoggingLevel[config.api_execution_log_level],
                # Full request/response logging would copy shoppers' photos into logs.
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=config.api_rate_limit,
                throttling_burst_limit=config.api_burst_limit,
            ),
        )
        # RestApi adds an unnamed "Endpoint" output; ours is ApiUrl, a stable name.
        self.api.node.try_remove_child("Endpoint")
        self._gateway_responses(config)

        integration = apigw.LambdaIntegration(function.function, proxy=True,
                                              allow_test_invoke=False)
        body_validator = self.api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True)
        params_validator = self.api.add_request_validator(
            "ParamsValidator", validate_request_body=False, validate_request_parameters=True)

        iam_auth = config.api_authorization == "iam"
        guarded: dict[str, Any] = {
            "api_key_required": config.api_key_required,
            "authorization_type": (apigw.AuthorizationType.IAM if iam_auth
                                   else apigw.AuthorizationType.NONE),
        }
        self.routes = routes(load_openapi())
        self.methods: list[apigw.Method] = []
        self.health: apigw.Method | None = None
        for route in self.routes:
            resource = self.api.root.resource_for_path(route.path)
            parameters = {f"method.request.querystring.{name}": True
                          for name in route.required_query}
            parameters.update({f"method.request.path.{name}": True
                               for name in route.path_params})
            options: dict[str, Any] = {}
            if route.body_schema is not None:
                model = apigw.CfnModel(
                    self, f"{route.operation_id}Model",
                    rest_api_id=self.api.rest_api_id, content_type=JSON,
                    name=f"{route.operation_id[0].upper()}{route.operation_id[1:]}Body",
                    schema=route.body_schema,
                )
                options["request_models"] = {
                    JSON: apigw.Model.from_model_name(self, f"{route.operation_id}Ref",
                                                      model.ref)}
                options["request_validator"] = body_validator
                # A changed model must produce a new deployment, or the stage keeps the old one.
                self.api.latest_deployment.add_to_logical_id(route.body_schema)
            elif parameters:
                options["request_validator"] = params_validator
            if route.path == HEALTH_PATH:
                self.health = resource.add_method(route.method, integration,
                                                  request_parameters=parameters or None,
                                                  **options)
                continue
            self.methods.append(resource.add_method(
                route.method, integration, request_parameters=parameters or None,
                **options, **guarded))
        if self.health is None:
            raise ConfigError(f"docs/openapi.json has no {HEALTH_PATH} route")

        self.api_key = self.api.add_api_key("ApiKey", description="clipsearch query API key")
        self.usage_plan = self.api.add_usage_plan(
            "UsagePlan",
            description="clipsearch query API: per-key rate and burst",
            throttle=apigw.ThrottleSettings(rate_limit=config.api_rate_limit,
                                            burst_limit=config.api_burst_limit),
            quota=(apigw.QuotaSettings(limit=config.api_quota_per_day, period=apigw.Period.DAY)
                   if config.api_quota_per_day else None),
        )
        self.usage_plan.add_api_stage(stage=self.api.deployment_stage)
        self.usage_plan.add_api_key(self.api_key)

        self.web_acl: wafv2.CfnWebACL | None = None
        if config.waf_enabled:
            self.web_acl = self._waf(config)
        else:
            acknowledge(self.api, "AwsSolutions-APIG3",
                        "WAF is off in this profile to save its fixed monthly cost; the API "
                        "key, usage plan and stage throttling bound abuse. Set waf_enabled.")

        self._acknowledge_auth(config, self.health)
        acknowledge(
            self.api, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
            "service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-level API Gateway logging role must use this AWS policy; it only "
            "allows writing API Gateway's own log groups.",
        )
        self.url = self.api.url

    def _gateway_responses(self, config: DeploymentConfig) -> None:
        headers: dict[str, str] = {"Content-Type": "'application/json'"}
        if config.cors_allow_origins == ("*",):
            headers["Access-Control-Allow-Origin"] = "'*'"
        elif len(config.cors_allow_origins) == 1:
            headers["Access-Control-Allow-Origin"] = f"'{config.cors_allow_origins[0]}'"
        for name, response_type, code, status in (
            ("BadBody", apigw.ResponseType.BAD_REQUEST_BODY, "invalid_request", "400"),
            ("BadParameters", apigw.ResponseType.BAD_REQUEST_PARAMETERS, "invalid_request",
             "400"),
            ("TooLarge", apigw.ResponseType.REQUEST_TOO_LARGE, "payload_too_large", "413"),
            ("Throttled", apigw.ResponseType.THROTTLED, "throttled", "429"),
            ("QuotaExceeded", apigw.ResponseType.QUOTA_EXCEEDED, "quota_exceeded", "429"),
            ("InvalidApiKey", apigw.ResponseType.INVALID_API_KEY, "forbidden", "403"),
            ("MissingAuth", apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "forbidden",
             "403"),
            ("Default4xx", apigw.ResponseType.DEFAULT_4_XX, "client_error", None),
            ("Default5xx", apigw.ResponseType.DEFAULT_5_XX, "gateway_error", None),
        ):
            self.api.add_gateway_response(
                name, type=response_type, status_code=status, response_headers=headers,
                templates={JSON: _ERROR_TEMPLATE % code})

    def _acknowledge_auth(self, config: DeploymentConfig, health: apigw.Method) -> None:
        """APIG4/COG4 per method, each with the reason that applies to it."""
        for resource in self.api.root.node.find_all():
            if isinstance(resource, apigw.Method) and resource.http_method == "OPTIONS":
                for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                    acknowledge(resource, rule,
                                "CORS preflight (OPTIONS) must answer without credentials: "
                                "browsers never send them on a preflight request.")
        for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
            acknowledge(health, rule,
                        "GET /health is an unauthenticated liveness probe for uptime monitors "
                        "and returns no catalog data; stage throttling still applies.")
        for method in self.methods:
            if config.api_authorization == "none":
                acknowledge(method, "AwsSolutions-APIG4",
                            "Read-only storefront search: shoppers are anonymous by design. "
                            "Callers present the API key; usage plan and throttling apply. "
                            "Set api_authorization=iam for a private API.")
            acknowledge(method, "AwsSolutions-COG4",
                        "No Cognito user pool: the API is a read-only storefront search "
                        "guarded by an API key (and optional IAM auth), not per-user data.")

    def _waf(self, config: DeploymentConfig) -> wafv2.CfnWebACL:
        acl = web_acl(self, "WebAcl", config, acl_scope="REGIONAL",
                      metric_name=f"{config.stack_name}-api")
        wafv2.CfnWebACLAssociation(self, "WebAclAssociation",
                                   resource_arn=self.api.deployment_stage.stage_arn,
                                   web_acl_arn=acl.attr_arn)
        return acl
