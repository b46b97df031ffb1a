-- How many tracks, artists and albums a user has statistics rows for, all time (grain 0) and since
-- the recent floor (grain 3), so that an overview counts nothing: the large user of the benchmark
-- has 30,000 tracks. The ingestion core keeps every such row above zero plays (a row that an album
-- or credit change, a merge or a moving floor empties is deleted) and counts here the rows it adds
-- and deletes, in the same transaction.
CREATE TABLE stat_counts (
    user_id         bigint NOT NULL,
    grain           smallint NOT NULL,
    tracks          bigint NOT NULL DEFAULT 0,
    artists         bigint NOT NULL DEFAULT 0,
    albums          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, grain)
);

DELETE FROM stat_track WHERE grain IN (0, 3) AND plays = 0 AND ms_played = 0;
DELETE FROM stat_artist WHERE grain IN (0, 3) AND plays = 0 AND ms_played = 0;
DELETE FROM stat_album WHERE grain IN (0, 3) AND plays = 0 AND ms_played = 0;

INSERT INTO stat_counts (user_id, grain, tracks, artists, albums)
SELECT user_id, grain, sum(tracks), sum(artists), sum(albums) FROM (
    SELECT user_id, grain, count(*) AS tracks, 0 AS artists, 0 AS albums FROM stat_track
     WHERE grain IN (0, 3) GROUP BY 1, 2
    UNION ALL
    SELECT user_id, grain, 0, count(*), 0 FROM stat_artist WHERE grain IN (0, 3) GROUP BY 1, 2
    UNION ALL
    SELECT user_id, grain, 0, 0, count(*) FROM stat_album WHERE grain IN (0, 3) GROUP BY 1, 2
) c
GROUP BY 1, 2;
