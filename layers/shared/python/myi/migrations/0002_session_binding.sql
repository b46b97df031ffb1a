-- Sessions are bound to their user: user_mac = SHA-256(cookie value || ':' || user id). A session row
-- moved or copied to another user no longer resolves, since nobody holding only the database can
-- compute the binding without the cookie value.
DELETE FROM sessions;
ALTER TABLE sessions ADD COLUMN user_mac bytea NOT NULL;
