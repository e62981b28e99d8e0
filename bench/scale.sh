#!/usr/bin/env bash
# How stackctl's costs grow with the size of a stack: start, stop, status,
# restart latency (kill -9 of a process -> its new pid running), and RSS and
# PSS of every stackctl process together (the anchor and the supervisor), at
# 10, 100 and 1,000 services, each next to a floor measured in the same run:
#
#   start    a shell loop that spawns the same N processes and writes their pid files
#   stop     kill + wait of those N processes
#   status   cat of the N pid files
#   restart  a shell loop that respawns one process and writes its pid file
#   RSS/PSS  that shell (bash), waiting on its N children
#
#   bench/scale.sh                 # builds --release, runs 10, 100, 1000 (~2 min)
#   BIN=path SIZES="10 100" bench/scale.sh
#   KILLS=10 STATUS_RUNS=10 bench/scale.sh
#
# Restart latency is timed the same way for both: a poll (every 0.2 ms) of
# the pid file until it names a new live pid. stackctl's services are
# `restart = "always"`, and each kill follows a `restart` (untimed), so that
# every kill is a first crash (no back-off). Everything runs in a temp folder
# removed at the end; every stack is stopped even on failure. Prints a
# markdown table; figures, no verdicts.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${BIN:-}" ]]; then
    (cd "$here" && cargo build --release --quiet)
    BIN="$here/target/release/stackctl"
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

SIZES="${SIZES:-10 100 1000}"
KILLS="${KILLS:-10}"
STATUS_RUNS="${STATUS_RUNS:-10}"
work="$(mktemp -d /tmp/stackctl-scale.XXXXXX)"
floor_pids=()
loop_pid=""
cleanup() {
    for d in "$work"/*/; do
        [[ -f "$d/stack.toml" ]] && (cd "$d" && "$BIN" stop --force >/dev/null 2>&1 || true)
    done
    if ((${#floor_pids[@]})); then kill "${floor_pids[@]}" 2>/dev/null || true; fi
    [[ -n "$loop_pid" ]] && kill "$loop_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

now() { echo "${EPOCHREALTIME/./}"; } # microseconds
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
kb() { awk -v f="$2" '$1 == f":" { print $2 }' "/proc/$1/smaps_rollup"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# restart_ms PIDFILE: kill -9 of the pid in PIDFILE -> a new live pid in it, in ms.
restart_ms() {
    python3 - "$1" <<'PY'
import os, signal, sys, time
path = sys.argv[1]
def pid():
    try:
        return int(open(path).read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
def live(p):
    try:
        return open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False
old = pid()
t0 = time.perf_counter()
os.kill(old, signal.SIGKILL)
deadline = t0 + 30
while time.perf_counter() < deadline:
    new = pid()
    if new and new != old and live(new):
        break
    time.sleep(0.0002)
else:
    sys.exit("no new pid within 30 s")
print("%.2f" % ((time.perf_counter() - t0) * 1000))
PY
}

declare -A F S # floor and stackctl figures, by "metric:N"

for n in $SIZES; do
    d="$work/n$n"
    mkdir -p "$d/floor"
    cd "$d"
    {
        echo '[stack]'
        echo "name = \"scale$n\""
        for i in $(seq 1 "$n"); do
            printf '[service.s%d]\ncommand = ["sleep", "1000"]\nrestart = "always"\nmax_restarts = 1000\n' "$i"
        done
    } >stack.toml

    # --- floor: a plain shell -------------------------------------------
    t0=$(now)
    for i in $(seq 1 "$n"); do
        sleep 1000 &
        floor_pids+=($!)
        echo $! >"floor/s$i.pid"
    done
    t1=$(now)
    F[start:$n]=$(ms "$t0" "$t1")
    F[rss:$n]=$(kb $$ Rss)
    F[pss:$n]=$(kb $$ Pss)
    st=()
    for _ in $(seq 1 "$STATUS_RUNS"); do
        t0=$(now)
        cat floor/*.pid >/dev/null
        t1=$(now)
        st+=("$(ms "$t0" "$t1")")
    done
    F[status:$n]=$(printf '%s\n' "${st[@]}" | median)
    t0=$(now)
    kill "${floor_pids[@]}"
    wait "${floor_pids[@]}" 2>/dev/null || true
    t1=$(now)
    floor_pids=()
    F[stop:$n]=$(ms "$t0" "$t1")
    # Restart floor: one process respawned by a shell loop, while N-1 others
    # run (as in the stack).
    for i in $(seq 2 "$n"); do
        sleep 1000 &
        floor_pids+=($!)
    done
    bash -c 'while :; do sleep 1000 & echo $! > floor/r.pid; wait $!; done' 2>/dev/null &
    loop_pid=$!
    for _ in $(seq 1 500); do [[ -s floor/r.pid ]] && break; sleep 0.01; done
    rs=()
    for _ in $(seq 1 "$KILLS"); do
        rs+=("$(restart_ms floor/r.pid)")
    done
    F[restart:$n]=$(printf '%s\n' "${rs[@]}" | median)
    kill "$loop_pid" 2>/dev/null || true
    wait "$loop_pid" 2>/dev/null || true
    loop_pid=""
    pkill -KILL -F floor/r.pid 2>/dev/null || true
    kill "${floor_pids[@]}" 2>/dev/null || true
    wait "${floor_pids[@]}" 2>/dev/null || true
    floor_pids=()

    # --- stackctl ----------------------------------------------------------
    t0=$(now)
    "$BIN" start -q
    t1=$(now)
    S[start:$n]=$(ms "$t0" "$t1")
    "$BIN" status -q >/dev/null || { echo "n=$n: not all running after start" >&2; exit 1; }
    sleep 1 # let start-up's transient allocations settle
    anchor=$(head -1 logs/anchor.pid)
    sup=$(head -1 logs/pids/stackctl.pid)
    S[rss:$n]=$(($(kb "$anchor" Rss) + $(kb "$sup" Rss)))
    S[pss:$n]=$(($(kb "$anchor" Pss) + $(kb "$sup" Pss)))
    S[detail:$n]="anchor $(mb "$(kb "$anchor" Rss)")/$(mb "$(kb "$anchor" Pss)"), supervisor $(mb "$(kb "$sup" Rss)")/$(mb "$(kb "$sup" Pss)")"
    st=()
    for _ in $(seq 1 "$STATUS_RUNS"); do
        t0=$(now)
        "$BIN" status >/dev/null
        t1=$(now)
        st+=("$(ms "$t0" "$t1")")
    done
    S[status:$n]=$(printf '%s\n' "${st[@]}" | median)
    rs=()
    for _ in $(seq 1 "$KILLS"); do
        rs+=("$(restart_ms logs/pids/s1.pid)")
        # A requested restart begins a fresh life: the next kill is a first
        # crash again, restarted at once.
        "$BIN" restart -q s1
    done
    S[restart:$n]=$(printf '%s\n' "${rs[@]}" | median)
    t0=$(now)
    "$BIN" stop -q
    t1=$(now)
    S[stop:$n]=$(ms "$t0" "$t1")
    cd "$work"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f×", a / b; else print "-" }'; }
echo "stackctl scale bench: $("$BIN" --version), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) (at the end)"
echo
printf '| metric |'
for n in $SIZES; do printf ' %s: floor | stackctl | ratio |' "$n"; done
echo
printf '|---|'
for _ in $SIZES; do printf -- '---:|---:|---:|'; done
echo
row() { # row LABEL METRIC UNIT [kb]
    printf '| %s |' "$1"
    for n in $SIZES; do
        local f="${F[$2:$n]}" s="${S[$2:$n]}"
        if [[ "${4:-}" == kb ]]; then
            printf ' %s | %s | %s |' "$(mb "$f") MB" "$(mb "$s") MB" "$(ratio "$s" "$f")"
        else
            printf ' %s %s | %s %s | %s |' "$f" "$3" "$s" "$3" "$(ratio "$s" "$f")"
        fi
    done
    echo
}
row "start N to all running" start ms
row "stop N" stop ms
row "status (median of $STATUS_RUNS)" status ms
row "kill -9 → new pid running (median of $KILLS)" restart ms
row "RSS, every stackctl process" rss "" kb
row "PSS, every stackctl process" pss "" kb
echo
for n in $SIZES; do echo "N=$n: RSS/PSS MB ${S[detail:$n]}"; done
