#!/bin/sh
# End to end: start the demo stack, queue a job through the tunnel, wait for
# a worker to finish it, queue 30 more and wait for the worker pool to grow
# to 6 and shrink back to 2, show status, stop. Exits non-zero on any failure.
#   demo/smoke.sh                      # uses target/debug/stackctl
#   STACKCTL="cargo run -q --" demo/smoke.sh
set -eu
cd "$(dirname "$0")/.."
S=${STACKCTL:-target/debug/stackctl}
URL=http://127.0.0.1:${TUNNEL_PORT:-18002}

field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1'))"; }

trap '$S stop || true' EXIT
$S start
$S status
id=$(curl -fsS -X POST --data 'smoke test job' "$URL/api/jobs" | field id)
echo "queued job $id through $URL"
i=0
while :; do
    job=$(curl -fsS "$URL/api/jobs/$id")
    if [ "$(echo "$job" | field status)" = done ]; then
        echo "job $id done by $(echo "$job" | field claimed_by): $(echo "$job" | field result)"
        break
    fi
    i=$((i + 1))
    if [ $i -ge 40 ]; then
        echo "job $id not done after 20s: $job" >&2
        exit 1
    fi
    sleep 0.5
done
$S status

# The pool sizes itself from the queue: 30 jobs want 6 workers, and 15 s
# after the queue is empty it is back to 2.
workers() { $S status --json worker | python3 -c "import json,sys; print(len(json.load(sys.stdin)['processes']))"; }
wait_workers() {
    i=0
    until [ "$(workers)" = "$1" ]; do
        i=$((i + 1))
        if [ $i -ge "$2" ]; then
            echo "the worker pool did not reach $1 members: $(workers)" >&2
            $S status worker >&2
            exit 1
        fi
        sleep 0.5
    done
}
for i in $(seq 30); do curl -fsS -o /dev/null -X POST --data "job $i" "$URL/api/jobs"; done
echo "queued 30 jobs"
wait_workers 6 20
$S status worker
wait_workers 2 90
echo "the worker pool grew to 6 and shrank back to 2"
$S status
trap - EXIT
$S stop
