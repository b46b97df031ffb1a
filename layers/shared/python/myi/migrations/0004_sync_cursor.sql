-- Where the next sync reads on from: the end of the newest play recently-played returned (its
-- "after" cursor), kept on the user so no sync has to search the events for it.
ALTER TABLE users ADD COLUMN sync_cursor timestamptz;
