-- The platform's `jobs` table, as the reflection worker reads it. The platform owns and
-- migrates this table; this DDL is shipped for tests, the demo and docker compose only.
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    piece_name  TEXT NOT NULL,
    status      TEXT NOT NULL,
    task        TEXT NOT NULL,
    result      TEXT,
    error       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS ix_jobs_user_id ON jobs (user_id);
