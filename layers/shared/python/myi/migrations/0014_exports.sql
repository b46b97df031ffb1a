-- Exports: a listener's whole history as a zip in the file bucket (myi.exports), written by the
-- export worker as an S3 multipart upload. Scoped by user like import_jobs (ON DELETE CASCADE);
-- the functions' role (myi_app, migration 0005) is a member of the owner and needs no grant.
--
-- Status: queued (created, or handed to a continuation) -> running -> completed | failed. At most
-- one export of a user is queued or running at a time (the unique index below; a second one is 409).
CREATE TABLE exports (
    id              uuid PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    format          text NOT NULL CHECK (format IN ('extended_json', 'csv')),
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    object_key      text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    -- heartbeat: moved by the worker while it writes (a stuck export is failed by the sweep)
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- when the file goes (EXPORT_TTL_DAYS after it was written); no download after it
    expires_at      timestamptz,
    plays           bigint NOT NULL DEFAULT 0,
    size_bytes      bigint NOT NULL DEFAULT 0,
    -- the multipart upload under way (aborted when the export fails or starts again)
    upload_id       text,
    -- where a continuation resumes (parts uploaded, zip entries, position in the plays) and the
    -- bytes written after the last uploaded part (less than a part, at most a few MiB)
    checkpoint      jsonb,
    pending         bytea,
    error           text
);
CREATE INDEX exports_user ON exports (user_id, created_at DESC, id);
CREATE UNIQUE INDEX exports_one_running ON exports (user_id) WHERE status IN ('queued', 'running');
CREATE INDEX exports_live ON exports (updated_at) WHERE status IN ('queued', 'running');
