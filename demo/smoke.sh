#!/bin/sh
# End to end: start the demo stack, queue a job through the tunnel, wait for
# a worker to finish it, show status, stop. Exits non-zero on any failure.
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
trap - EXIT
$S stop
