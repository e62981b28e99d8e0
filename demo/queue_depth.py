"""The worker pool's queue depth, read by stackctl's autoscaler
(`[service.worker.autoscale]` in stack.toml): the jobs waiting plus the jobs
in progress. Counting only the waiting ones would undercount the work (a
claimed job leaves the queue) and shrink the pool under busy workers.
Prints one whole number.
"""

from common import connect

(depth,) = connect().execute(
    "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
).fetchone()
print(depth)
