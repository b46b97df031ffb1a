"""A user's statistics: ``queries`` reads them for the API; ``maintenance`` rebuilds and verifies
them and moves the recent floors (ingestion keeps them current as plays arrive)."""
