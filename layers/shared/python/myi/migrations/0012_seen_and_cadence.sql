-- Activity is being seen, not signing in: sign-in and any authenticated request set last_seen_at
-- (at most about once an hour per user). Sync eligibility, activity tiers and dormancy read it.
ALTER TABLE users ADD COLUMN last_seen_at timestamptz;
UPDATE users SET last_seen_at = last_login_at;
CREATE INDEX users_last_seen ON users (last_seen_at);

-- The cadence (myi.cadence): consecutive failed syncs (a back-off), and the user's listening
-- profile (the busiest hour of each UTC hour of day over the last four weeks, plays) with when it
-- was computed.
ALTER TABLE users ADD COLUMN sync_failures integer NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN sync_profile real[];
ALTER TABLE users ADD COLUMN sync_profile_at timestamptz;
