-- Recent rows: per track, artist and album, what a user played since their recent floor
-- (grain 3, bucket '1970-01-01'), so the lists and counts of "the last four weeks" read one row per
-- item instead of every play of those weeks. The floor (users.recent_floor) lies at most a day and
-- a bit before four weeks ago: a window starting at or after it is its recent rows less the plays
-- between the floor and the window's start (and after its end). The ingestion core adds to these
-- rows with the others; partition maintenance moves the floor on every day (myi.stats.advance_recent).
ALTER TABLE users ADD COLUMN recent_floor timestamptz NOT NULL DEFAULT (now() - interval '28 days');

-- Album and credit changes move recent rows as they move all-time rows.
DROP INDEX stat_track_by_track;
CREATE INDEX stat_track_by_track ON stat_track (track_id) WHERE grain IN (0, 3);

INSERT INTO stat_track (user_id, grain, bucket, track_id, plays, ms_played)
SELECT e.user_id, 3, DATE '1970-01-01', e.track_id, count(*), sum(e.ms_played)
  FROM listening_events e JOIN users u ON u.id = e.user_id AND e.played_at >= u.recent_floor
 GROUP BY 1, 4;
INSERT INTO stat_artist (user_id, grain, bucket, artist_id, plays, ms_played)
SELECT st.user_id, 3, DATE '1970-01-01', ta.artist_id, sum(st.plays), sum(st.ms_played)
  FROM stat_track st JOIN track_artists ta ON ta.track_id = st.track_id
 WHERE st.grain = 3
 GROUP BY 1, 4;
INSERT INTO stat_album (user_id, grain, bucket, album_id, plays, ms_played)
SELECT st.user_id, 3, DATE '1970-01-01', t.album_id, sum(st.plays), sum(st.ms_played)
  FROM stat_track st JOIN tracks t ON t.id = st.track_id AND t.album_id IS NOT NULL
 WHERE st.grain = 3
 GROUP BY 1, 4;
