#!/usr/bin/env python3
"""The CDK app: MYI's stack for one stage and profile, checked by cdk-nag (AWS Solutions) on every
synth. ``make synth PROFILE=personal|scale``, ``make deploy STAGE=prod``; settings: infra/config.py."""

from aws_cdk import App

from infra.app import build

app = App()
build(app)
app.synth()
