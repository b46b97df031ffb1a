"""The CDK app, synthesised once per profile with cdk-nag's AWS Solutions checks and linted with
cfn-lint: every function of the wiring with its trigger, every queue with a dead-letter queue, every
route, a private TLS-only bucket, no IAM statement granting every action, the schedules of the
wiring, the Aurora version of the settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match, Template

from devtools import build_layer
from infra import lint
from infra.app import build
from infra.config import AURORA_VERSION, aurora_major, from_context, scales_to_zero
from infra.wiring import WIRING

PROFILES = ("personal", "scale")


@pytest.fixture(scope="session")
def layer_dir() -> Path:
    """The real layer, built as ``make layer`` builds it (skipped when nothing changed)."""
    build_layer.build()
    return build_layer.BUILD


@pytest.fixture(scope="session", params=PROFILES)
def synthesised(
    request: pytest.FixtureRequest, layer_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Template, Path]]:
    out = tmp_path_factory.mktemp(f"cdk-{request.param}")
    app = App(
        context={"profile": request.param, "stage": "test", "layer_dir": str(layer_dir)}, outdir=str(out)
    )
    stack = build(app)
    app.synth()  # runs cdk-nag: any unacknowledged finding fails here
    yield request.param, Template.from_stack(stack), out


def resources(template: Template, kind: str) -> dict[str, Any]:
    return dict(template.find_resources(kind))


def test_synthesis_passes_the_aws_solutions_checks(synthesised: tuple[str, Template, Path]) -> None:
    _, _, out = synthesised
    report = json.loads((out / "validation-report.json").read_text())
    for plugin in report["pluginReports"]:
        assert plugin["conclusion"] == "success", plugin["violations"]
        assert plugin["violations"] == []
        for finding in plugin.get("suppressedViolations", []):
            for construct in finding["violatingConstructs"]:
                assert construct.get("acknowledgment", {}).get("reason", "x"), finding


def test_cloudformation_lint_finds_nothing_but_what_is_accepted_with_a_reason(
    synthesised: tuple[str, Template, Path],
) -> None:
    _, _, out = synthesised
    reasons = lint.accepted()
    (template,) = lint.templates(out)
    findings = lint.lint(template)
    assert lint.unaccepted(findings, reasons) == [], "\n".join(map(str, lint.unaccepted(findings, reasons)))


def test_cloudformation_lint_fails_a_deprecated_aurora_version(
    synthesised: tuple[str, Template, Path], tmp_path: Path
) -> None:
    """The lint gate itself: the same template with the engine version MYI used to pin (16.6, which
    can no longer create clusters) does not pass."""
    _, _, out = synthesised
    (template,) = lint.templates(out)
    doc = json.loads(template.read_text())
    (cluster,) = [r for r in doc["Resources"].values() if r["Type"] == "AWS::RDS::DBCluster"]
    cluster["Properties"]["EngineVersion"] = "16.6"
    old = tmp_path / "old.template.json"
    old.write_text(json.dumps(doc, indent=1))
    assert [f.rule for f in lint.unaccepted(lint.lint(old), lint.accepted())] == ["W3690"]


def test_the_cluster_runs_the_aurora_version_of_the_settings(synthesised: tuple[str, Template, Path]) -> None:
    profile, template, _ = synthesised
    (cluster,) = [c["Properties"] for c in resources(template, "AWS::RDS::DBCluster").values()]
    assert cluster["Engine"] == "aurora-postgresql"
    assert cluster["EngineVersion"] == AURORA_VERSION
    # The default parameter group of that major version: a major upgrade has no group of ours to move.
    assert (
        cluster["DBClusterParameterGroupName"] == f"default.aurora-postgresql{aurora_major(AURORA_VERSION)}"
    )
    assert not resources(template, "AWS::RDS::DBClusterParameterGroup")
    assert not resources(template, "AWS::RDS::DBParameterGroup")
    if profile == "personal":
        assert scales_to_zero(AURORA_VERSION)
        assert cluster["ServerlessV2ScalingConfiguration"]["MinCapacity"] == 0


def test_the_aurora_version_is_a_setting_checked_against_scaling_to_zero() -> None:
    def config(**context: str) -> Any:
        return from_context(App(context={"stage": "test", **context}))

    assert config().aurora_version == AURORA_VERSION
    assert config(aurora_version="17.9").aurora_version == "17.9"
    with pytest.raises(ValueError, match="cannot scale to 0 ACU"):
        config(aurora_version="16.2")
    assert config(aurora_version="16.2", profile="scale").aurora_min_acu == 0.5
    with pytest.raises(ValueError, match=r"major\.minor"):
        config(aurora_version="16")
    assert [scales_to_zero(v) for v in ("13.15", "14.11", "15.7", "16.3", "17.4", "18.3")] == [
        True,
        False,
        True,
        True,
        True,
        True,
    ]


def test_the_operators_guide_names_the_default_aurora_version() -> None:
    guide = (build_layer.REPO / "docs" / "operations.md").read_text()
    assert f"`{AURORA_VERSION}`" in guide


def test_every_function_of_the_wiring_exists_on_arm64_with_its_trigger(
    synthesised: tuple[str, Template, Path],
) -> None:
    profile, template, _ = synthesised
    functions = resources(template, "AWS::Lambda::Function")
    by_name = {
        props["Properties"]["FunctionName"]: (logical, props["Properties"])
        for logical, props in functions.items()
        if "FunctionName" in props["Properties"]
    }
    mappings = resources(template, "AWS::Lambda::EventSourceMapping")
    rules = resources(template, "AWS::Events::Rule")
    for fn in WIRING.functions:
        name = f"myi-test-{fn.kebab}"
        assert name in by_name, name
        logical, props = by_name[name]
        assert props["Architectures"] == ["arm64"]
        assert props["Runtime"] == f"python{build_layer.PYTHON_VERSION}"  # what the layer is built for
        assert props["Timeout"] == fn.timeout_s and props["MemorySize"] == fn.memory_mb
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["Handler"] == "handler.lambda_handler" and props["Layers"]
        if fn.queue:
            mine = [
                m["Properties"]
                for m in mappings.values()
                if logical in json.dumps(m["Properties"]["FunctionName"])
            ]
            assert len(mine) == 1, fn.name
            assert mine[0]["BatchSize"] == fn.queue.batch_size
            assert mine[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            if fn.queue.max_concurrency:
                assert mine[0]["ScalingConfig"] == {"MaximumConcurrency": fn.queue.max_concurrency}
        for schedule in fn.schedules:
            rule = [
                r["Properties"]
                for r in rules.values()
                if r["Properties"].get("Name") == f"myi-test-{schedule.rule}"
            ]
            expected = (
                "rate(1 hour)"
                if (profile, schedule.rule) == ("personal", "sync-fanout")
                else schedule.expression
            )
            assert len(rule) == 1 and rule[0]["ScheduleExpression"] == expected
            assert logical in json.dumps(rule[0]["Targets"])
    assert len(rules) == sum(len(fn.schedules) for fn in WIRING.functions)
    (layer,) = [
        p["Properties"]
        for p in resources(template, "AWS::Lambda::LayerVersion").values()
        if p["Properties"].get("Description", "").startswith("MYI")
    ]
    assert layer["CompatibleRuntimes"] == [f"python{build_layer.PYTHON_VERSION}"]
    assert layer["CompatibleArchitectures"] == ["arm64"]
    assert template.find_resources("Custom::MyiMigrations")


def test_every_queue_has_a_dead_letter_queue_and_outlasts_its_consumer(
    synthesised: tuple[str, Template, Path],
) -> None:
    _, template, _ = synthesised
    queues = {
        p["Properties"]["QueueName"]: p["Properties"] for p in resources(template, "AWS::SQS::Queue").values()
    }
    for q in WIRING.queues:
        props = queues[f"myi-test-{q.name.replace('_', '-')}"]
        assert props["RedrivePolicy"]["maxReceiveCount"] == q.max_receives
        assert "deadLetterTargetArn" in props["RedrivePolicy"]
        assert props["VisibilityTimeout"] >= 6 * WIRING.consumer_of(q.name).timeout_s
        assert props["SqsManagedSseEnabled"] is True
        assert f"myi-test-{q.name.replace('_', '-')}-dlq" in queues


def test_every_route_of_the_wiring_is_routed(synthesised: tuple[str, Template, Path]) -> None:
    _, template, _ = synthesised
    keys = {r["Properties"]["RouteKey"] for r in resources(template, "AWS::ApiGatewayV2::Route").values()}
    assert keys == {f"{route.method} {route.path}" for route, _ in WIRING.routes()}
    stage = next(iter(resources(template, "AWS::ApiGatewayV2::Stage").values()))["Properties"]
    assert stage["AccessLogSettings"]["DestinationArn"]
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0


def test_the_import_bucket_is_private_encrypted_tls_only_and_expires_uploads(
    synthesised: tuple[str, Template, Path],
) -> None:
    _, template, _ = synthesised
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": Match.any_value(),
            "CorsConfiguration": {"CorsRules": [Match.object_like({"AllowedMethods": ["POST"]})]},
            "LifecycleConfiguration": {
                "Rules": Match.array_with([Match.object_like({"ExpirationInDays": 7})])
            },
        },
    )
    policies = [
        p["Properties"]["PolicyDocument"] for p in resources(template, "AWS::S3::BucketPolicy").values()
    ]
    assert policies and all(
        any(
            s["Effect"] == "Deny"
            and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
            for s in doc["Statement"]
        )
        for doc in policies
    )


def _role_statements(template: Template, fn_kebab: str) -> list[dict[str, Any]]:
    role_prefix = f"Functions{fn_kebab.replace('-', '')}role"
    return [
        s
        for logical, p in resources(template, "AWS::IAM::Policy").items()
        if logical.startswith(role_prefix)
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def _s3_statements(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        s
        for s in statements
        if any(a.startswith("s3:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    ]


def test_the_export_worker_has_its_queue_and_may_touch_exports_only(
    synthesised: tuple[str, Template, Path],
) -> None:
    _, template, _ = synthesised
    (worker,) = [
        p["Properties"]
        for p in resources(template, "AWS::Lambda::Function").values()
        if p["Properties"].get("FunctionName") == "myi-test-export-worker"
    ]
    assert (worker["Timeout"], worker["MemorySize"]) == (900, 1769)
    env = worker["Environment"]["Variables"]
    assert {"EXPORT_QUEUE_URL", "IMPORT_BUCKET", "DB_HOST", "STATE_TABLE"} <= set(env)
    assert env["EXPORT_TTL_DAYS"] == "7"
    queues = {
        p["Properties"]["QueueName"]: p["Properties"] for p in resources(template, "AWS::SQS::Queue").values()
    }
    assert queues["myi-test-export"]["RedrivePolicy"]["maxReceiveCount"] == 3
    assert "myi-test-export-dlq" in queues
    # Its S3 grants: the multipart upload, its abort and the object's deletion, under exports/ only.
    s3_statements = _s3_statements(_role_statements(template, "export-worker"))
    assert s3_statements
    for statement in s3_statements:
        assert "/exports/*" in json.dumps(statement["Resource"]), statement
        assert "uploads/" not in json.dumps(statement), statement
    assert {a for s in s3_statements for a in s["Action"]} == {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
    }
    # The API hands out presigned GETs of exports/ and lists them (under exports/ only) to delete them.
    api = _s3_statements(_role_statements(template, "api"))
    gets = [s for s in api if "s3:GetObject" in s["Action"]]
    assert gets and all("/exports/*" in json.dumps(s["Resource"]) for s in gets)
    lists = [s for s in api if "s3:ListBucketMultipartUploads" in s["Action"]]
    assert [s["Condition"] for s in lists] == [{"StringLike": {"s3:prefix": ["exports/*"]}}]


def test_the_bucket_expires_uploads_and_exports_by_prefix(synthesised: tuple[str, Template, Path]) -> None:
    _, template, _ = synthesised
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": [
                    Match.object_like(
                        {
                            "Id": "uploads",
                            "Prefix": "uploads/",
                            "ExpirationInDays": 7,
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                        }
                    ),
                    Match.object_like(
                        {
                            "Id": "exports",
                            "Prefix": "exports/",
                            "ExpirationInDays": 7,
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                        }
                    ),
                ]
            },
        },
    )


def test_no_iam_statement_grants_every_action(synthesised: tuple[str, Template, Path]) -> None:
    _, template, _ = synthesised
    for kind in ("AWS::IAM::Policy", "AWS::IAM::Role"):
        for logical, resource in resources(template, kind).items():
            docs = [resource["Properties"].get("PolicyDocument")] + [
                p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])
            ]
            for doc in filter(None, docs):
                for statement in doc["Statement"]:
                    actions = statement.get("Action", [])
                    actions = [actions] if isinstance(actions, str) else actions
                    assert "*" not in actions and not any(a.endswith(":*") for a in actions), (
                        logical,
                        statement,
                    )


def test_the_profiles_differ_where_cost_and_scale_do(synthesised: tuple[str, Template, Path]) -> None:
    profile, template, _ = synthesised
    proxies = resources(template, "AWS::RDS::DBProxy")
    nat_gateways = resources(template, "AWS::EC2::NatGateway")
    instances = resources(template, "AWS::EC2::Instance")
    cluster = next(iter(resources(template, "AWS::RDS::DBCluster").values()))["Properties"]
    assert cluster["StorageEncrypted"] is True and cluster["EnableIAMDatabaseAuthentication"] is True
    if profile == "personal":
        assert not proxies and not nat_gateways and len(instances) == 1
        assert cluster["ServerlessV2ScalingConfiguration"]["MinCapacity"] == 0
    else:
        assert len(proxies) == 1 and len(nat_gateways) == 2 and not instances
        proxy = next(iter(proxies.values()))["Properties"]
        assert proxy["RequireTLS"] is True and proxy["Auth"][0]["IAMAuth"] == "REQUIRED"
        # The proxy has a security group of its own that the cluster's lets in.
        (proxy_sg,) = proxy["VpcSecurityGroupIds"]
        (cluster_sg,) = cluster["VpcSecurityGroupIds"]
        assert proxy_sg != cluster_sg
        ingress = [r["Properties"] for r in resources(template, "AWS::EC2::SecurityGroupIngress").values()]
        assert any(r["GroupId"] == cluster_sg and r.get("SourceSecurityGroupId") == proxy_sg for r in ingress)


def test_the_outputs_name_the_api_and_the_redirect_uri(synthesised: tuple[str, Template, Path]) -> None:
    _, template, _ = synthesised
    outputs = template.find_outputs("*")
    assert {"ApiUrl", "SpotifyRedirectUri"} <= set(outputs)
    assert "/auth/callback" in json.dumps(outputs["SpotifyRedirectUri"]["Value"])


def test_the_dashboard_can_be_published_behind_cloudfront(layer_dir: Path, tmp_path: Path) -> None:
    app = App(
        context={"profile": "personal", "stage": "test", "layer_dir": str(layer_dir), "publish_web": "true"},
        outdir=str(tmp_path),
    )
    stack = build(app)
    app.synth()
    (linted,) = lint.templates(tmp_path)
    assert lint.unaccepted(lint.lint(linted), lint.accepted()) == []
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::CloudFront::Distribution", 1)
    template.resource_count_is("Custom::CDKBucketDeployment", 1)
    distribution = next(iter(resources(template, "AWS::CloudFront::Distribution")))
    auth = next(
        f["Properties"]
        for f in resources(template, "AWS::Lambda::Function").values()
        if f["Properties"].get("FunctionName") == "myi-test-auth"
    )
    assert distribution in json.dumps(auth["Environment"]["Variables"]["APP_URL"])
    assert distribution in json.dumps(auth["Environment"]["Variables"]["ALLOWED_ORIGINS"])
    api = next(iter(resources(template, "AWS::ApiGatewayV2::Api").values()))["Properties"]
    assert distribution in json.dumps(api["CorsConfiguration"]["AllowOrigins"])


def test_nothing_is_open_to_the_internet_and_the_nat_forwards_only_the_vpc(
    synthesised: tuple[str, Template, Path],
) -> None:
    profile, template, _ = synthesised
    rules = []
    for group in resources(template, "AWS::EC2::SecurityGroup").values():
        rules += group["Properties"].get("SecurityGroupIngress", [])
    rules += [r["Properties"] for r in resources(template, "AWS::EC2::SecurityGroupIngress").values()]
    assert rules
    assert all(r.get("CidrIp") != "0.0.0.0/0" and r.get("CidrIpv6") != "::/0" for r in rules)
    if profile == "personal":
        assert any("CidrBlock" in json.dumps(r.get("CidrIp", "")) for r in rules)


def test_every_function_role_may_write_its_logs_and_attach_to_the_vpc(
    synthesised: tuple[str, Template, Path],
) -> None:
    _, template, _ = synthesised
    policies = resources(template, "AWS::IAM::Policy")
    for fn in WIRING.functions:
        role_prefix = f"Functions{fn.kebab.replace('-', '')}role"
        statements = [
            s
            for logical, p in policies.items()
            if logical.startswith(role_prefix)
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        ]
        actions = {
            a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        }
        assert {"logs:PutLogEvents", "ec2:CreateNetworkInterface"} <= actions, fn.name


def test_alarms_watch_every_dead_letter_queue_and_every_function(
    synthesised: tuple[str, Template, Path],
) -> None:
    profile, template, _ = synthesised
    alarms = [a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()]
    assert all(a["AlarmActions"] for a in alarms)
    depths = [a for a in alarms if a["MetricName"] == "ApproximateNumberOfMessagesVisible"]
    assert len(depths) == len(WIRING.queues)
    lambda_alarms = [a for a in alarms if a["Namespace"] == "AWS/Lambda"]
    (topic,) = resources(template, "AWS::SNS::Topic").values()
    if profile == "personal":
        # One alarm each over all functions (no dimensions), within CloudWatch's ten free alarms;
        # the topic without a customer managed key.
        assert sorted(a["MetricName"] for a in lambda_alarms) == ["Errors", "Throttles"]
        assert all("Dimensions" not in a for a in lambda_alarms)
        assert len(alarms) <= 10
        assert "KmsMasterKeyId" not in topic["Properties"] and not resources(template, "AWS::KMS::Key")
    else:
        assert len(lambda_alarms) == 2 * len(WIRING.functions)
        assert "KmsMasterKeyId" in topic["Properties"]


def test_every_function_knows_the_sync_cadences_bounds_and_the_fanouts_period(
    synthesised: tuple[str, Template, Path],
) -> None:
    profile, template, _ = synthesised
    for props in resources(template, "AWS::Lambda::Function").values():
        env = props["Properties"].get("Environment", {}).get("Variables", {})
        if "STAGE" not in env:
            continue  # CDK's own helper functions
        assert env["SYNC_MAX_INTERVAL_SECONDS"] == "3600"
        assert env["SYNC_FANOUT_PERIOD_SECONDS"] == ("3600" if profile == "personal" else "900")


def test_api_reserved_concurrency_is_opt_in_and_reserves_for_the_api_and_auth_functions_only(
    synthesised: tuple[str, Template, Path], layer_dir: Path, tmp_path: Path
) -> None:
    """A new account's concurrency quota can be 10, and Lambda keeps 10 unreserved: the default
    reserves nothing. ``-c api_reserved_concurrency=N`` reserves N for each of api and auth, and the
    template still passes cfn-lint."""

    def reservations(template: Template) -> dict[str, Any]:
        return {
            props["Properties"]["FunctionName"]: props["Properties"].get("ReservedConcurrentExecutions")
            for props in resources(template, "AWS::Lambda::Function").values()
            if str(props["Properties"].get("FunctionName", "")).startswith("myi-test-")
        }

    profile, default, _ = synthesised
    assert reservations(default) == {
        f"myi-test-{fn.kebab}": fn.reserved_concurrency for fn in WIRING.functions
    }
    assert reservations(default)["myi-test-api"] is None and reservations(default)["myi-test-auth"] is None

    app = App(
        context={
            "profile": profile,
            "stage": "test",
            "layer_dir": str(layer_dir),
            "api_reserved_concurrency": "7",
        },
        outdir=str(tmp_path),
    )
    stack = build(app)
    app.synth()
    (linted,) = lint.templates(tmp_path)
    assert lint.unaccepted(lint.lint(linted), lint.accepted()) == []
    reserved = reservations(Template.from_stack(stack))
    assert reserved.pop("myi-test-api") == 7 and reserved.pop("myi-test-auth") == 7
    # every other function as the wiring has it
    assert reserved == {
        f"myi-test-{fn.kebab}": fn.reserved_concurrency for fn in WIRING.functions if not fn.routes
    }

    def config(value: Any) -> Any:
        return from_context(App(context={"stage": "test", "api_reserved_concurrency": value}))

    assert config(None).api_reserved_concurrency is None
    assert config(12).api_reserved_concurrency == 12  # cdk.json's number
    for wrong in ("0", "-1", "ten", "2.5", True):
        with pytest.raises(ValueError, match="api_reserved_concurrency"):
            config(wrong)
