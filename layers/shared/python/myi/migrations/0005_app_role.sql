-- In Aurora the functions sign in as myi_app with IAM tokens (rds_iam), never with a password.
-- The role is a member of the schema owner (the user that runs migrations), because partition
-- maintenance creates partitions of tables it owns. Elsewhere (plain PostgreSQL, no rds_iam role)
-- this migration changes nothing.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'myi_app') THEN
            CREATE ROLE myi_app LOGIN;
        END IF;
        GRANT rds_iam TO myi_app;
        EXECUTE format('GRANT %I TO myi_app', current_user);
    END IF;
END
$$;
