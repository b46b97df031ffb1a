-- What an import changed in plays stored before it (a merge made an API play exact; a claim took
-- one of a play's twin slots), as it was before: a failed import puts these rows back, so it
-- leaves the events and statistics exactly as they were (myi.imports.worker._fail). The first
-- change by a job is the one kept; a job's rows go when it completes, and with the job.
CREATE TABLE import_merges (
    import_id           uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    user_id             bigint NOT NULL,
    track_id            bigint NOT NULL,
    played_at           timestamptz NOT NULL,
    ms_played           integer NOT NULL,
    is_estimated        boolean NOT NULL,
    api_twin_at         timestamptz,
    extended_twin_at    timestamptz,
    account_twin_at     timestamptz,
    PRIMARY KEY (import_id, user_id, played_at, track_id)
);
