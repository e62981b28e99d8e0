"""The demo's `migrate` task: creates (or upgrades) the sqlite schema.

Idempotent, like `alembic upgrade head`: safe to run before every start.
"""

import os

from common import connect, db_path, log

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    payload     TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'queued',   -- queued | running | done
    claimed_by  TEXT,                             -- STACKCTL_PROCESS of the worker
    result      TEXT,
    created_at  TEXT NOT NULL DEFAULT (datetime('now')),
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
"""


def main():
    os.makedirs(os.path.dirname(db_path()) or ".", exist_ok=True)
    conn = connect()
    conn.executescript(SCHEMA)
    # A worker killed mid-job (SIGKILL after its stop_timeout) leaves its row
    # running; hand it back to the queue.
    requeued = conn.execute(
        "UPDATE jobs SET status = 'queued', claimed_by = NULL WHERE status = 'running'"
    ).rowcount
    counts = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    log(f"schema ready in {db_path()} (jobs: {counts or 'none'}; requeued {requeued})")


if __name__ == "__main__":
    main()
