"""Builds MYI's CDK app: the stack of a stage and profile, and cdk-nag's AWS Solutions checks on
every synth, with each acknowledged finding carrying its reason (``infra/acknowledgements.py``)."""

from __future__ import annotations

import os

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.acknowledgements import acknowledge
from infra.config import from_context
from infra.stack import MyiStack


def build(app: App) -> MyiStack:
    config = from_context(app)
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    stack = MyiStack(
        app,
        config.stack_name,
        config=config,
        env=Environment(account=account, region=region) if account and region else None,
    )
    acknowledge(stack)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack
