-- Live progress of a running import. The worker writes it from a connection of its own while it
-- reads a batch, whose transaction may hold hundreds of thousands of records, so the SPA's progress
-- bar moves before the batch commits. records_read and bytes_read stay what the committed batches
-- counted (an import resumes from them); the API shows the larger of the two.
ALTER TABLE import_jobs ADD COLUMN live_records bigint NOT NULL DEFAULT 0,
                        ADD COLUMN live_bytes bigint NOT NULL DEFAULT 0;
