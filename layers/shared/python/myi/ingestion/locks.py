"""The advisory locks of ingestion, which statistics maintenance takes too.

``pg_advisory_xact_lock(USER_LOCK_CLASS, user)`` serialises the batches of one user, so merges
cannot race and a concurrent sync and import of one user never lose or double a count. The catalog
lock is taken shared by every batch, and exclusively by whatever changes the album or credits of
stored tracks, which moves the statistics of every user who played them.
"""

from __future__ import annotations

from myi.ingestion.session import Exec, Row

CATALOG_LOCK = 0x4D594943  # "MYIC"
USER_LOCK_CLASS = 0x4D5955  # "MYU": the class of the per-user advisory lock

# A batch's locks, with its user's time zone (NULL: no such user).
LOCK_SHARED_SQL = f"""
SELECT pg_advisory_xact_lock_shared({CATALOG_LOCK}), pg_advisory_xact_lock({USER_LOCK_CLASS}, %(user)s),
       (SELECT timezone FROM users WHERE id = %(user)s)"""
LOCK_EXCLUSIVE_SQL = f"""
SELECT pg_advisory_xact_lock({CATALOG_LOCK}), pg_advisory_xact_lock({USER_LOCK_CLASS}, %(user)s),
       (SELECT timezone FROM users WHERE id = %(user)s)"""
# The catalog lock alone, exclusively: catalog changes that record no play (enrichment, merges).
CATALOG_EXCLUSIVE_SQL = f"SELECT pg_advisory_xact_lock({CATALOG_LOCK})"


def lock(ex: Exec, user_id: int, *, exclusive_catalog: bool) -> None:
    """Take a batch's locks; raises LookupError when there is no such user."""
    sql = LOCK_EXCLUSIVE_SQL if exclusive_catalog else LOCK_SHARED_SQL
    check_user(user_id, ex(sql, {"user": user_id}).fetchone())


def check_user(user_id: int, row: Row | None) -> None:
    """Raise LookupError unless ``row``, the result of a lock statement, found the user."""
    if row is None or row[2] is None:
        raise LookupError(f"no user {user_id}")
