-- Hour-of-day figures per local day (stat_hour grain 2), as stat_user has them: a window of weeks
-- is answered from its whole days and the events of its partial days only, so the activity of
-- "the last four weeks" costs the same whatever the user listened. Filled here from the events
-- for everyone who has plays (in each user's zone), then kept by the ingestion core.
INSERT INTO stat_hour (user_id, grain, bucket, weekday, hour, plays, ms_played)
SELECT e.user_id, 2, (e.played_at AT TIME ZONE u.timezone)::date,
       extract(isodow FROM e.played_at AT TIME ZONE u.timezone)::smallint,
       extract(hour FROM e.played_at AT TIME ZONE u.timezone)::smallint, count(*), sum(e.ms_played)
  FROM listening_events e JOIN users u ON u.id = e.user_id
 GROUP BY 1, 3, 4, 5;
