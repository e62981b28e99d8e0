#!/usr/bin/env bash
# Benchmark: a child writing 1,000,000 lines of 100 bytes as fast as it can,
#   (a) redirected straight to a file (the floor),
#   (b) through the real `stackctl start` (a task; `start` returns when the
#       task has completed, so start -> return is the whole run),
#   (c) through supervisord with a stdout logfile (`pip install supervisor`),
# then checks that every line landed in order exactly once, and prints wall
# times, ratios to the floor, and stackctl's CPU per MB logged.
#
#   bench/logs.sh [LINES] [ROUNDS]    (defaults 1000000 and 5)
#
# Needs: cc, a release build (cargo build --release, or STACKCTL=path), and
# for (c) supervisord on PATH or SUPERVISORD=path (skipped when missing).
set -euo pipefail

LINES=${1:-1000000}
RUNS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STACKCTL=${STACKCTL:-$ROOT/target/release/stackctl}
# Optional: the pump alone, no supervisor (cargo build --release --example logs_pump).
PUMP=${PUMP:-$ROOT/target/release/examples/logs_pump}
SUPERVISORD=${SUPERVISORD:-$(command -v supervisord || true)}
WORK=$(mktemp -d /tmp/stackctl-bench.XXXXXX)
trap 'cleanup' EXIT
BYTES=$((LINES * 100))
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')

cleanup() {
    if [[ -f $WORK/sv/supervisord.pid ]]; then
        kill "$(cat "$WORK/sv/supervisord.pid")" 2>/dev/null || true
    fi
    if [[ -f $WORK/st/stack.toml ]]; then
        (cd "$WORK/st" && "$STACKCTL" stop >/dev/null 2>&1) || true
    fi
    rm -rf "$WORK"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
min() { printf '%s\n' "$@" | sort -g | head -1; }

# Every line 1..LINES exactly once, in order, whole (100 bytes each);
# stackctl's own run markers (`── stackctl: …`) are not the writer's.
verify() {
    cat "$@" | awk -v n="$LINES" '
        /^── stackctl: / { next }
        length($0) != 99 || $1 + 0 != ++k { printf "bad line %d: %.40s\n", NR, $0; bad = 1; exit 1 }
        END { if (!bad && k != n) { printf "%d lines, expected %d\n", k, n; exit 1 } }'
}

# The rotated files oldest first, then the current one.
in_order() {
    local base=$1 i files=()
    for i in $(seq 20 -1 1); do [[ -f $base.$i ]] && files+=("$base.$i"); done
    files+=("$base")
    printf '%s\n' "${files[@]}"
}

[[ -x $STACKCTL ]] || { echo "no stackctl at $STACKCTL (cargo build --release)" >&2; exit 2; }
cc -O2 -o "$WORK/writer" "$ROOT/bench/logs-writer.c"
WRITER=$WORK/writer

echo "stackctl logs benchmark: $LINES lines x 100 bytes = $MB MB, $RUNS rounds"
echo "host: $(nproc) cpus, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p "$WORK/st" "$WORK/sv"
cat > "$WORK/st/stack.toml" <<TOML
[stack]
name = "bench"
state_dir = "logs"
[stack.logs]
max_size = "50MB"
keep = 5
[task.writer]
command = ["$WRITER", "$LINES"]
timeout = "10m"
TOML
# The same stack with a task that writes nothing: what `start` costs anyway
# (launching the supervisor, the socket, the reply).
mkdir -p "$WORK/st0"
sed "s|^command = .*|command = [\"true\"]|" "$WORK/st/stack.toml" > "$WORK/st0/stack.toml"
cat > "$WORK/sv/supervisord.conf" <<CONF
[supervisord]
nodaemon = true
logfile = $WORK/sv/supervisord.log
pidfile = $WORK/sv/supervisord.pid
[program:writer]
command = $WRITER $LINES
autostart = true
autorestart = false
startsecs = 0
stdout_logfile = $WORK/sv/writer.log
stdout_logfile_maxbytes = 50MB
stdout_logfile_backups = 5
redirect_stderr = true
CONF

run_floor() {
    rm -f "$WORK/floor.log"
    local t0 t1
    t0=$(now); "$WRITER" "$LINES" > "$WORK/floor.log"; t1=$(now)
    verify "$WORK/floor.log"
    rm -f "$WORK/floor.log"
    elapsed "$t0" "$t1"
}

# The cost of any pipe at all: the writer into `cat` into the file.
run_pipe() {
    rm -f "$WORK/pipe.log"
    local t0 t1
    t0=$(now); "$WRITER" "$LINES" | cat > "$WORK/pipe.log"; t1=$(now)
    verify "$WORK/pipe.log"
    rm -f "$WORK/pipe.log"
    elapsed "$t0" "$t1"
}

# The pump alone (the library, in one process, no supervisor): "wall cpu".
run_pump() {
    rm -f "$WORK"/pump.log*
    local out files
    out=$("$PUMP" "$WORK/pump.log" --max-size 50000000 --keep 5 -- "$WRITER" "$LINES")
    mapfile -t files < <(in_order "$WORK/pump.log")
    verify "${files[@]}"
    rm -f "$WORK"/pump.log*
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
         END { printf "%.3f %.3f\n", v["wall_s"], v["cpu_s"] }' <<<"$out"
}

# Prints "wall cpu rotations".
run_stackctl() {
    (cd "$WORK/st" && "$STACKCTL" stop >/dev/null 2>&1) || true
    rm -rf "$WORK/st/logs"
    local t0 t1 pid ticks cpu=0 rot files
    t0=$(now)
    (cd "$WORK/st" && "$STACKCTL" start -q >/dev/null)
    t1=$(now)
    # utime + stime (clock ticks) of every stackctl process: the anchor
    # pumps the pipes, the supervisor runs the task. A pid file's first
    # line is the pid.
    for f in anchor.pid pids/stackctl.pid; do
        pid=$(head -1 "$WORK/st/logs/$f" 2>/dev/null || true)
        if [[ -n $pid && -r /proc/$pid/stat ]]; then
            ticks=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")
            cpu=$(awk -v c="$cpu" -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", c + t / hz }')
        fi
    done
    mapfile -t files < <(in_order "$WORK/st/logs/writer.log")
    verify "${files[@]}"
    rot=$((${#files[@]} - 1))
    (cd "$WORK/st" && "$STACKCTL" stop >/dev/null 2>&1) || true
    echo "$(elapsed "$t0" "$t1") $cpu $rot"
}

run_supervisord() {
    rm -f "$WORK"/sv/writer.log* "$WORK/sv/supervisord.log"
    local t0 t1 svpid files
    t0=$(now)
    "$SUPERVISORD" -c "$WORK/sv/supervisord.conf" >/dev/null 2>&1 &
    svpid=$!
    # supervisord has no "wait for exit": watch its log for the exit line.
    until grep -q "exited: writer" "$WORK/sv/supervisord.log" 2>/dev/null; do sleep 0.01; done
    t1=$(now)
    kill "$svpid"; wait "$svpid" 2>/dev/null || true
    mapfile -t files < <(in_order "$WORK/sv/writer.log")
    verify "${files[@]}"
    elapsed "$t0" "$t1"
}

run_start_only() {
    (cd "$WORK/st0" && "$STACKCTL" stop >/dev/null 2>&1) || true
    rm -rf "$WORK/st0/logs"
    local t0 t1
    t0=$(now)
    (cd "$WORK/st0" && "$STACKCTL" start -q >/dev/null)
    t1=$(now)
    (cd "$WORK/st0" && "$STACKCTL" stop >/dev/null 2>&1) || true
    elapsed "$t0" "$t1"
}

# Rounds interleave the contenders, so a busy neighbour slows all alike;
# each ratio is taken within its round, and the median is reported.
fixed=(); r_net=(); floor=(); pipe=(); st=(); cpu=(); sv=(); r_st=(); r_sv=(); r_pipe=(); pump=(); r_pump=(); pcpu=()
for round in $(seq "$RUNS"); do
    f=$(run_floor)
    p=$(run_pipe)
    read -r s c ROT < <(run_stackctl)
    z=$(run_start_only)
    floor+=("$f"); pipe+=("$p"); st+=("$s"); cpu+=("$c"); fixed+=("$z")
    r_net+=("$(awk -v a="$s" -v z="$z" -v b="$f" 'BEGIN { printf "%.3f", (a - z) / b }')")
    r_pipe+=("$(awk -v a="$p" -v b="$f" 'BEGIN { printf "%.3f", a / b }')")
    r_st+=("$(awk -v a="$s" -v b="$f" 'BEGIN { printf "%.3f", a / b }')")
    line="round $round: floor ${f}s, pipe ${p}s, stackctl ${s}s (cpu ${c}s, start alone ${z}s)"
    if [[ -x $PUMP ]]; then
        read -r pw pc < <(run_pump)
        pump+=("$pw"); pcpu+=("$pc")
        r_pump+=("$(awk -v a="$pw" -v b="$f" 'BEGIN { printf "%.3f", a / b }')")
        line+=", pump alone ${pw}s (cpu ${pc}s)"
    fi
    if [[ -n $SUPERVISORD && -x $SUPERVISORD ]]; then
        v=$(run_supervisord)
        sv+=("$v")
        r_sv+=("$(awk -v a="$v" -v b="$f" 'BEGIN { printf "%.3f", a / b }')")
        line+=", supervisord ${v}s"
    fi
    echo "$line"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
FLOOR=$(min "${floor[@]}")
echo
printf '%-36s %9s %9s %14s\n' "" "best (s)" "median" "median ratio"
printf '%-36s %9s %9s %14s\n' "(a) redirect to a file (floor)" "$FLOOR" "$(median "${floor[@]}")" "1.00x"
printf '%-36s %9s %9s %14s\n' "    for reference: writer | cat > f" "$(min "${pipe[@]}")" "$(median "${pipe[@]}")" "$(median "${r_pipe[@]}")x"
if ((${#pump[@]})); then
    printf '%-36s %9s %9s %14s\n' "    the pump alone (logs_pump)" "$(min "${pump[@]}")" "$(median "${pump[@]}")" "$(median "${r_pump[@]}")x"
fi
printf '%-36s %9s %9s %14s\n' "(b) stackctl start (task)" "$(min "${st[@]}")" "$(median "${st[@]}")" "$(median "${r_st[@]}")x"
printf '%-36s %9s %9s %14s\n' "    start with a task writing nothing" "$(min "${fixed[@]}")" "$(median "${fixed[@]}")" ""
printf '%-36s %9s %9s %14s\n' "    (b) less that fixed cost" "" "" "$(median "${r_net[@]}")x"
if ((${#sv[@]})); then
    printf '%-36s %9s %9s %14s\n' "(c) supervisord stdout_logfile" "$(min "${sv[@]}")" "$(median "${sv[@]}")" "$(median "${r_sv[@]}")x"
else
    printf '%-36s %s\n' "(c) supervisord" "skipped (not installed; pip install supervisor)"
fi
CPU=$(median "${cpu[@]}")
echo
echo "stackctl CPU (anchor + supervisor, user+sys, median): ${CPU}s = $(awk -v c="$CPU" -v mb="$MB" 'BEGIN { printf "%.2f", c * 1000 / mb }') ms per MB logged; $ROT rotations per run"
if ((${#pcpu[@]})); then
    echo "pump alone CPU (median): $(median "${pcpu[@]}")s = $(awk -v c="$(median "${pcpu[@]}")" -v mb="$MB" 'BEGIN { printf "%.2f", c * 1000 / mb }') ms per MB"
fi
echo "every run verified: $LINES lines, in order, each exactly once, none split"
