#!/usr/bin/env bash
# Issue 10's figures: what a stack keeps when its supervisor dies.
#
#   bench/survival.sh            # builds --release, runs everything (~1 min)
#   BIN=path bench/survival.sh   # an already built binary
#   N=100 KILLS=20 WRITERS=10 LINES=200000 bench/survival.sh
#
# 1. footprint with N services: RSS and PSS of every stackctl process (the
#    anchor and the supervisor) together;
# 2. adoption: kill -9 of the supervisor with N running, to a new
#    supervisor serving with all N taken up (from stackctl.log's stamps, and
#    as a `status` sees it);
# 3. lines lost: WRITERS processes each write LINES numbered lines at full
#    speed while the supervisor is killed KILLS times; every log is then
#    checked: every line once, in order, none split;
# 4. kill -> restart of a child, stackctl's own share (stackctl.log: exit
#    seen to the next spawn), with the anchor in the path; each kill is a
#    first crash (a `restart` between kills begins a fresh back-off).
# Everything runs in a temp folder removed at the end; every stack is
# stopped even on failure.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${BIN:-}" ]]; then
    (cd "$here" && cargo build --release --quiet)
    BIN="$here/target/release/stackctl"
fi
N="${N:-100}"
KILLS="${KILLS:-20}"
WRITERS="${WRITERS:-10}"
LINES="${LINES:-200000}"
work="$(mktemp -d /tmp/stackctl-survival.XXXXXX)"
cleanup() {
    for d in "$work"/*/; do
        [[ -f "$d/stack.toml" ]] && (cd "$d" && "$BIN" stop --force >/dev/null 2>&1 || true)
    done
    rm -rf "$work"
}
trap cleanup EXIT

now() { echo "${EPOCHREALTIME/./}"; } # microseconds
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
pid_of() { sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$1"; }
kb() { awk -v f="$2" '$1 == f":" { print $2 }' "/proc/$1/smaps_rollup"; }
# stamp LINE: milliseconds of the day of a stackctl.log line
stamp() { awk '{ split($1, a, /[T:Z]/); printf "%.1f\n", a[2] * 3600000 + a[3] * 60000 + a[4] * 1000 }'; }
wait_until() { # wait_until SECONDS CMD…
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || { echo "timed out: $*" >&2; return 1; }
        sleep 0.01
    done
}

echo "stackctl survival bench: $("$BIN" --version), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# ---------------------------------------------------------------------------
# 1 and 2: N services, footprint, then adoption after kill -9

s="$work/adopt"
mkdir -p "$s"
{
    echo '[stack]'
    echo 'name = "bench-adopt"'
    for i in $(seq 1 "$N"); do
        printf '[service.s%d]\ncommand = ["sleep", "1000"]\n' "$i"
    done
} >"$s/stack.toml"
cd "$s"
"$BIN" start -q
anchor=$(pid_of logs/anchor.pid)
sup=$(pid_of logs/pids/stackctl.pid)
rss=$(($(kb "$anchor" Rss) + $(kb "$sup" Rss)))
pss=$(($(kb "$anchor" Pss) + $(kb "$sup" Pss)))
printf '%-52s %8.1f MB RSS  %6.1f MB PSS  (anchor %.1f / %.1f, supervisor %.1f / %.1f)\n' \
    "footprint with $N services (anchor + supervisor)" \
    "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$(awk -v k="$pss" 'BEGIN { print k / 1024 }')" \
    "$(awk -v k="$(kb "$anchor" Rss)" 'BEGIN { print k / 1024 }')" "$(awk -v k="$(kb "$anchor" Pss)" 'BEGIN { print k / 1024 }')" \
    "$(awk -v k="$(kb "$sup" Rss)" 'BEGIN { print k / 1024 }')" "$(awk -v k="$(kb "$sup" Pss)" 'BEGIN { print k / 1024 }')"
pids() { { "$BIN" status --json || true; } | python3 -c 'import json, sys; print("\n".join(str(p["pid"]) for p in json.load(sys.stdin)["processes"]))' | sort; }
before=$(pids)
adopt=()
seen=()
for _ in 1 2 3 4 5; do
    sup=$(pid_of logs/pids/stackctl.pid)
    t0=$(now)
    kill -9 "$sup"
    wait_until 30 bash -c "[[ \$(sed -n 's/.*\"pid\":\([0-9]*\).*/\1/p' logs/pids/stackctl.pid) != $sup ]] && \"$BIN\" status >/dev/null"
    t1=$(now)
    seen+=("$(ms "$t0" "$t1")")
    new=$(pid_of logs/pids/stackctl.pid)
    c=$(grep "anchor: supervisor $new connected" logs/stackctl.log | tail -1 | stamp)
    l=$(grep "supervisor $new listening" logs/stackctl.log | tail -1 | stamp)
    adopt+=("$(awk -v a="$c" -v b="$l" 'BEGIN { printf "%.1f", b - a }')")
done
after=$(pids)
same=$(comm -12 <(echo "$before") <(echo "$after") | wc -l)
printf '%-52s %8s ms  (connect to serving, stackctl.log; target <= 100 ms)\n' "adoption of $N running processes (median of 5)" "$(printf '%s\n' "${adopt[@]}" | median)"
printf '%-52s %8s ms  (kill -9 to a status that sees all %d up)\n' "  as an operator sees it (median of 5)" "$(printf '%s\n' "${seen[@]}" | median)" "$N"
printf '%-52s %8s\n' "  process pids unchanged after 5 kills" "$same of $N"
"$BIN" stop -q

# ---------------------------------------------------------------------------
# 3: lines lost across kill -9 of the supervisor during a burst

s="$work/burst"
mkdir -p "$s"
cd "$s"
cat >writer.py <<'EOF'
import os, sys
n = int(sys.argv[1])
name = os.environ["STACKCTL_PROCESS"]
out = sys.stdout.buffer
for i in range(1, n + 1):
    out.write(b"%s %09d %s\n" % (name.encode(), i, b"x" * 60))
out.flush()
open(name + ".done", "w").close()
os.execvp("sleep", ["sleep", "1000"])
EOF
cat >stack.toml <<EOF
[stack]
name = "bench-burst"
[service.w]
command = ["python3", "writer.py", "$LINES"]
replicas = $WRITERS
EOF
"$BIN" start -q
t0=$(now)
k=0
while ((k < KILLS)); do
    sup=$(pid_of logs/pids/stackctl.pid)
    kill -9 "$sup" 2>/dev/null || true
    k=$((k + 1))
    wait_until 30 bash -c "[[ \$(sed -n 's/.*\"pid\":\([0-9]*\).*/\1/p' logs/pids/stackctl.pid) != $sup ]] && [[ -S logs/stackctl.sock ]]"
    sleep 0.05
done
wait_until 120 bash -c "[[ \$(ls w.*.done 2>/dev/null | wc -l) -eq $WRITERS ]]"
t1=$(now)
read -r lost dup bad < <(python3 - "$WRITERS" "$LINES" <<'PY'
import sys
writers, want = int(sys.argv[1]), int(sys.argv[2])
lost = dup = bad = 0
for i in range(1, writers + 1):
    me = "w.%d" % i
    last = 0
    for line in open("logs/%s.log" % me, "rb"):
        parts = line.split()
        if len(parts) != 3 or parts[0].decode() != me or len(parts[2]) != 60:
            bad += 1
            continue
        n = int(parts[1])
        if n <= last:
            dup += 1
        else:
            lost += n - last - 1
            last = n
    lost += want - last
print(lost, dup, bad)
PY
)
printf '%-52s lost %d, duplicated %d, split %d  (of %d lines, %d kills in %.1f s; target 0)\n' \
    "lines across $KILLS kill -9 of the supervisor" "$lost" "$dup" "$bad" "$((WRITERS * LINES))" "$KILLS" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e6 }')"
"$BIN" stop -q

# ---------------------------------------------------------------------------
# 4: kill -> restart, stackctl's share, through the anchor

s="$work/restart"
mkdir -p "$s"
cd "$s"
cat >stack.toml <<'EOF'
[stack]
name = "bench-restart"
[service.victim]
command = ["sleep", "1000"]
restart = "always"
max_restarts = 1000
EOF
"$BIN" start -q
victim() { { "$BIN" status --json victim || true; } | python3 -c 'import json, sys; p = json.load(sys.stdin)["processes"][0]; print(p["pid"] if p["state"] == "running" else 0)'; }
for _ in $(seq 1 20); do
    p=$(victim)
    kill -9 "$p"
    for _ in $(seq 1 1000); do
        q=$(victim 2>/dev/null)
        [[ "$q" != 0 && "$q" != "$p" ]] && break
        sleep 0.01
    done
    # A requested restart begins a fresh life (a fresh back-off): every
    # kill is then a first crash, restarted at once.
    "$BIN" restart -q victim
done
own=$(awk '/process=victim/ && /killed by SIGKILL/ { split($1, a, /[T:Z]/); e = a[2] * 3600000 + a[3] * 60000 + a[4] * 1000; next }
           /process=victim/ && /spawned pid/ && e { split($1, a, /[T:Z]/); printf "%.1f\n", a[2] * 3600000 + a[3] * 60000 + a[4] * 1000 - e; e = 0 }' logs/stackctl.log | median)
printf '%-52s %8s ms  (median of 20; exit seen to spawned, stackctl.log)\n' "kill -9 of a child -> its restart, stackctl's share" "$own"
"$BIN" stop -q
