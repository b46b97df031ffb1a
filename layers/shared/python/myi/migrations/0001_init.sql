-- MYI schema, version 1.
--
-- Conventions: internal ids are bigint identities (exposed as strings by the API); Spotify ids are
-- kept beside them. Every per-user table references users(id) ON DELETE CASCADE, so deleting a user
-- removes all of their rows. Catalog rows (tracks, artists, albums) are shared and stay.

-- ---------------------------------------------------------------------------------------------
-- Users, grants, sessions
-- ---------------------------------------------------------------------------------------------
CREATE TABLE users (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    spotify_id          text NOT NULL UNIQUE,
    display_name        text,
    image_url           text,
    timezone            text NOT NULL DEFAULT 'UTC',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    last_login_at       timestamptz,
    -- last successful sync with Spotify (API.md's last_synced_at)
    last_ingested_at    timestamptz,
    -- adaptive sync cadence: the fan-out skips the user until then
    next_sync_at        timestamptz,
    sync_interval_s     integer,
    sync_full_pages     integer NOT NULL DEFAULT 0,
    sync_gaps           integer NOT NULL DEFAULT 0,
    -- statistics are being rebuilt (time zone change); readers may show a hint
    stats_rebuilt_at    timestamptz
);
CREATE INDEX users_sync_due ON users (next_sync_at NULLS FIRST, id);
CREATE INDEX users_last_login ON users (last_login_at);

-- The Spotify grant. Tokens are AES-256-GCM ciphertexts (nonce || ciphertext+tag) with the key
-- version that encrypted them; the user id is the associated data.
CREATE TABLE spotify_auth (
    user_id                 bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    refresh_token_enc       bytea NOT NULL,
    refresh_key_version     integer NOT NULL,
    access_token_enc        bytea,
    access_key_version      integer,
    access_expires_at       timestamptz,
    scope                   text NOT NULL DEFAULT '',
    -- when the user authorised: refresh tokens expire six months later, refreshing does not extend
    authorized_at           timestamptz NOT NULL DEFAULT now(),
    is_valid                boolean NOT NULL DEFAULT true,
    consecutive_failures    integer NOT NULL DEFAULT 0,
    last_error              text,
    last_refreshed_at       timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spotify_auth_valid ON spotify_auth (user_id) WHERE is_valid;

-- Sessions: only the SHA-256 of the opaque cookie value is stored.
CREATE TABLE sessions (
    id_hash         bytea PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    user_agent      text
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- ---------------------------------------------------------------------------------------------
-- Catalog (shared by all users)
--
-- A row with spotify_id NULL is provisional: known only by name (export records carry names of the
-- album artist and album, account-data records no ids at all). name_key / artist_key are normalised
-- names (see myi.catalog.name_key). Enrichment resolves provisional artists and albums to real ones
-- and merges them.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE artists (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    spotify_id      text UNIQUE,
    name            text NOT NULL,
    name_key        text NOT NULL,
    image_url       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX artists_provisional_key ON artists (name_key) WHERE spotify_id IS NULL;

CREATE TABLE albums (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    spotify_id      text UNIQUE,
    name            text NOT NULL,
    name_key        text NOT NULL,
    -- normalised name of the album's (first) artist; keys provisional albums
    artist_key      text NOT NULL DEFAULT '',
    image_url       text,
    release_date    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX albums_provisional_key ON albums (artist_key, name_key) WHERE spotify_id IS NULL;

CREATE TABLE album_artists (
    album_id        bigint NOT NULL REFERENCES albums (id) ON DELETE CASCADE,
    artist_id       bigint NOT NULL REFERENCES artists (id) ON DELETE CASCADE,
    position        smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (album_id, artist_id)
);

CREATE TABLE tracks (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    spotify_id      text UNIQUE,
    name            text NOT NULL,
    name_key        text NOT NULL,
    -- normalised name of the track's first artist: account-data records are matched on
    -- (artist_key, name_key); provisional name-only tracks are keyed by it
    artist_key      text NOT NULL DEFAULT '',
    album_id        bigint REFERENCES albums (id),
    duration_ms     integer,
    explicit        boolean,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tracks_provisional_key ON tracks (artist_key, name_key) WHERE spotify_id IS NULL;
CREATE INDEX tracks_name_match ON tracks (artist_key, name_key);
CREATE INDEX tracks_album ON tracks (album_id);

CREATE TABLE track_artists (
    track_id        bigint NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    artist_id       bigint NOT NULL REFERENCES artists (id),
    position        smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (track_id, artist_id)
);
CREATE INDEX track_artists_artist ON track_artists (artist_id);

-- Work for the enrichment worker: catalog rows that lack metadata or are provisional.
-- kind: 'track' (duration/album missing), 'artist' (provisional or without image), 'album'.
CREATE TABLE catalog_gaps (
    kind            text NOT NULL CHECK (kind IN ('track', 'artist', 'album')),
    entity_id       bigint NOT NULL,
    reason          text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, entity_id)
);
CREATE INDEX catalog_gaps_due ON catalog_gaps (next_attempt_at);

-- ---------------------------------------------------------------------------------------------
-- Listening events, partitioned by month of played_at (end of playback, UTC)
--
-- origin: 'api' (recently-played; ms_played estimated from the duration), 'extended' (extended
-- streaming history export), 'account' (account-data export, minute precision). API.md's source is
-- 'api' for origin api, else 'import'. One play can be seen by one record of each origin; the
-- <origin>_twin_at columns hold the played_at of the record of another origin that matched this
-- play (merge rule), so a repeated record is recognised as a duplicate and never claims twice.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE listening_events (
    user_id             bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    track_id            bigint NOT NULL,
    played_at           timestamptz NOT NULL,
    ms_played           integer NOT NULL CHECK (ms_played >= 0),
    is_estimated        boolean NOT NULL DEFAULT false,
    origin              text NOT NULL CHECK (origin IN ('api', 'extended', 'account')),
    api_twin_at         timestamptz,
    extended_twin_at    timestamptz,
    account_twin_at     timestamptz,
    import_id           uuid,
    PRIMARY KEY (user_id, track_id, played_at)
) PARTITION BY RANGE (played_at);
CREATE INDEX listening_events_user_time ON listening_events (user_id, played_at DESC);
CREATE TABLE listening_events_default PARTITION OF listening_events DEFAULT;

-- ---------------------------------------------------------------------------------------------
-- Statistics, maintained by the ingestion core in the same transaction as the events.
--
-- grain 0 = all time (bucket '1970-01-01'), 1 = calendar month (bucket = its first day),
-- 2 = calendar day (stat_user only); months and days in the user's time zone. A window is answered
-- from whole months (grain 1) and, for the partial months at its edges, the events themselves
-- (index listening_events_user_time); per-day figures come from stat_user grain 2.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE stat_user (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    grain           smallint NOT NULL,
    bucket          date NOT NULL,
    plays           bigint NOT NULL DEFAULT 0,
    ms_played       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, grain, bucket)
);

CREATE TABLE stat_track (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    grain           smallint NOT NULL,
    bucket          date NOT NULL,
    track_id        bigint NOT NULL,
    plays           bigint NOT NULL DEFAULT 0,
    ms_played       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, grain, bucket, track_id)
);
-- Album and credit changes move every user's statistics of a track.
CREATE INDEX stat_track_by_track ON stat_track (track_id);
CREATE INDEX stat_track_top_plays ON stat_track (user_id, plays DESC, ms_played DESC, track_id)
    WHERE grain = 0;
CREATE INDEX stat_track_top_ms ON stat_track (user_id, ms_played DESC, plays DESC, track_id)
    WHERE grain = 0;

CREATE TABLE stat_artist (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    grain           smallint NOT NULL,
    bucket          date NOT NULL,
    artist_id       bigint NOT NULL,
    plays           bigint NOT NULL DEFAULT 0,
    ms_played       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, grain, bucket, artist_id)
);
CREATE INDEX stat_artist_top_plays ON stat_artist (user_id, plays DESC, ms_played DESC, artist_id)
    WHERE grain = 0;
CREATE INDEX stat_artist_top_ms ON stat_artist (user_id, ms_played DESC, plays DESC, artist_id)
    WHERE grain = 0;

CREATE TABLE stat_album (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    grain           smallint NOT NULL,
    bucket          date NOT NULL,
    album_id        bigint NOT NULL,
    plays           bigint NOT NULL DEFAULT 0,
    ms_played       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, grain, bucket, album_id)
);
CREATE INDEX stat_album_top_plays ON stat_album (user_id, plays DESC, ms_played DESC, album_id)
    WHERE grain = 0;
CREATE INDEX stat_album_top_ms ON stat_album (user_id, ms_played DESC, plays DESC, album_id)
    WHERE grain = 0;

-- Hour of day and weekday (ISO: 1 = Monday .. 7 = Sunday) in the user's zone.
CREATE TABLE stat_hour (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    grain           smallint NOT NULL,
    bucket          date NOT NULL,
    weekday         smallint NOT NULL,
    hour            smallint NOT NULL,
    plays           bigint NOT NULL DEFAULT 0,
    ms_played       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, grain, bucket, weekday, hour)
);

-- ---------------------------------------------------------------------------------------------
-- Spotify's own top lists, replaced atomically per user, kind and term
-- ---------------------------------------------------------------------------------------------
CREATE TABLE spotify_top_refresh (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('tracks', 'artists')),
    term            text NOT NULL CHECK (term IN ('short_term', 'medium_term', 'long_term')),
    refreshed_at    timestamptz NOT NULL,
    PRIMARY KEY (user_id, kind, term)
);

CREATE TABLE spotify_top_tracks (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    term            text NOT NULL,
    rank            smallint NOT NULL,
    track_id        bigint NOT NULL REFERENCES tracks (id),
    PRIMARY KEY (user_id, term, rank)
);

CREATE TABLE spotify_top_artists (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    term            text NOT NULL,
    rank            smallint NOT NULL,
    artist_id       bigint NOT NULL REFERENCES artists (id),
    PRIMARY KEY (user_id, term, rank)
);

-- ---------------------------------------------------------------------------------------------
-- Imports
-- ---------------------------------------------------------------------------------------------
CREATE TABLE import_jobs (
    id              uuid PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'awaiting_upload'
                    CHECK (status IN ('awaiting_upload', 'queued', 'running', 'completed', 'failed')),
    filename        text NOT NULL,
    object_key      text NOT NULL UNIQUE,
    size_bytes      bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- progress and counts as API.md shows them
    records_read    bigint NOT NULL DEFAULT 0,
    bytes_read      bigint NOT NULL DEFAULT 0,
    bytes_total     bigint NOT NULL DEFAULT 0,
    added           bigint NOT NULL DEFAULT 0,
    merged          bigint NOT NULL DEFAULT 0,
    duplicates      bigint NOT NULL DEFAULT 0,
    skipped         jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- where to resume: opaque to the database, written with every committed batch
    checkpoint      jsonb,
    error           text
);
CREATE INDEX import_jobs_user ON import_jobs (user_id, created_at DESC, id);
CREATE INDEX import_jobs_running ON import_jobs (updated_at) WHERE status = 'running';
