"""The cdk-nag (AWS Solutions) findings MYI accepts, each on the narrowest construct and with the
reason a reviewer needs. Everything else the checks ask for is built in."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnElement, Stack, Validations
from constructs import IConstruct

from infra.stack import MyiStack

RULES = "AwsSolutions::AwsSolutions-"


def _ack(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{RULES}{rule}", reason=reason))


def acknowledge(stack: Stack) -> None:
    assert isinstance(stack, MyiStack)
    config = stack.config

    if not config.nat_gateways:
        nat = stack.network.vpc
        _ack(
            nat,
            "EC23",
            "The NAT instance's only inbound rule is the VPC's own CIDR (a token the check cannot resolve), "
            "for the traffic it forwards; nothing from the internet gets in.",
        )
        _ack(nat, "EC26", "The NAT instance's root volume holds no data: it only forwards packets.")
        _ack(
            nat,
            "EC28",
            "Detailed monitoring would cost more than the NAT instance saves; basic metrics suffice.",
        )
        _ack(
            nat,
            "EC29",
            "The NAT instance is CloudFormation's to replace; a redeploy recreates it, no state is lost.",
        )

    _ack(
        stack.http.api,
        "APIG4",
        "Every /me route checks the session (an HttpOnly cookie resolved server-side) in the function before "
        "anything else; /health, /openapi.json and /auth/* are public by design. An API Gateway authorizer "
        "would repeat that check at the cost of a second invocation per request.",
    )
    if not config.production:
        _ack(
            stack.database.cluster,
            "RDS10",
            "Deletion protection is on for production stages (stage=prod); other stages are disposable.",
        )
    _ack(
        stack.secrets.spotify,
        "SMG4",
        "The Spotify client secret is issued by Spotify: rotate it in the Spotify dashboard and put the new "
        "value here (docs/operations.md).",
    )
    _ack(
        stack.secrets.token_key,
        "SMG4",
        "The token key ring is rotated by adding a key version and making it current "
        "(docs/operations.md): old tokens must stay readable, which a generated replacement would break.",
    )
    for name, deployed in stack.functions.deployed.items():
        _ack(
            deployed.function,
            "L1",
            f"{name}: the runtime is {deployed.function.runtime.name}, the Python the shared layer is built "
            "for and its smoke test imports every handler with (devtools.build_layer.PYTHON_VERSION); a "
            "newer one is adopted there, together with the layer, once the test machines have that Python.",
        )
        _ack(
            deployed.role,
            "IAM5[Resource::*]",
            f"{name}: X-Ray's PutTraceSegments/PutTelemetryRecords and the VPC network-interface actions "
            "Lambda needs accept no resource-level permissions.",
        )
        if any(a in ("import_bucket:read", "import_bucket:write") for a in deployed.spec.access):
            _ack(
                deployed.role,
                f"IAM5[Resource::<{stack.get_logical_id(_cfn(stack.files.bucket))}.Arn>/uploads/*]",
                f"{name}: uploads are keyed per user and import, unknown at deploy time; the uploads/ prefix "
                "is the narrowest scope.",
            )
        if any(a.startswith("import_bucket:export_") for a in deployed.spec.access):
            _ack(
                deployed.role,
                f"IAM5[Resource::<{stack.get_logical_id(_cfn(stack.files.bucket))}.Arn>/exports/*]",
                f"{name}: exports are keyed per user and export, unknown at deploy time; the exports/ prefix "
                "is the narrowest scope.",
            )
    _ack(
        stack,
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        "Only CDK's own helper functions (the custom resource provider and the bucket notification handler) "
        "use the basic execution policy; MYI's functions have roles of their own.",
    )
    _dashboard(stack)
    migrate = stack.functions.deployed.get("migrate")
    if migrate is not None:
        _ack(
            stack,
            f"IAM5[Resource::<{stack.get_logical_id(_cfn(migrate.function))}.Arn>:*]",
            "The custom resource provider may invoke every version of the migration function, which CDK "
            "grants with a version wildcard on that one function.",
        )


def _dashboard(stack: MyiStack) -> None:
    if stack.dashboard is None:
        return
    cdn = stack.dashboard.distribution
    _ack(
        cdn,
        "CFR1",
        "The dashboard's users are wherever its operator's friends are: no geographic restriction.",
    )
    _ack(
        cdn,
        "CFR2",
        "The distribution serves a handful of static files; the API behind it has its own throttling, and "
        "a web ACL would cost more than the whole personal deployment.",
    )
    _ack(
        cdn,
        "CFR4",
        "The default *.cloudfront.net certificate fixes the TLS policy; with a custom domain and certificate "
        "the distribution requires TLS 1.2 (minimum_protocol_version).",
    )
    for child in stack.node.children:
        if not child.node.id.startswith("Custom::CDKBucketDeployment"):
            continue
        reason = (
            "CDK's own deployment function copies web/ from the asset bucket into the dashboard bucket; its "
            "permissions and runtime are CDK's."
        )
        bucket = stack.get_logical_id(_cfn(stack.dashboard.bucket))
        for finding in (
            "L1",
            "IAM5[Resource::*]",
            "IAM5[Action::s3:GetObject*]",
            "IAM5[Action::s3:GetBucket*]",
            "IAM5[Action::s3:List*]",
            "IAM5[Action::s3:DeleteObject*]",
            "IAM5[Action::s3:Abort*]",
            "IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]",
            f"IAM5[Resource::<{bucket}.Arn>/*]",
        ):
            _ack(child, finding, reason)


def _cfn(construct: IConstruct) -> CfnElement:
    child = construct.node.default_child
    assert isinstance(child, CfnElement)
    return child
