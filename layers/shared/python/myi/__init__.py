"""MYI: the shared package every Lambda function of MYI imports (the shared layer)."""

__version__ = "0.1.0"
