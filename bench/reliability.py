#!/usr/bin/env python3
"""The /proc side of bench/reliability.sh: a sentry, a kill injector, and
the invariant checks. Every process of a bench stack carries
RELIAB_MARK=<its stack folder> in its environment (the CLI's environment is
the supervisor's base environment), which is how it is found.

  reliability.py sentry DIR                 watch until DIR/.sentry-stop exists
  reliability.py inject DIR WHO OFFSET K DELAY
                                           kill -9 WHO (supervisor|anchor)
                                           DELAY s after the K-th line of
                                           stackctl.log past byte OFFSET
  reliability.py points DIR OFFSET N        N kill points from a clean run's lines
  reliability.py snap DIR                   counts: spawns, runs, log size
  reliability.py expect DIR BEFORE          what a clean run did (JSON)
  reliability.py check DIR EXPECT BEFORE KILLED DEADLINE
                                           after a kill: converge, then check
  reliability.py consistent DIR [all-up]    status vs /proc, now
  reliability.py leftovers PREFIX           marked processes still alive
  reliability.py killall PREFIX             SIGKILL them (the bench's cleanup)
"""

import json
import os
import subprocess
import sys
import time

BIN = os.environ.get("BIN", "stackctl")
LIVE = ("running", "starting", "stopping")


# ---------------------------------------------------------------------------
# /proc


def read(path, mode="rb"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def env_of(pid):
    data = read(f"/proc/{pid}/environ")
    if data is None:
        return None
    out = {}
    for item in data.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def stat(pid):
    """(state letter, ppid, start ticks) or None."""
    s = read(f"/proc/{pid}/stat", "r")
    if not s:
        return None
    rest = s.rsplit(")", 1)[-1].split()
    try:
        return rest[0], int(rest[1]), int(rest[19])
    except (IndexError, ValueError):
        return None


def argv(pid):
    data = read(f"/proc/{pid}/cmdline") or b""
    return [a.decode(errors="replace") for a in data.split(b"\0") if a]


def pids():
    for e in os.listdir("/proc"):
        if e.isdigit():
            yield int(e)


class Procs:
    """The marked processes of one or more stacks, found in /proc. Pids seen
    unmarked are not read again while they live (a process's environment is
    only replaced by exec, and a stack's processes are new pids)."""

    def __init__(self, match):
        self.match = match  # RELIAB_MARK value -> bool
        self.unmarked = set()
        self.marks = {}

    def scan(self):
        now = set(pids())
        self.unmarked &= now
        for p in list(self.marks):
            if p not in now:
                del self.marks[p]
        out = []
        for p in now:
            if p in self.unmarked:
                continue
            if p not in self.marks:
                env = env_of(p)
                if env is None:
                    continue
                mark = env.get("RELIAB_MARK")
                if mark is None or not self.match(mark):
                    self.unmarked.add(p)
                    continue
                self.marks[p] = (mark, env.get("STACKCTL_PROCESS"))
            st = stat(p)
            if st is None:
                continue
            mark, inst = self.marks[p]
            a = argv(p)
            role = None
            if a and len(a) > 1 and (a[0].endswith("stackctl") or os.path.basename(a[0]) == os.path.basename(BIN)):
                role = a[1]
            out.append(
                {"pid": p, "mark": mark, "inst": inst, "role": role,
                 "state": st[0], "ppid": st[1], "start": st[2], "argv": a}
            )
        return out


def classify(procs):
    """Supervisors, anchors, and each instance's top-level processes, without
    zombies, a forked and not yet exec'd child of one of the same kind, a
    shell's children, or a probe the supervisor runs."""
    live = [p for p in procs if p["state"] not in ("Z", "X")]
    sups = [p for p in live if p["role"] == "supervise"]
    anchors = [p for p in live if p["role"] == "anchor"]
    sup_pids = {p["pid"] for p in sups}
    insts = {}
    for p in live:
        if p["inst"] and p["role"] not in ("supervise", "anchor"):
            insts.setdefault(p["inst"], []).append(p)

    def top(group):
        mine = {p["pid"] for p in group}
        return [p for p in group if p["ppid"] not in mine]

    insts = {
        k: [p for p in top(v) if p["ppid"] not in sup_pids] for k, v in insts.items()
    }
    return top(sups), top(anchors), {k: v for k, v in insts.items() if v}


# ---------------------------------------------------------------------------
# sentry


def sentry(d):
    procs = Procs(lambda m: m == d)
    stop = os.path.join(d, ".sentry-stop")
    out = os.path.join(d, ".sentry")
    seen = set()
    samples = 0
    with open(out, "a") as f:
        while not os.path.exists(stop):
            sups, anchors, insts = classify(procs.scan())
            label = (read(os.path.join(d, ".label"), "r") or "-").strip()
            found = []
            if len(sups) > 1:
                found.append("two supervisors")
            if len(anchors) > 1:
                found.append("two anchors")
            for k, v in sorted(insts.items()):
                if len(v) > 1:
                    found.append(f"two copies of {k}")
            pids_of = {"two supervisors": sups, "two anchors": anchors}
            for what in found:
                if (label, what) not in seen:
                    seen.add((label, what))
                    group = pids_of.get(what) or insts.get(what[len("two copies of "):], [])
                    detail = " ".join(f"{p['pid']}(ppid {p['ppid']}) {' '.join(p['argv'][:3])}" for p in group)
                    f.write(f"{label}\t{what}\t{time.strftime('%H:%M:%S')}\t{detail}\n")
                    f.flush()
            samples += 1
            time.sleep(0.01)
    with open(out + ".samples", "w") as f:
        f.write(f"{samples}\n")


def sentry_lines(d, label):
    text = read(os.path.join(d, ".sentry"), "r") or ""
    return [ln.split("\t")[1] for ln in text.splitlines() if ln.split("\t")[0] == label]


# ---------------------------------------------------------------------------
# kill injection


def pid_file(d, who):
    if who == "supervisor":
        path = os.path.join(d, "logs", "pids", "stackctl.pid")
    else:
        path = os.path.join(d, "logs", "anchor.pid")
    try:
        return int((read(path, "r") or "").split()[0])
    except (IndexError, ValueError):
        return None


def inject(d, who, offset, k, delay, cli, timeout=30.0):
    """Kills `who` after the k-th new line; `unreached` when the command
    (pid `cli`) ended 1 s ago and the line never came."""
    log = os.path.join(d, "logs", "stackctl.log")
    deadline = time.monotonic() + timeout
    cli_gone = None
    lines = 0
    pos = offset
    while lines < k:
        if cli_gone is None and (stat(cli) or ("Z",))[0] in ("Z", "X"):
            cli_gone = time.monotonic()
        if time.monotonic() > deadline or (cli_gone and time.monotonic() - cli_gone > 1):
            print("unreached")
            return
        data = b""
        try:
            with open(log, "rb") as f:
                f.seek(pos)
                data = f.read()
        except OSError:
            pass
        # Only whole lines count.
        cut = data.rfind(b"\n") + 1
        lines += data[:cut].count(b"\n")
        pos += cut
        if lines < k:
            time.sleep(0.001)
    if delay > 0:
        time.sleep(delay)
    pid = pid_file(d, who)
    role = "supervise" if who == "supervisor" else "anchor"
    a = argv(pid) if pid else []
    if not pid or len(a) < 2 or a[1] != role:
        print("gone")
        return
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        print("gone")
        return
    print(f"killed {pid}")


def points(d, offset, want):
    """Kill points from a clean run's lines of stackctl.log past `offset`:
    after each line, and midway to the next when they are 40 ms or more
    apart; `want` of them, evenly spread, the first and the last included."""
    data = (read(os.path.join(d, "logs", "stackctl.log")) or b"")[offset:]
    times = []
    for ln in data.decode(errors="replace").splitlines():
        stamp = ln.split(" ", 1)[0]
        try:
            h, m, sec = stamp.split("T")[1].rstrip("Z").split(":")
            times.append(int(h) * 3600 + int(m) * 60 + float(sec))
        except (IndexError, ValueError):
            times.append(times[-1] if times else 0.0)
    cands = []
    for i, t in enumerate(times):
        cands.append((i + 1, 0.0))
        if i + 1 < len(times) and times[i + 1] - t >= 0.04:
            cands.append((i + 1, round((times[i + 1] - t) / 2, 3)))
    if len(cands) > want > 1:
        step = (len(cands) - 1) / (want - 1)
        cands = [cands[round(j * step)] for j in range(want)]
    for k, delay in cands[:want]:
        print(k, delay)


# ---------------------------------------------------------------------------
# snapshots, expectations, checks


def status(d, timeout=15):
    try:
        r = subprocess.run([BIN, "status", "--json"], cwd=d, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "status --json hung"
    try:
        return json.loads(r.stdout), None
    except ValueError:
        return None, f"status --json exited {r.returncode}: {r.stderr.decode(errors='replace').strip()[:200]}"


def states(doc):
    return {p["name"]: p["state"] for p in doc["processes"]}


def counts(path):
    c = {}
    for ln in (read(path, "r") or "").splitlines():
        parts = ln.split()
        if parts:
            c[parts[0]] = c.get(parts[0], 0) + 1
    return c


def snap(d):
    log = os.path.join(d, "logs", "stackctl.log")
    try:
        size = os.path.getsize(log)
    except OSError:
        size = 0
    return {"spawns": counts(os.path.join(d, "spawns.log")),
            "runs": counts(os.path.join(d, "runs.log")), "log": size}


def delta(after, before):
    keys = set(after) | set(before)
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(keys) if after.get(k, 0) != before.get(k, 0)}


def expect(d, before):
    doc, err = status(d)
    if err:
        raise SystemExit(err)
    now = snap(d)
    return {"states": states(doc), "supervisor": doc["supervisor"]["running"],
            "spawns": delta(now["spawns"], before["spawns"]), "runs": delta(now["runs"], before["runs"])}


def consistent(d, doc, procs):
    """What status says against what runs. Returns a list of problems."""
    bad = []
    sups, anchors, insts = classify(procs)
    rows = {p["name"]: p for p in doc["processes"]}
    if not doc["supervisor"]["running"]:
        if sups or anchors:
            bad.append(f"no supervisor answers, yet alive: {[p['pid'] for p in sups + anchors]}")
        for k, v in insts.items():
            bad.append(f"{k} alive (pid {v[0]['pid']}) with no supervisor")
        return bad
    if len(sups) != 1 or len(anchors) != 1:
        bad.append(f"{len(sups)} supervisors, {len(anchors)} anchors")
    for name, r in rows.items():
        here = insts.get(name, [])
        if r["state"] in LIVE:
            if r["pid"] is None:
                bad.append(f"{name} {r['state']} without a pid")
            elif r["pid"] not in [p["pid"] for p in here]:
                bad.append(f"{name} {r['state']} as pid {r['pid']}, which does not run it")
        elif here:
            bad.append(f"{name} {r['state']}, yet pid {here[0]['pid']} runs it")
    for k, v in insts.items():
        if k not in rows:
            bad.append(f"{k} runs (pid {v[0]['pid']}) but status does not list it")
        if len(v) > 1:
            bad.append(f"two copies of {k}: {[p['pid'] for p in v]}")
    return bad


def runs_paired(d):
    """Each task run that began ended: `begin PID` then `end PID`."""
    text = read(os.path.join(d, "runs.log"), "r") or ""
    open_runs = set()
    bad = []
    for ln in text.splitlines():
        parts = ln.split()
        if len(parts) != 2:
            continue
        if parts[0] == "begin":
            if open_runs:
                bad.append(f"a run began while {sorted(open_runs)} ran")
            open_runs.add(parts[1])
        elif parts[0] == "end":
            open_runs.discard(parts[1])
    return bad, open_runs


def check(d, exp, before, killed, deadline, label):
    """Waits (to `deadline` s) for the stack to reach what a clean run
    reached, then checks every invariant. Prints `ok` or the problems."""
    procs = Procs(lambda m: m == d)
    end = time.monotonic() + deadline
    problems = []
    doc = None
    while True:
        doc, err = status(d)
        problems = [err] if err else []
        if doc is not None:
            sup = doc["supervisor"]
            if killed and sup.get("pid") == killed:
                problems.append("the killed supervisor still answers")
            if sup["running"] != exp["supervisor"]:
                problems.append("a supervisor runs" if sup["running"] else "no supervisor runs")
            st = states(doc)
            if st != exp["states"]:
                diff = {k: (st.get(k), v) for k, v in exp["states"].items() if st.get(k) != v}
                diff.update({k: (v, None) for k, v in st.items() if k not in exp["states"]})
                problems.append(f"states (now, wanted): {diff}")
            open_now = runs_paired(d)[1]
            if open_now:
                problems.append("a task still runs")
            if not problems:
                problems = consistent(d, doc, procs.scan())
        if not problems or time.monotonic() > end:
            break
        time.sleep(0.1)
    if not problems:
        # Settled: anything late (a second spawn, a stray) shows now.
        time.sleep(0.3)
        doc, err = status(d)
        if err:
            problems.append(err)
        else:
            problems += consistent(d, doc, procs.scan())
        now = snap(d)
        sp = delta(now["spawns"], before["spawns"])
        if sp != exp["spawns"]:
            problems.append(f"spawns {sp}, a clean run: {exp['spawns']}")
        rn = delta(now["runs"], before["runs"])
        if rn != exp["runs"]:
            problems.append(f"task runs {rn}, a clean run: {exp['runs']}")
        problems += runs_paired(d)[0]
        if not exp["supervisor"]:
            left = [p for p in procs.scan()
                    if p["state"] not in ("Z", "X") and (p["inst"] or p["role"] in ("supervise", "anchor"))]
            if left:
                problems.append(f"left behind: {[(p['pid'], p['argv'][:2]) for p in left]}")
    problems += [f"sentry: {w}" for w in sentry_lines(d, label)]
    print("ok" if not problems else "; ".join(problems))


# ---------------------------------------------------------------------------


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sentry":
        sentry(args[0])
    elif cmd == "inject":
        inject(args[0], args[1], int(args[2]), int(args[3]), float(args[4]), int(args[5]))
    elif cmd == "points":
        points(args[0], int(args[1]), int(args[2]))
    elif cmd == "snap":
        print(json.dumps(snap(args[0])))
    elif cmd == "expect":
        print(json.dumps(expect(args[0], json.loads(args[1]))))
    elif cmd == "check":
        killed = int(args[3]) if args[3].isdigit() else None
        check(args[0], json.loads(args[1]), json.loads(args[2]), killed, float(args[4]), args[5])
    elif cmd == "consistent":
        d = args[0]
        doc, err = status(d)
        bad = [err] if err else consistent(d, doc, Procs(lambda m: m == d).scan())
        if not err and len(args) > 1 and args[1] == "all-up":
            bad += [f"{k} {v}" for k, v in states(doc).items() if v not in ("running", "completed")]
        print("ok" if not bad else "; ".join(bad))
    elif cmd == "leftovers":
        pre = args[0]
        for p in Procs(lambda m: m.startswith(pre)).scan():
            if p["state"] not in ("Z", "X"):
                print(p["pid"], " ".join(p["argv"][:3]))
    elif cmd == "killall":
        pre = args[0]
        for p in Procs(lambda m: m.startswith(pre)).scan():
            try:
                os.kill(p["pid"], 9)
            except OSError:
                pass
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
