"""Events: the plays of tmp_plays deduped, merged with other sources' records and inserted.

Per DESIGN.md: a record of another origin within 30 s of a stored play of the same track is the
same play (an account-data record, of minute precision, stands for its whole minute), and a stored
play takes at most one record of each other origin. Statistics deltas are taken only from the rows
this transaction inserted (``RETURNING``) or changed (a merge: the difference between the real and
the estimated ``ms_played``), into tmp_delta.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from myi.ingestion.session import Exec, Row


@dataclass(frozen=True)
class IngestResult:
    """What happened to a batch's plays."""

    added: int = 0
    merged: int = 0
    duplicates: int = 0
    # catalog gaps newly recorded for the enrichment worker (by ingest(); not part of the counts)
    gaps: int = field(default=0, compare=False)

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            self.added + other.added,
            self.merged + other.merged,
            self.duplicates + other.duplicates,
            self.gaps + other.gaps,
        )


# How far apart the candidates of the cross-source merge are looked for (see MATCH_ORIGINS_SQL).
MERGE_REACH = timedelta(seconds=90)


def span(user_id: int, first: datetime, last: datetime, origins: set[str]) -> dict[str, Any]:
    """The parameters of NEIGHBOURS and of the statements that dedupe and merge plays from
    ``first`` to ``last``: every stored play they can meet lies within MERGE_REACH of that span, and
    saying so with plain timestamps (no arithmetic in SQL) lets the planner leave out every other
    month's partition at once."""
    return {
        "user": user_id,
        "first": first,
        "last": last,
        "reach_first": first - MERGE_REACH,
        "reach_last": last + MERGE_REACH,
        "origins": sorted(origins),
    }


# Whether a batch of plays from ``first`` to ``last`` (of ``origins``) could repeat a stored play
# (one stored inside its span) or match one of another origin (within MERGE_REACH either side).
# Without one, a batch has nothing to match: only its own repeats are duplicates.
NEIGHBOURS = """EXISTS (
    SELECT 1 FROM listening_events
     WHERE user_id = %(user)s
       AND played_at BETWEEN %(reach_first)s AND %(reach_last)s
       AND (played_at BETWEEN %(first)s AND %(last)s OR origin <> ALL (%(origins)s::text[])))"""
NEIGHBOURS_SQL = f"SELECT {NEIGHBOURS}"
# After staging a batch by COPY: temporary tables have no statistics until analysed, and the plans
# of the statements that follow depend on them; with it, whether stored plays lie near.
ANALYZE_AND_NEIGHBOURS_SQL = f"""
ANALYZE tmp_artists, tmp_albums, tmp_album_artists, tmp_tracks, tmp_track_artists, tmp_plays;
{NEIGHBOURS_SQL}
"""
# A small batch's checks after its catalog statements: whether they moved statistics (only full
# API objects can change an existing track's album or credits; mostly they do not), and
# NEIGHBOURS. Not prepared: a generic plan of listening_events would take every monthly partition,
# where the plan of these timestamps takes one or two.
CHECKS_SQL = f"""
SELECT EXISTS (SELECT 1 FROM tmp_album_moves) OR EXISTS (SELECT 1 FROM tmp_credit_moves), {NEIGHBOURS}"""

# A track's identity for matching: itself and every track of the same artist and name (an
# account-data record named a track that was provisional then and is known by id now, or the
# other way round).
IDENTITY_SQL = """
UPDATE tmp_tracks t SET alt_ids = ARRAY(
    SELECT t.id UNION
    SELECT x.id FROM tracks x WHERE x.artist_key = t.artist_key AND x.name_key = t.name_key)
"""
# The same for plays whose track was resolved before (by an earlier batch of a bulk ingestion).
PLAY_IDENTITY_SQL = """
UPDATE tmp_plays p SET alt_ids = i.ids
  FROM (SELECT t.id, ARRAY(SELECT t.id UNION
                           SELECT x.id FROM tracks x WHERE x.artist_key = t.artist_key
                              AND x.name_key = t.name_key) AS ids
          FROM tracks t WHERE t.id IN (SELECT track_id FROM tmp_plays)) i
 WHERE p.track_id = i.id
"""
# The plays take their tracks' ids and identities; an API play lasted its track's duration.
RESOLVE_PLAYS_SQL = """
UPDATE tmp_plays p SET track_id = t.id, alt_ids = t.alt_ids,
       ms_played = CASE WHEN p.origin = 'api' THEN COALESCE(x.duration_ms, 0) ELSE p.ms_played END
  FROM tmp_tracks t JOIN tracks x ON x.id = t.id
 WHERE t.tk = p.tk"""
# The same key twice in one batch: the first counts, the others are duplicates.
BATCH_REPEATS_SQL = """
UPDATE tmp_plays p SET action = 'duplicate' FROM (
    SELECT seq, row_number() OVER (PARTITION BY track_id, played_at ORDER BY seq) AS n FROM tmp_plays
) d WHERE d.seq = p.seq AND d.n > 1"""
# A record stored before, under another identity of its track: a duplicate.
STORED_REPEATS_SQL = """
UPDATE tmp_plays p SET action = 'duplicate'
 WHERE p.action IS NULL AND cardinality(p.alt_ids) > 1 AND EXISTS (
       SELECT 1 FROM listening_events e WHERE e.user_id = %(user)s AND e.track_id = ANY (p.alt_ids)
          AND e.played_at BETWEEN %(reach_first)s AND %(reach_last)s
          AND e.played_at = p.played_at AND e.origin = p.origin)"""
# Another origin's record of the same play: same track, within 30 s (an account-data record, of
# minute precision, stands for its whole minute: see play_distance). A stored play takes one record
# of each other origin: its <origin>_twin_at slot is free (the record claims it), or holds this very
# record's time (a repeat: duplicate); a slot taken by another record is passed over. Closest first.
MATCH_ORIGINS_SQL = """
WITH cand AS (
    SELECT p.seq, p.origin, p.played_at, e.track_id, e.played_at AS target, e.origin AS e_origin,
           e.is_estimated,
           CASE p.origin WHEN 'api' THEN e.api_twin_at WHEN 'extended' THEN e.extended_twin_at
                ELSE e.account_twin_at END AS slot,
           LEAST(play_distance(e.played_at, e.origin, p.played_at, p.origin),
                 play_distance(e.extended_twin_at, 'extended', p.played_at, p.origin)) AS dist
      FROM tmp_plays p
     CROSS JOIN LATERAL (
           SELECT * FROM listening_events e
            WHERE e.user_id = %(user)s AND e.track_id = ANY (p.alt_ids)
              AND e.played_at BETWEEN %(reach_first)s AND %(reach_last)s
              AND e.played_at BETWEEN p.played_at - interval '90 seconds'
                                  AND p.played_at + interval '90 seconds'
              AND e.origin <> p.origin
           OFFSET 0) e  -- a fence: one index probe per record, whatever the statistics say
     WHERE p.action IS NULL
), eligible AS (
    SELECT * FROM cand
     WHERE (slot IS NULL OR slot = played_at)
       AND dist <= 30
), best AS (
    SELECT DISTINCT ON (seq) * FROM eligible ORDER BY seq, (slot IS NOT NULL) DESC, dist, target
), claimed AS (
    SELECT DISTINCT ON (track_id, target) * FROM best
     ORDER BY track_id, target, (slot IS NOT NULL) DESC, dist, seq
)
UPDATE tmp_plays p SET target = c.target, target_track = c.track_id,
       action = CASE WHEN c.slot IS NOT NULL THEN 'duplicate'
                     WHEN c.e_origin = 'api' AND c.is_estimated AND p.origin <> 'api' THEN 'merge'
                     ELSE 'claim' END
  FROM claimed c WHERE c.seq = p.seq"""
# Matching, in one round trip (parameters: user, reach_first, reach_last).
MATCH_SCRIPT = ";\n".join(
    (IDENTITY_SQL, RESOLVE_PLAYS_SQL, BATCH_REPEATS_SQL, STORED_REPEATS_SQL, MATCH_ORIGINS_SQL)
)

# Merges and claims: the stored play takes the record's time in its slot and, for a merge, the real
# ms_played; the statistics move by the difference between the real and the estimated figure. An
# import keeps the rows it changes as they were (import_merges), for a failure to put back.
MERGE_SQL = """
WITH old AS (
    SELECT e.track_id, e.played_at, e.ms_played, e.is_estimated, e.api_twin_at,
           e.extended_twin_at, e.account_twin_at FROM listening_events e
      JOIN tmp_plays p ON p.action IN ('merge', 'claim') AND e.user_id = %(user)s
       AND e.played_at BETWEEN %(reach_first)s AND %(reach_last)s
       AND e.track_id = p.target_track AND e.played_at = p.target
), changed AS (
    UPDATE listening_events e SET
           api_twin_at = CASE WHEN p.origin = 'api' THEN p.played_at ELSE e.api_twin_at END,
           extended_twin_at = CASE WHEN p.origin = 'extended' THEN p.played_at
                                   ELSE e.extended_twin_at END,
           account_twin_at = CASE WHEN p.origin = 'account' THEN p.played_at
                                  ELSE e.account_twin_at END,
           ms_played = CASE WHEN p.action = 'merge' THEN p.ms_played ELSE e.ms_played END,
           is_estimated = CASE WHEN p.action = 'merge' THEN false ELSE e.is_estimated END
      FROM tmp_plays p
     WHERE p.action IN ('merge', 'claim') AND e.user_id = %(user)s
       AND e.played_at BETWEEN %(reach_first)s AND %(reach_last)s
       AND e.track_id = p.target_track AND e.played_at = p.target
    RETURNING e.track_id, e.played_at, e.ms_played
), kept AS (
    INSERT INTO import_merges (import_id, user_id, track_id, played_at, ms_played, is_estimated,
                               api_twin_at, extended_twin_at, account_twin_at)
    SELECT %(import_id)s, %(user)s, o.track_id, o.played_at, o.ms_played, o.is_estimated,
           o.api_twin_at, o.extended_twin_at, o.account_twin_at
      FROM old o WHERE %(import_id)s::uuid IS NOT NULL
    ON CONFLICT DO NOTHING
)
INSERT INTO tmp_delta (track_id, played_at, plays, ms)
SELECT c.track_id, c.played_at, 0, c.ms_played - old.ms_played
  FROM changed c JOIN old USING (track_id, played_at)
 WHERE c.ms_played <> old.ms_played
"""


def _insert_events_sql(plays: str) -> str:
    """The statement that inserts ``plays`` (a SELECT of listening_events' columns) and their
    statistics deltas, and tells (added, merged, plays of the batch); a conflict on the unique key
    means the play is already stored: a duplicate."""
    return f"""
WITH added AS (
    INSERT INTO listening_events (user_id, track_id, played_at, ms_played, is_estimated, origin, import_id)
    {plays}
    ON CONFLICT (user_id, played_at, track_id) DO NOTHING
    RETURNING track_id, played_at, ms_played
), delta AS (
    INSERT INTO tmp_delta (track_id, played_at, plays, ms)
    SELECT track_id, played_at, 1, ms_played FROM added
    RETURNING 1
)
SELECT (SELECT count(*) FROM delta),
       (SELECT count(*) FROM tmp_plays WHERE action = 'merge'),
       (SELECT count(*) FROM tmp_plays)"""


# The plays that matching left unmarked (not a duplicate, merged or claimed).
INSERT_MATCHED_SQL = _insert_events_sql("""
SELECT %(user)s, track_id, played_at, ms_played, origin = 'api', origin, %(import_id)s
  FROM tmp_plays WHERE action IS NULL
 ORDER BY track_id, played_at""")


def insert_unmatched_sql(user: str, import_id: str) -> str:
    """When nothing stored lies near (NEIGHBOURS): every play with its track, the first of a batch's
    repeats first (those after it are then duplicates). ``user`` and ``import_id`` are how the
    statement names its parameters: psycopg's placeholders, or a prepared statement's $1 and $2."""
    return _insert_events_sql(f"""
SELECT {user}, t.id, p.played_at,
       CASE WHEN p.origin = 'api' THEN COALESCE(x.duration_ms, 0) ELSE p.ms_played END,
       p.origin = 'api', p.origin, {import_id}
  FROM tmp_plays p JOIN tmp_tracks t ON t.tk = p.tk JOIN tracks x ON x.id = t.id
 ORDER BY t.id, p.played_at, p.seq""")


INSERT_UNMATCHED_SQL = insert_unmatched_sql("%(user)s", "%(import_id)s")


def write_events(ex: Exec, import_id: uuid.UUID | None, span: dict[str, Any]) -> IngestResult:
    """Dedupe, merge and insert the plays of tmp_plays, which lie within ``span`` (see :func:`span`)
    and have stored plays near them (NEIGHBOURS)."""
    params = {"user": span["user"], "reach_first": span["reach_first"], "reach_last": span["reach_last"]}
    ex.script(MATCH_SCRIPT, params)
    ex(MERGE_SQL, {**params, "import_id": import_id})
    return counts_of(ex(INSERT_MATCHED_SQL, {**params, "import_id": import_id}).fetchone())


def counts_of(row: Row | None) -> IngestResult:
    """What the insert of events tells: (added, merged, plays of the batch)."""
    assert row is not None
    added, merged, total = int(row[0]), int(row[1]), int(row[2])
    return IngestResult(added=added, merged=merged, duplicates=total - added - merged)
