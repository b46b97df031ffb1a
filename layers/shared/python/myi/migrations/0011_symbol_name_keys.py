"""Names without a letter or digit key to themselves, no longer to '' (see myi.catalog.name_key)."""

from typing import Any

from myi.catalog import rekey_empty_names


def apply(conn: Any) -> None:
    rekey_empty_names(conn)
