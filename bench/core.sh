#!/usr/bin/env bash
# The core and issue-3 figures of stackctl, each next to the machine's floor
# measured in the same run (the same work done by a plain shell), with the
# ratio and the target.
#
#   bench/core.sh            # builds --release, runs everything (~1 min)
#   BIN=path bench/core.sh   # an already built binary
#
# Everything runs in a temp folder that is removed at the end; every stack
# is stopped even on failure.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${BIN:-}" ]]; then
    (cd "$here" && cargo build --release --quiet)
    BIN="$here/target/release/stackctl"
fi
N="${N:-100}"
work="$(mktemp -d /tmp/stackctl-bench.XXXXXX)"
floor_pids=()
cleanup() {
    for d in "$work"/*/; do
        [[ -f "$d/stack.toml" ]] && (cd "$d" && "$BIN" stop --force >/dev/null 2>&1 || true)
    done
    if ((${#floor_pids[@]})); then kill "${floor_pids[@]}" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

now() { echo "${EPOCHREALTIME/./}"; } # microseconds
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "ok" : "MISS" }'; }

# figure NAME VALUE UNIT TARGET [FLOOR]
figure() {
    local name="$1" value="$2" unit="$3" target="$4" floor="${5:-}"
    if [[ -n "$floor" ]]; then
        printf "%-44s %9s %-3s  floor %8s %-3s  ratio %7s  target <= %s %s  %s\n" \
            "$name" "$value" "$unit" "$floor" "$unit" "$(ratio "$value" "$floor")" "$target" "$unit" "$(verdict "$value" "$target")"
    else
        printf "%-44s %9s %-3s  %-36s  target <= %s %s  %s\n" \
            "$name" "$value" "$unit" "" "$target" "$unit" "$(verdict "$value" "$target")"
    fi
}

echo "stackctl bench: $("$BIN" --version), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# ---------------------------------------------------------------------------
# 100 trivial services

s="$work/trivial"
mkdir -p "$s"
{
    echo '[stack]'
    echo 'name = "bench"'
    for i in $(seq 1 "$N"); do
        printf '[service.s%d]\ncommand = ["sleep", "1000"]\n' "$i"
    done
} >"$s/stack.toml"
cd "$s"

# Floor: a shell loop spawning the same processes and writing their pids.
mkdir -p floor
t0=$(now)
for i in $(seq 1 "$N"); do
    sleep 1000 &
    floor_pids+=($!)
    echo $! >"floor/s$i.pid"
done
t1=$(now)
floor_start=$(ms "$t0" "$t1")

t0=$(now)
"$BIN" start -q
t1=$(now)
start_ms=$(ms "$t0" "$t1")
"$BIN" status -q >/dev/null || { echo "not all running after start" >&2; exit 1; }
figure "start $N services to all-running" "$start_ms" ms 500 "$floor_start"

sup=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' logs/pids/stackctl.pid)
rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$sup/status")
figure "supervisor RSS with $N running" "$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')" MB 15

# Idle CPU over 20 s.
cpu() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
c0=$(cpu "$sup")
sleep "${IDLE_SECS:-20}"
c1=$(cpu "$sup")
figure "supervisor CPU over ${IDLE_SECS:-20} s idle" "$(awk -v a="$c0" -v b="$c1" -v t="$tck" 'BEGIN { printf "%.3f", (b - a) / t }')" s 0.02

# status: median of 20, vs cat of the pid files.
st=()
ct=()
for _ in $(seq 1 20); do
    t0=$(now)
    "$BIN" status >/dev/null
    t1=$(now)
    st+=("$(ms "$t0" "$t1")")
    t0=$(now)
    cat logs/pids/s*.pid >/dev/null
    t1=$(now)
    ct+=("$(ms "$t0" "$t1")")
done
figure "status (median of 20)" "$(printf '%s\n' "${st[@]}" | median)" ms 50 "$(printf '%s\n' "${ct[@]}" | median)"

# stop, vs kill + wait of the shell loop's processes.
t0=$(now)
kill "${floor_pids[@]}"
wait "${floor_pids[@]}" 2>/dev/null || true
t1=$(now)
floor_pids=()
floor_stop=$(ms "$t0" "$t1")
t0=$(now)
"$BIN" stop -q
t1=$(now)
figure "stop $N services (prompt on SIGTERM)" "$(ms "$t0" "$t1")" ms 1000 "$floor_stop"

# ---------------------------------------------------------------------------
# Issue 3: first restart after a crash

s="$work/restart"
mkdir -p "$s"
cd "$s"
# Odd runs crash after 0.2 s, even runs stay up; each stop + start begins a
# new life (new back-off), so every crash is a first crash. (`restart` would
# not: the back-off of a life outlasts an operator's restart, so later
# crashes would wait 100 ms, 200 ms, ….)
cat >crasher.sh <<'EOF'
#!/usr/bin/env bash
n=$(( $(cat count 2>/dev/null || echo 0) + 1 )); echo $n > count
echo "start $EPOCHREALTIME" >> times.log
if (( n % 2 )); then sleep 0.2; echo "exit $EPOCHREALTIME" >> times.log; exit 1; fi
exec sleep 1000
EOF
chmod +x crasher.sh
cat >stack.toml <<'EOF'
[stack]
name = "bench-restart"
[service.crasher]
command = ["./crasher.sh"]
max_restarts = 100
EOF
gaps() { awk '/^exit/ { e = $2 } /^start/ && e { printf "%.3f\n", ($2 - e) * 1000; e = 0 }' "$1"; }
count() {
    local c
    c=$(cat count 2>/dev/null || true)
    echo "${c:-0}"
}
"$BIN" start -q
for k in $(seq 1 10); do
    # run 2k-1 crashed and run 2k (the immediate restart) is up
    for _ in $(seq 1 1000); do (($(count) >= 2 * k)) && break; sleep 0.01; done
    "$BIN" stop -q crasher
    "$BIN" start -q crasher
done
for _ in $(seq 1 1000); do (($(count) >= 22)) && break; sleep 0.01; done
"$BIN" stop -q
restart_ms=$(gaps times.log | median)
# Floor: the same script restarted by a plain shell loop.
rm -f count times.log
for _ in $(seq 1 10); do ./crasher.sh || true; ./crasher.sh & p=$!; sleep 0.05; kill $p; wait $p 2>/dev/null || true; done
floor_restart=$(gaps times.log | median)
figure "first restart: child's exit to new child's line" "$restart_ms" ms "$(awk -v f="$floor_restart" 'BEGIN { print f + 10 }')" "$floor_restart"
figure "  of which stackctl's own share (minus floor)" "$(awk -v a="$restart_ms" -v f="$floor_restart" 'BEGIN { printf "%.2f", a - f }')" ms 10
# The supervisor's view: "exited" to the next "spawned pid" in stackctl.log
# (millisecond stamps), for the immediate restarts only.
own=$(awk '/process=crasher/ && /exited with code 1/ { split($1, a, /[T:Z]/); e = a[2] * 3600000 + a[3] * 60000 + a[4] * 1000; next }
           /process=crasher/ && /spawned pid/ && e { split($1, a, /[T:Z]/); printf "%.1f\n", a[2] * 3600000 + a[3] * 60000 + a[4] * 1000 - e; e = 0 }' "$s/logs/stackctl.log" | median)
figure "  exit seen to spawn, from stackctl.log" "$own" ms 10

# ---------------------------------------------------------------------------
# Issue 3: scale 0 -> 100

s="$work/scale"
mkdir -p "$s"
cd "$s"
cat >stack.toml <<EOF
[stack]
name = "bench-scale"
[service.worker]
command = ["sleep", "1000"]
replicas = 1
max_replicas = $((N * 2))
EOF
"$BIN" start -q
"$BIN" scale -q worker 0
t0=$(now)
"$BIN" scale -q worker "$N"
t1=$(now)
running=$("$BIN" status --json | grep -o '"state":"running"' | wc -l)
[[ "$running" -eq "$N" ]] || { echo "scale: $running of $N running" >&2; exit 1; }
figure "scale worker 0 -> $N to all-running" "$(ms "$t0" "$t1")" ms 500 "$floor_start"
"$BIN" stop -q

# ---------------------------------------------------------------------------
# Issue 3: a crash loop is bounded

s="$work/loop"
mkdir -p "$s"
cd "$s"
cat >stack.toml <<'EOF'
[stack]
name = "bench-loop"
[service.crasher]
command = "echo spawn >> spawns.log; exit 1"
max_restarts = 5
restart_window = "60s"
EOF
t0=$(now)
"$BIN" start -q || true
for _ in $(seq 1 3000); do
    st=$("$BIN" status --json crasher || true) # exit 3 while not up
    [[ "$st" == *'"state":"failed"'* ]] && break
    sleep 0.01
done
t1=$(now)
sleep 1
spawns=$(wc -l <spawns.log)
figure "crash loop: spawns in one window (max 5 + 1)" "$spawns" "" 6
echo "  (gave up after $(ms "$t0" "$t1") ms: delays 0 + 100 + 200 + 400 + 800 ms)"
"$BIN" stop -q
