"""Developer tooling: embedded services, the test runner, benchmarks, the layer builder.

Not shipped in the Lambda layer.
"""
