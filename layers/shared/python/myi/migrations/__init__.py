"""Versioned SQL migrations (applied by myi.migrate)."""
