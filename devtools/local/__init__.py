"""The local runtime: the deployed wiring on one machine (not shipped in the Lambda layer)."""
