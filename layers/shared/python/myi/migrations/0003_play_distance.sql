-- How far apart two records of one play are, in seconds, for the cross-source merge. Records of the
-- API and the extended history carry the end of playback to the (milli)second: their distance is
-- plain. An account-data record carries the minute the play ended in (HH:MM, truncated), so it
-- stands for the interval [minute, minute + 60 s): the distance is how far the other record falls
-- outside that interval (0 inside it). NULL when either time is.
CREATE FUNCTION play_distance(a timestamptz, a_origin text, b timestamptz, b_origin text)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN a IS NULL OR b IS NULL THEN NULL
    WHEN a_origin = 'account' AND b_origin <> 'account' THEN
        greatest(0, -extract(epoch FROM b - a), extract(epoch FROM b - a) - 60)::double precision
    WHEN b_origin = 'account' AND a_origin <> 'account' THEN
        greatest(0, -extract(epoch FROM a - b), extract(epoch FROM a - b) - 60)::double precision
    ELSE abs(extract(epoch FROM a - b))::double precision
END;
