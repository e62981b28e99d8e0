"""The demo's queue worker (a pool: `replicas` in stack.toml).

Claims the oldest queued job atomically (a write transaction, so two
workers never take the same row), "works" on it for a moment, and marks it
done with its own name ($STACKCTL_PROCESS, e.g. worker.2). On SIGTERM it
finishes the job in hand, then exits 0.
"""

import signal
import threading
import time

from common import NAME, connect, db_path, log

stopping = threading.Event()


def on_signal(signum, _frame):
    log(f"got {signal.Signals(signum).name}: finishing the current job, then exiting")
    stopping.set()


def claim(conn):
    conn.execute("BEGIN IMMEDIATE")  # take the write lock before looking
    try:
        row = conn.execute(
            "SELECT id, payload FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1"
        ).fetchone()
        if row:
            conn.execute(
                "UPDATE jobs SET status = 'running', claimed_by = ? WHERE id = ?", (NAME, row["id"])
            )
        conn.execute("COMMIT")
        return row
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def work(payload):
    """The job: a second and a half of pretend work, then a small result."""
    time.sleep(1.5)  # a SIGTERM here runs the handler, then the sleep resumes
    return f"{len(payload.split())} words, reversed: {payload[::-1]}"


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    conn = connect()
    log(f"worker {NAME} ready, polling {db_path()}")
    while not stopping.is_set():
        job = claim(conn)
        if job is None:
            stopping.wait(0.5)  # idle: a signal wakes this at once
            continue
        log(f"claimed job {job['id']}")
        started = time.monotonic()
        result = work(job["payload"])
        conn.execute(
            "UPDATE jobs SET status = 'done', result = ?, finished_at = datetime('now') WHERE id = ?",
            (result, job["id"]),
        )
        log(f"finished job {job['id']} in {time.monotonic() - started:.1f}s")
    log("exiting")


if __name__ == "__main__":
    main()
