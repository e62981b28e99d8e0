//! The pump, the sink and rotation with real children writing into real
//! pipes and real files in temp folders. Waits are conditions with
//! deadlines, never bare sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::rotate::{rotated_files, rotated_path};
use super::testpump::{spawn_pump, LogWriter, Pump, Tap};
use super::*;
use crate::config::LogSettings;

fn settings(max_size: u64, keep: u32, timestamps: bool) -> LogSettings {
    LogSettings {
        max_size,
        keep,
        timestamps,
        markers: true,
    }
}

/// Runs `sh -c script` with stdout and stderr on one pipe pumped into `w`.
fn run(script: &str, w: &Arc<LogWriter>, taps: Vec<Tap>) -> (Child, Pump) {
    let (r, wr) = nix::unistd::pipe().unwrap();
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::from(wr.try_clone().unwrap()))
        .stderr(Stdio::from(wr))
        .spawn()
        .unwrap();
    let pump = spawn_pump("test", r, w.clone(), taps).unwrap();
    (child, pump)
}

/// Runs to completion and waits for the pump to drain.
fn run_to_end(script: &str, w: &Arc<LogWriter>, taps: Vec<Tap>) {
    let (mut child, pump) = run(script, w, taps);
    assert!(child.wait().unwrap().success());
    pump.join();
}

#[track_caller]
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

/// `.log.<n>` … `.log.1` then `.log`, concatenated: everything, oldest first.
fn all_of(path: &Path) -> Vec<u8> {
    let mut files: Vec<PathBuf> = rotated_files(path);
    files.reverse();
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    for f in files {
        out.extend(std::fs::read(f).unwrap_or_default());
    }
    out
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

#[test]
fn a_million_line_burst_arrives_intact_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("burst.log");
    let w = LogWriter::open(p.clone(), settings(1 << 40, 5, false)).unwrap();
    run_to_end("seq 1 1000000", &w, Vec::new());
    let text = read(&p);
    let mut n = 0u32;
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, (i + 1).to_string(), "line {}", i + 1);
        n += 1;
    }
    assert_eq!(n, 1_000_000);
    assert!(text.ends_with('\n'));
    assert!(w.last_error().is_none());
}

#[test]
fn rotation_loses_splits_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rot.log");
    let max = 10_000;
    let w = LogWriter::open(p.clone(), settings(max, 1000, false)).unwrap();
    // Lines of 6 to ~400 bytes, 30k of them, in bursts of every size.
    let script = "awk 'BEGIN { for (i = 1; i <= 30000; i++) { \
        s = sprintf(\"%d:\", i); n = (i * 7919) % 397; \
        for (j = 0; j < n; j++) s = s \"x\"; print s } }'";
    run_to_end(script, &w, Vec::new());
    let all = all_of(&p);
    let mut expect = Vec::new();
    for i in 1..=30000u64 {
        expect.extend_from_slice(format!("{i}:").as_bytes());
        expect.extend(std::iter::repeat_n(b'x', ((i * 7919) % 397) as usize));
        expect.push(b'\n');
    }
    assert!(all == expect, "concatenated files differ from the output");
    let rotated = rotated_files(&p);
    assert!(rotated.len() > 100, "only {} rotations", rotated.len());
    for f in rotated.iter().chain([&p]) {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.len() as u64 <= max,
            "{} is {} bytes",
            f.display(),
            bytes.len()
        );
        assert_eq!(bytes.last(), Some(&b'\n'), "{} ends mid-line", f.display());
        // Every file starts with a whole line: "<n>:".
        let first = bytes.split(|b| *b == b'\n').next().unwrap();
        assert!(first.contains(&b':'), "{} starts mid-line", f.display());
    }
}

#[test]
fn keep_bounds_the_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.log");
    let w = LogWriter::open(p.clone(), settings(1000, 3, false)).unwrap();
    run_to_end("seq 1 20000", &w, Vec::new());
    assert_eq!(rotated_files(&p).len(), 3);
    assert!(!rotated_path(&p, 4).exists());
    // What is kept is the newest output, still whole and in order.
    let all = String::from_utf8(all_of(&p)).unwrap();
    let nums: Vec<u32> = all.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(*nums.last().unwrap(), 20000);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(all.len() <= 4 * 1000);
}

#[test]
fn a_partial_line_reaches_the_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prompt.log");
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    let (mut child, _pump) = run("printf 'password: '; exec sleep 30", &w, Vec::new());
    wait_for("the prompt in the file", 5, || read(&p) == "password: ");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the child is still running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_multi_megabyte_line_is_kept_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.log");
    let w = LogWriter::open(p.clone(), settings(100_000, 10, false)).unwrap();
    let taps_saw = Arc::new(Mutex::new(Vec::<usize>::new()));
    let saw = taps_saw.clone();
    let tap: Tap = Arc::new(move |l: &[u8]| saw.lock().unwrap().push(l.len()));
    run_to_end(
        "seq 1 2000; head -c 3000000 /dev/zero | tr '\\0' y; echo; seq 2001 4000",
        &w,
        vec![tap],
    );
    let big = "y".repeat(3_000_000);
    let mut found = 0;
    for f in rotated_files(&p).iter().chain([&p]) {
        let text = read(f);
        if text.contains('y') {
            found += 1;
            assert!(
                text.lines().any(|l| l == big),
                "{} holds a piece",
                f.display()
            );
        }
    }
    assert_eq!(found, 1, "the long line spans files");
    let mut expect = String::new();
    for i in 1..=2000 {
        expect.push_str(&format!("{i}\n"));
    }
    expect.push_str(&big);
    expect.push('\n');
    for i in 2001..=4000 {
        expect.push_str(&format!("{i}\n"));
    }
    assert!(all_of(&p) == expect.as_bytes());
    // Taps saw every line, the long one capped.
    let saw = taps_saw.lock().unwrap();
    assert_eq!(saw.len(), 4001);
    assert_eq!(saw[2000], TAP_LINE_MAX);
}

#[test]
fn stdout_and_stderr_share_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("both.log");
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    run_to_end(
        "echo to-stdout; echo to-stderr >&2; echo again",
        &w,
        Vec::new(),
    );
    assert_eq!(read(&p), "to-stdout\nto-stderr\nagain\n");
}

#[test]
fn timestamps_start_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ts.log");
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, true)).unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    let tap: Tap = Arc::new(move |l: &[u8]| {
        l2.lock()
            .unwrap()
            .push(String::from_utf8_lossy(l).into_owned())
    });
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    // A line written in two pieces, apart in time, gets one stamp.
    run_to_end(
        "printf 'one'; sleep 0.2; printf ' piece\\n'; printf 'two\\n\\nthree\\n'",
        &w,
        vec![tap],
    );
    let text = read(&p);
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), 4, "{text:?}");
    for (line, want) in got.iter().zip(["one piece", "two", "", "three"]) {
        let (ts, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, want);
        let t = humantime::parse_rfc3339(ts).unwrap();
        assert!(t >= before && t <= std::time::SystemTime::now());
        assert_eq!(ts.len(), "2026-05-20T14:00:00.123Z".len());
        assert!(read::line_time(line.as_bytes()).is_some());
    }
    // Taps see the child's own lines, without stamps.
    assert_eq!(*lines.lock().unwrap(), ["one piece", "two", "", "three"]);
}

#[test]
fn a_prompt_left_open_is_ended_before_the_next_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("runs.log");
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    run_to_end("printf 'first run dies mid-line'", &w, Vec::new());
    run_to_end("echo second run", &w, Vec::new());
    assert_eq!(read(&p), "first run dies mid-line\nsecond run\n");
    // A new writer on a file that ends mid-line (a supervisor restart) too.
    drop(w);
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    run_to_end("printf 'x'", &w, Vec::new());
    drop(w);
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    run_to_end("echo y", &w, Vec::new());
    assert_eq!(read(&p), "first run dies mid-line\nsecond run\nx\ny\n");
}

/// A child that writes `n` a line every 10 ms, forever.
const TICKER: &str = "i=0; while :; do i=$((i+1)); echo \"tick $i\"; sleep 0.01; done";

/// After the marker line, the ticks are whole and consecutive.
fn check_after_marker(text: &str) -> (u64, u32) {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.contains("bytes of output were lost"));
    let marker = lines.next().expect("a marker line");
    let lost: u64 = marker
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {marker:?}"));
    let ticks: Vec<u32> = lines
        .map(|l| {
            l.strip_prefix("tick ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a whole tick line: {l:?}"))
        })
        .collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    (lost, ticks.len() as u32)
}

#[test]
fn a_full_disk_is_reported_drained_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("full.log");
    // Every write to /dev/full fails with ENOSPC: a real full disk.
    std::os::unix::fs::symlink("/dev/full", &p).unwrap();
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    let (mut child, _pump) = run(TICKER, &w, Vec::new());
    wait_for("the error to be reported", 5, || w.last_error().is_some());
    let err = w.last_error().unwrap();
    assert!(err.contains("No space left on device"), "{err}");
    // The child keeps running (its pipe is drained) while nothing is written.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the child was blocked or died"
    );
    // Space again: the path is a regular file once more.
    std::fs::remove_file(&p).unwrap();
    wait_for("logging to resume", 5, || {
        w.last_error().is_none() && read(&p).lines().count() >= 5
    });
    let text = read(&p);
    let (lost, ticks) = check_after_marker(&text);
    assert!(lost > 0, "{text}");
    assert!(ticks >= 4, "{text}");
    assert!(text.starts_with("[stackctl] "), "{text}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_unopenable_path_is_reported_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dir.log");
    // A directory where the log should be: open fails with EISDIR.
    std::fs::create_dir(&p).unwrap();
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, true)).unwrap();
    assert!(w.last_error().unwrap().contains("Is a directory"));
    let (mut child, _pump) = run(TICKER, &w, Vec::new());
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none());
    std::fs::remove_dir(&p).unwrap();
    wait_for("logging to resume", 5, || {
        w.last_error().is_none() && read(&p).lines().count() >= 3
    });
    let text = read(&p);
    // Timestamps on: strip them, then the same checks.
    let plain: String = text
        .lines()
        .map(|l| {
            assert!(read::line_time(l.as_bytes()).is_some(), "{l:?}");
            format!("{}\n", l.split_once(' ').unwrap().1)
        })
        .collect();
    let (lost, _) = check_after_marker(&plain);
    assert!(lost > 0);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_log_removed_from_outside_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gone.log");
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    let (mut child, _pump) = run(TICKER, &w, Vec::new());
    wait_for("first ticks", 5, || read(&p).lines().count() >= 2);
    std::fs::remove_file(&p).unwrap();
    wait_for("the log to be recreated", 5, || {
        read(&p).lines().count() >= 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn taps_get_complete_lines_across_reads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("taps.log");
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let tap: Tap = Arc::new(move |l: &[u8]| {
        s2.lock()
            .unwrap()
            .push(String::from_utf8_lossy(l).into_owned())
    });
    run_to_end(
        "printf 'hel'; sleep 0.1; printf 'lo\\nwor'; sleep 0.1; printf 'ld\\nno newline'",
        &w,
        vec![tap],
    );
    assert_eq!(*seen.lock().unwrap(), ["hello", "world", "no newline"]);
}

#[test]
fn a_slow_reader_slows_the_child_and_loses_nothing() {
    // A tap that is slow stands for a slow disk: the pump falls behind, the
    // pipe fills, and the child waits; every line still arrives.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("slow.log");
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    let count = Arc::new(Mutex::new(0u32));
    let c2 = count.clone();
    let tap: Tap = Arc::new(move |_l: &[u8]| {
        let mut c = c2.lock().unwrap();
        *c += 1;
        if *c % 20_000 == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    run_to_end("seq 1 200000", &w, vec![tap]);
    assert_eq!(*count.lock().unwrap(), 200_000);
    assert_eq!(read(&p).lines().count(), 200_000);
}

#[test]
fn tail_reads_the_end_of_a_pumped_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tail.log");
    let w = LogWriter::open(p.clone(), settings(50_000, 3, false)).unwrap();
    run_to_end("seq 1 30000", &w, Vec::new());
    let last = tail(&p, 10_000).unwrap();
    assert_eq!(last.len(), 10_000);
    assert_eq!(last[0], "20001");
    assert_eq!(last[9_999], "30000");
}

#[test]
fn rotation_with_timestamps_keeps_lines_whole_and_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tsrot.log");
    let max = 4_000;
    let w = LogWriter::open(p.clone(), settings(max, 500, true)).unwrap();
    run_to_end("seq 1 20000", &w, Vec::new());
    let all = String::from_utf8(all_of(&p)).unwrap();
    let mut n = 0u32;
    for line in all.lines() {
        n += 1;
        assert!(read::line_time(line.as_bytes()).is_some(), "{line:?}");
        assert_eq!(line.split_once(' ').unwrap().1, n.to_string());
    }
    assert_eq!(n, 20000);
    for f in rotated_files(&p).iter().chain([&p]) {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.len() as u64 <= max,
            "{} is {} bytes",
            f.display(),
            bytes.len()
        );
        assert!(
            read::line_time(&bytes).is_some(),
            "{} starts mid-line",
            f.display()
        );
    }
}

#[test]
fn a_pump_left_running_by_a_grandchild_and_a_new_pump_share_the_writer() {
    // A restart while something the old child spawned still holds the old
    // pipe: both pumps write whole lines into the one log.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("share.log");
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    let (mut a, pa) = run(
        "for i in $(seq 1 3000); do echo \"old $i\"; done",
        &w,
        Vec::new(),
    );
    let (mut b, pb) = run(
        "for i in $(seq 1 3000); do echo \"new $i\"; done",
        &w,
        Vec::new(),
    );
    a.wait().unwrap();
    b.wait().unwrap();
    assert!(pa.wait(Duration::from_secs(10)) && pb.wait(Duration::from_secs(10)));
    let text = read(&p);
    let (mut old, mut new) = (0, 0);
    for l in text.lines() {
        let (who, n) = l
            .split_once(' ')
            .unwrap_or_else(|| panic!("split line {l:?}"));
        let n: u32 = n.parse().unwrap_or_else(|_| panic!("split line {l:?}"));
        match who {
            "old" => {
                old += 1;
                assert_eq!(n, old);
            }
            "new" => {
                new += 1;
                assert_eq!(n, new);
            }
            _ => panic!("split line {l:?}"),
        }
    }
    assert_eq!((old, new), (3000, 3000));
}

#[test]
fn finished_is_an_event_for_async_callers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fin.log");
    let w = LogWriter::open(p.clone(), settings(1 << 30, 5, false)).unwrap();
    let (mut child, pump) = run("echo bye", &w, Vec::new());
    child.wait().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let done =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), pump.finished()).await });
    assert!(done.is_ok());
    assert!(pump.is_finished());
    assert_eq!(read(&p), "bye\n");
    // A pipe still held open: not finished, and the timeout says so.
    let (mut child, pump) = run("echo held; exec sleep 30", &w, Vec::new());
    let done = rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(100), pump.finished()).await
    });
    assert!(done.is_err());
    assert!(!pump.wait(Duration::from_millis(10)));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(pump.wait(Duration::from_secs(10)));
}
