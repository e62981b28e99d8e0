//! The one printer of styled output: the status table, progress lines,
//! a reload's plan, process-name labels (`api | …` in `logs` and `--foreground`) and their
//! palette, state colours, and `NO_COLOR` (decided by the caller into a
//! [`Style`]). Pure rendering to strings and writers, after ripgrep's
//! `Printer`. The shapes themselves (`status --json`) are `crate::status`'s.
//! Must not touch: exit codes; I/O beyond the writer.

use std::io::{self, Write};

use crate::status::{
    AutoscaleStatus, PlanAction, PlanEntry, Progress, ReloadPlan, ScheduleStatus, State, StatusDoc,
    Step,
};
use crate::timeline::{Analysis, StartSummary};

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }

    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }

    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }

    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }

    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }

    /// `name` padded to `width`, in its own colour: a process keeps its
    /// colour in every view.
    pub fn label(&self, name: &str, width: usize) -> String {
        let padded = format!("{name:<width$}");
        if !self.color {
            return padded;
        }
        let h = name
            .bytes()
            .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
        self.paint(NAME_COLORS[h % NAME_COLORS.len()], &padded)
    }

    /// What goes before a line of a process's output: `name | `.
    pub fn prefix(&self, name: &str, width: usize) -> String {
        format!("{} | ", self.label(name, width))
    }

    /// The mark before a progress line.
    pub fn mark(&self, step: Step) -> String {
        match step {
            Step::Ready | Step::Completed | Step::Stopped => self.green("ok"),
            Step::Failed => self.red("FAIL"),
            Step::NotStarted => self.yellow("skip"),
            Step::Starting | Step::Stopping | Step::Waiting => self.dim(".."),
            Step::Info => self.dim("--"),
        }
    }

    /// A state word, coloured by how good it is.
    pub fn state(&self, st: State) -> String {
        match st {
            State::Running | State::Completed => self.green(st.as_str()),
            State::Failed => self.red(st.as_str()),
            State::Starting | State::Backoff | State::Stopping | State::Pending => {
                self.yellow(st.as_str())
            }
            State::Stopped => self.dim(st.as_str()),
        }
    }
}

/// The colours of process names.
const NAME_COLORS: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

/// One progress event as `start`, `stop` and friends print it:
/// `  ok  api                      ready in 0.3s`; a reload's plan as
/// [`reload_plan`] prints it (several lines).
pub fn progress_line(p: &Progress, style: Style) -> String {
    if let Some(plan) = &p.plan {
        return reload_plan(plan, style);
    }
    // The mark is padded as plain text, then coloured.
    let mark = style.mark(p.step);
    let plain = Style { color: false }.mark(p.step);
    let pad = " ".repeat(4usize.saturating_sub(plain.len()));
    format!("{pad}{mark}  {:<24} {}", p.process, p.message)
}

/// A reload's plan (`reload`, `reload --dry-run`), one line per process
/// that changed, what changed (keys, variable names) and what is done,
/// then what did not change:
///
/// ```text
/// reload: what changed, and what is done
///   restart  api                      command
///   roll     worker                   env API_TOKEN (member by member, each ready before the next)
///   unchanged (they keep their pids): redis, migrate
/// ```
pub fn reload_plan(plan: &ReloadPlan, style: Style) -> String {
    let lead = if plan.dry_run {
        "reload --dry-run"
    } else {
        "reload"
    };
    if plan.is_empty() {
        let n = plan.unchanged.len();
        let s = if n == 1 { "" } else { "es" };
        return format!("{lead}: no change ({n} process{s} unchanged)");
    }
    let mut out = if plan.dry_run {
        format!("{lead}: what changed, and what a reload does (nothing was changed)")
    } else {
        format!("{lead}: what changed, and what is done")
    };
    for e in &plan.processes {
        let word = e.action.as_str();
        let pad = " ".repeat(7usize.saturating_sub(word.len()));
        let painted = match e.action {
            PlanAction::Start => style.green(word),
            PlanAction::Stop => style.red(word),
            PlanAction::Update | PlanAction::Nothing => style.dim(word),
            _ => style.yellow(word),
        };
        out.push_str(&format!(
            "\n  {painted}{pad}  {:<24} {}",
            e.process,
            plan_why(e)
        ));
    }
    if !plan.unchanged.is_empty() {
        let kept = format!(
            "unchanged (they keep their pids): {}",
            plan.unchanged.join(", ")
        );
        out.push_str(&format!("\n  {}", style.dim(&kept)));
    }
    out
}

/// What changed in one process of a plan, and how it is done.
fn plan_why(e: &PlanEntry) -> String {
    let mut keys: Vec<String> = e
        .keys
        .iter()
        .map(|k| match e.size {
            Some(s) if k == "replicas" => format!("replicas {} → {}", s.from, s.to),
            _ => k.clone(),
        })
        .collect();
    if let Some(s) = e.size {
        if e.action != PlanAction::Start && !e.keys.iter().any(|k| k == "replicas") {
            keys.push(format!("size {} → {}", s.from, s.to));
        }
    }
    let mut what = Vec::new();
    if !keys.is_empty() {
        what.push(keys.join(", "));
    }
    if !e.env.is_empty() {
        what.push(format!("env {}", e.env.join(", ")));
    }
    let what = what.join("; ");
    let how = match e.action {
        PlanAction::Start => match e.size {
            Some(s) => format!(
                "new in the stack file ({} member{})",
                s.to,
                if s.to == 1 { "" } else { "s" }
            ),
            None => "new in the stack file".to_string(),
        },
        PlanAction::Stop => "removed from the stack file".to_string(),
        PlanAction::Restart | PlanAction::Resize => String::new(),
        PlanAction::Replace => "the new process is ready before the old one stops".to_string(),
        PlanAction::Roll => "member by member, each ready before the next".to_string(),
        PlanAction::Rearm => "its schedule is armed again".to_string(),
        PlanAction::Update => "no restart needed".to_string(),
        PlanAction::Nothing => {
            "not running: it takes the new definition at its next start".to_string()
        }
    };
    match (what.is_empty(), how.is_empty()) {
        (true, _) => how,
        (false, true) => what,
        (false, false) => format!("{what} ({how})"),
    }
}

/// A line of something under way, as a terminal shows it while it waits
/// (`start` redraws it in place):
/// `  ..  api                      http://127.0.0.1:8000/health → 503  (12s of 2m00s)`;
/// what it waits for is cut so that the line fits in `width` columns,
/// its clock kept.
pub fn live_line(p: &Progress, style: Style, width: usize) -> String {
    let clock = match (p.elapsed_ms, p.timeout_ms) {
        (Some(e), Some(t)) => format!("  ({} of {})", clock(e), clock(t)),
        (Some(e), None) => format!("  ({})", clock(e)),
        _ => String::new(),
    };
    let head = format!("{:<24} ", p.process);
    let room = width.saturating_sub(6 + head.chars().count() + clock.chars().count());
    let what = cut(&p.message, room);
    format!(
        "  {}  {head}{what}{}",
        style.mark(p.step),
        style.dim(&clock)
    )
}

/// `text` cut to `room` characters, an ellipsis marking the cut.
fn cut(text: &str, room: usize) -> String {
    if text.chars().count() <= room {
        return text.to_string();
    }
    let mut out: String = text.chars().take(room.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A clock reading: `1.4s` under 10 s, `42s`, then `2m05s`.
fn clock(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        short_duration(ms as f64 / 1000.0)
    }
}

/// The line a `start` ends with: `stack demo is up in 2.4s (critical
/// chain: migrate 0.4s → api 1.1s → web 0.6s)`; without a summary (nothing
/// was started: it was up already), `stack demo is up`.
pub fn up_line(stack: &str, summary: Option<&StartSummary>) -> String {
    let Some(s) = summary else {
        return format!("stack {stack} is up");
    };
    let chain: Vec<String> = s
        .chain
        .iter()
        .map(|c| {
            if c.no_gate {
                format!("{} ready at spawn", c.name)
            } else {
                format!("{} {}", c.name, seconds(c.own_s))
            }
        })
        .collect();
    format!(
        "stack {stack} is up in {} (critical chain: {})",
        seconds(s.total_s),
        chain.join(" → ")
    )
}

/// Seconds as a timeline shows them: `0.4s`, `12.3s`, `2m05s`.
fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        short_duration(s)
    }
}

/// `stackctl analyze`: the start, its critical chain, every process
/// (failures first), the restarts since.
///
/// # Errors
/// Only the writer's.
pub fn analysis(w: &mut dyn Write, stack: &str, a: &Analysis, style: Style) -> io::Result<()> {
    let how = match (a.under_way, a.ok, a.total_s) {
        (true, _, _) => "still under way".to_string(),
        (false, true, Some(t)) => format!("up in {}", seconds(t)),
        (false, false, Some(t)) => style.red(&format!("failed, over after {}", seconds(t))),
        _ => "over".to_string(),
    };
    writeln!(
        w,
        "stack {}: last {} at {}: {how}",
        style.bold(stack),
        a.op,
        a.at
    )?;
    writeln!(w)?;
    if a.chain.is_empty() {
        writeln!(w, "critical chain: nothing came up")?;
    } else {
        writeln!(
            w,
            "critical chain (@ when it was ready, + its own start time; waiting is not its own):"
        )?;
        let indent = |i: usize| {
            if i == 0 {
                String::new()
            } else {
                format!("{}└─", "  ".repeat(i - 1))
            }
        };
        let width = a
            .chain
            .iter()
            .enumerate()
            .map(|(i, l)| indent(i).chars().count() + l.name.len())
            .max()
            .unwrap_or(0);
        for (i, l) in a.chain.iter().enumerate() {
            let indent = indent(i);
            let own = if l.no_gate {
                style.yellow("ready at spawn (no gate)")
            } else {
                format!("+{}", seconds(l.own_s))
            };
            let waited = match &l.waited_for {
                Some(d) => format!(" (waited {} for {d})", seconds(l.waited_s)),
                None if l.waited_s > 0.0 => format!(" (waited {})", seconds(l.waited_s)),
                None => String::new(),
            };
            let pad = width.saturating_sub(indent.chars().count() + l.name.len());
            writeln!(
                w,
                "{indent}{}{} @{} {own}{waited}",
                l.name,
                " ".repeat(pad),
                seconds(l.ready_s)
            )?;
        }
    }
    writeln!(w)?;
    writeln!(
        w,
        "every process, failures first, then by own start time (they start in parallel: these do not add up):"
    )?;
    let header = [
        "NAME",
        "OUTCOME",
        "WAITED",
        "PRE_START",
        "OWN",
        "DONE",
        "GATE",
    ];
    let cell = |s: Option<f64>| s.map_or_else(|| "-".to_string(), seconds);
    let rows: Vec<[String; 7]> = a
        .processes
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.outcome.replace('_', " "),
                cell(r.waited_s),
                cell(r.pre_start_s),
                cell(r.own_s),
                r.done_s
                    .map_or_else(|| "-".into(), |s| format!("@{}", seconds(s))),
                match (&r.gate, r.no_gate) {
                    (_, true) => "ready at spawn".to_string(),
                    (Some(g), _) => g.clone(),
                    (None, false) => "-".to_string(),
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i].saturating_sub(c.chars().count()) + 2));
            }
        }
        out.trim_end().to_string()
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    writeln!(w, "{}", style.bold(&line(&head)))?;
    for (r, cells) in a.processes.iter().zip(&rows) {
        let text = line(cells);
        match (&r.reason, r.outcome.as_str()) {
            (Some(why), "failed" | "not_started") => {
                writeln!(w, "{}  {}", style.red(&text), style.dim(why))?
            }
            _ => writeln!(w, "{text}")?,
        }
    }
    if !a.restarts.is_empty() {
        writeln!(w)?;
        writeln!(w, "restarts since:")?;
        for r in &a.restarts {
            let how = match (r.outcome.as_str(), r.own_s) {
                ("ready" | "completed", Some(own)) => format!("{} in {}", r.outcome, seconds(own)),
                ("failed", _) => {
                    style.red(&format!("failed: {}", r.reason.as_deref().unwrap_or("")))
                }
                (other, _) => other.to_string(),
            };
            writeln!(
                w,
                "  {} attempt {} @{}: {how}",
                r.name,
                r.attempt,
                seconds(r.began_s)
            )?;
        }
    }
    Ok(())
}

/// The status in one line (systemd's `STATUS=`): `stack demo: 6 of 7 up;
/// failed: api; starting: web`.
pub fn status_line(doc: &StatusDoc) -> String {
    let up = doc.processes.iter().filter(|p| p.is_up()).count();
    let mut out = format!("stack {}: {up} of {} up", doc.stack, doc.processes.len());
    for (state, word) in [
        (State::Failed, "failed"),
        (State::Starting, "starting"),
        (State::Backoff, "restarting"),
        (State::Stopping, "stopping"),
    ] {
        let names: Vec<&str> = doc
            .processes
            .iter()
            .filter(|p| p.state == state)
            .map(|p| p.name.as_str())
            .collect();
        if !names.is_empty() {
            out.push_str(&format!("; {word}: {}", names.join(", ")));
        }
    }
    out
}

/// A duration as the table shows it: `45s`, `12m03s`, `3h12m`, `2d04h`.
pub fn short_duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86400, (s % 86400) / 3600)
    }
}

/// Writes the status table: NAME, PID, STATE, READY, UPTIME, RESTARTS, and
/// the resident memory of each process group (`GROUP-RSS(MB)`: a process
/// and its children).
///
/// # Errors
/// Only the writer's.
pub fn status_table(w: &mut dyn Write, doc: &StatusDoc, style: Style) -> io::Result<()> {
    let header = [
        "NAME",
        "PID",
        "STATE",
        "READY",
        "UPTIME",
        "RESTARTS",
        "GROUP-RSS(MB)",
    ];
    let rows: Vec<[String; 7]> = doc
        .processes
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.pid.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                p.state.as_str().to_string(),
                if p.ready { "yes" } else { "no" }.to_string(),
                p.uptime_s.map(short_duration).unwrap_or_else(|| "-".into()),
                p.restarts.to_string(),
                p.rss_mb
                    .map(|m| format!("{m:.1}"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let sup = match (doc.supervisor.running, doc.supervisor.pid, doc.supervisor.anchor) {
        (true, Some(pid), _) => format!("supervisor running (pid {pid})"),
        (false, _, Some(anchor)) => style.yellow(&format!(
            "no supervisor answers; its anchor (pid {anchor}) keeps the processes and relaunches one: showing what the pid files prove"
        )),
        _ => style.yellow("no supervisor running: showing what the pid files prove"),
    };
    writeln!(w, "stack {}: {}", style.bold(&doc.stack), sup)?;
    let line = |cells: Vec<String>, raw: &[String]| -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(raw[i].chars().count());
            out.push_str(c);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out
    };
    let head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    writeln!(
        w,
        "{}",
        line(head.iter().map(|h| style.bold(h)).collect(), &head)
    )?;
    for (p, r) in doc.processes.iter().zip(&rows) {
        let mut cells = r.to_vec();
        cells[2] = style.state(p.state);
        let raw = r.to_vec();
        let mut text = line(cells, &raw);
        if let Some(m) = &p.message {
            text.push_str("  ");
            text.push_str(&style.dim(m));
        } else if let (Some(code), State::Failed) = (p.exit_code, p.state) {
            text.push_str(&style.dim(&format!("  exit {code}")));
        }
        writeln!(w, "{}", text.trim_end())?;
    }
    for p in &doc.processes {
        if let Some(sched) = &p.schedule {
            writeln!(w, "{}", schedule_line(&p.name, sched, style))?;
        }
    }
    for (name, a) in &doc.autoscale {
        autoscale_lines(w, name, a, style)?;
    }
    Ok(())
}

/// A scheduled task under the table: its schedule and zone, its next run,
/// its last run and how it ended, the slots it skipped.
fn schedule_line(name: &str, s: &ScheduleStatus, style: Style) -> String {
    let mut out = format!("{name}: {} ({})", s.spec, s.time_zone);
    match (&s.next_run, s.next_run_in_s, s.armed) {
        (Some(n), Some(secs), true) => {
            out.push_str(&format!(": next run {n} (in {})", short_duration(secs)));
        }
        (_, _, true) => out.push_str(": no next run"),
        (_, _, false) => out.push_str(&format!(
            ": {}",
            style.yellow(&format!("not armed (`stackctl start {name}` arms it)"))
        )),
    }
    if let Some(at) = &s.last_run {
        let result = s.last_result.as_deref().unwrap_or("?");
        let shown = match s.last_ok {
            Some(false) => style.red(result),
            _ => result.to_string(),
        };
        out.push_str(&format!("; last run {at}: {shown}"));
    }
    if s.skipped > 0 {
        out.push_str(&format!(
            "; {} slot{} skipped",
            s.skipped,
            if s.skipped == 1 { "" } else { "s" }
        ));
    }
    out
}

/// An autoscaled pool under the table: its size and what it wants, the
/// last decision, and what holds it (a failing source, a manual size).
fn autoscale_lines(
    w: &mut dyn Write,
    name: &str,
    a: &AutoscaleStatus,
    style: Style,
) -> io::Result<()> {
    let ago = |s: Option<f64>| s.map(|s| format!("{} ago", short_duration(s)));
    let wanted = match (a.desired, a.depth, ago(a.depth_age_s)) {
        (Some(d), Some(depth), Some(when)) => format!("{d} wanted (depth {depth}, read {when})"),
        _ => "no depth read yet".to_string(),
    };
    writeln!(
        w,
        "autoscale {}: {} of {}..{}, {wanted}; {} per member",
        style.bold(name),
        a.size,
        a.min,
        a.max,
        a.per_instance
    )?;
    if !a.active {
        writeln!(
            w,
            "  {}",
            style.dim("not running (the pool is not started)")
        )?;
    }
    if let Some(d) = &a.decision {
        let what = if d.target == d.from {
            format!("hold at {}", d.target)
        } else {
            format!("{} → {}", d.from, d.target)
        };
        writeln!(
            w,
            "  last decision {}: {what}: {}",
            ago(Some(d.age_s)).unwrap_or_default(),
            d.reason
        )?;
        if let Some(e) = &d.error {
            writeln!(w, "  {}", style.red(&format!("that failed: {e}")))?;
        }
    }
    if a.draining > 0 {
        writeln!(w, "  {} draining", a.draining)?;
    }
    let e = &a.source_errors;
    if e.total > 0 {
        let last = e.last.as_deref().unwrap_or("");
        let line = format!(
            "depth source: {} failed in a row, {} in all; last: {last}",
            e.in_a_row, e.total
        );
        if e.in_a_row > 0 {
            writeln!(w, "  {}", style.yellow(&line))?;
        } else {
            writeln!(w, "  {}", style.dim(&line))?;
        }
    }
    if let Some(p) = &a.paused {
        writeln!(
            w,
            "  {}",
            style.yellow(&format!(
                "held at {} by `stackctl scale` for {} more (`stackctl scale {name} auto` resumes now)",
                p.size,
                short_duration(p.remaining_s)
            ))
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::config::Kind;
    use crate::status::{
        AutoscaleDecision, AutoscalePause, ProcessStatus, SourceErrors, SupervisorInfo,
    };

    fn doc() -> StatusDoc {
        StatusDoc {
            stack: "protea".into(),
            supervisor: SupervisorInfo {
                pid: Some(4100),
                running: true,
                anchor: None,
            },
            processes: vec![
                ProcessStatus {
                    name: "api".into(),
                    kind: Kind::Service,
                    pool: None,
                    instance: None,
                    pid: Some(4242),
                    state: State::Running,
                    ready: true,
                    restarts: 0,
                    uptime_s: Some(12.3),
                    rss_mb: Some(45.1),
                    exit_code: None,
                    message: None,
                    env_generation: None,
                    schedule: None,
                },
                ProcessStatus {
                    name: "migrate".into(),
                    kind: Kind::Task,
                    pool: None,
                    instance: None,
                    pid: None,
                    state: State::Completed,
                    ready: true,
                    restarts: 0,
                    uptime_s: None,
                    rss_mb: None,
                    exit_code: Some(0),
                    message: None,
                    env_generation: None,
                    schedule: None,
                },
            ],
            autoscale: BTreeMap::new(),
        }
    }

    #[test]
    fn a_scheduled_task_gets_a_line_under_the_table() {
        let mut d = doc();
        d.processes[1].schedule = Some(crate::status::ScheduleStatus {
            spec: "schedule \"0 3 * * *\"".into(),
            time_zone: "Europe/Paris (+02:00)".into(),
            armed: true,
            next_run: Some("2026-05-21T03:00:00+02:00".into()),
            next_run_in_s: Some(3600.0 * 5.0 + 120.0),
            last_run: Some("2026-05-20T03:00:00+02:00".into()),
            last_result: Some("completed in 2.1s".into()),
            last_ok: Some(true),
            skipped: 1,
            last_skip: Some("…".into()),
        });
        let mut out = Vec::new();
        status_table(&mut out, &d, Style { color: false }).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("migrate: schedule \"0 3 * * *\" (Europe/Paris (+02:00)): next run 2026-05-21T03:00:00+02:00 (in 5h02m); last run 2026-05-20T03:00:00+02:00: completed in 2.1s; 1 slot skipped\n"),
            "{text}"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["processes"][1]["schedule"]["skipped"], 1);
        assert!(json["processes"][0].get("schedule").is_none());
        assert!(json["processes"][0].get("env_generation").is_none());
        if let Some(s) = d.processes[1].schedule.as_mut() {
            s.armed = false;
            s.next_run = None;
        }
        let mut out = Vec::new();
        status_table(&mut out, &d, Style { color: false }).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(": not armed (`stackctl start migrate` arms it)"),
            "{text}"
        );
    }

    #[test]
    fn json_has_spec_shape() {
        let v = serde_json::to_value(doc()).unwrap();
        assert_eq!(v["supervisor"]["pid"], 4100);
        let api = &v["processes"][0];
        for key in [
            "name",
            "kind",
            "pool",
            "instance",
            "pid",
            "state",
            "ready",
            "restarts",
            "uptime_s",
            "rss_mb",
            "exit_code",
        ] {
            assert!(api.get(key).is_some(), "missing {key}");
        }
        assert_eq!(api["kind"], "service");
        assert_eq!(api["state"], "running");
        assert!(api["pool"].is_null());
        assert!(api.get("message").is_none());
        let back: StatusDoc = serde_json::from_value(v).unwrap();
        assert_eq!(back, doc());
    }

    #[test]
    fn table_lines_up() {
        let mut out = Vec::new();
        status_table(&mut out, &doc(), Style { color: false }).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "\
stack protea: supervisor running (pid 4100)
NAME     PID   STATE      READY  UPTIME  RESTARTS  GROUP-RSS(MB)
api      4242  running    yes    12s     0         45.1
migrate  -     completed  yes    -       0         -
";
        assert_eq!(text, expected);
    }

    #[test]
    fn an_autoscaled_pool_says_what_it_read_and_decided() {
        let mut d = doc();
        d.autoscale.insert(
            "worker".into(),
            AutoscaleStatus {
                active: true,
                size: 3,
                desired: Some(6),
                min: 1,
                max: 6,
                per_instance: 5,
                draining: 1,
                depth: Some(30),
                depth_read_at: Some("2026-05-20T14:00:00Z".into()),
                depth_age_s: Some(1.2),
                decision: Some(AutoscaleDecision {
                    at: "2026-05-20T14:00:00Z".into(),
                    age_s: 1.2,
                    from: 2,
                    target: 3,
                    kind: "grow".into(),
                    reason: "depth 30 needs 6 at 5 per instance: growing".into(),
                    error: None,
                }),
                source_errors: SourceErrors {
                    in_a_row: 0,
                    total: 2,
                    last: Some("exec `q` exited 1".into()),
                    last_at: Some("2026-05-20T13:59:00Z".into()),
                },
                paused: Some(AutoscalePause {
                    size: 3,
                    until: "2026-05-20T14:10:00Z".into(),
                    remaining_s: 600.0,
                }),
            },
        );
        let mut out = Vec::new();
        status_table(&mut out, &d, Style { color: false }).unwrap();
        let text = String::from_utf8(out).unwrap();
        let tail: Vec<&str> = text.lines().skip(4).collect();
        assert_eq!(
            tail,
            [
                "autoscale worker: 3 of 1..6, 6 wanted (depth 30, read 1s ago); 5 per member",
                "  last decision 1s ago: 2 → 3: depth 30 needs 6 at 5 per instance: growing",
                "  1 draining",
                "  depth source: 0 failed in a row, 2 in all; last: exec `q` exited 1",
                "  held at 3 by `stackctl scale` for 10m00s more (`stackctl scale worker auto` resumes now)",
            ]
        );
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["autoscale"]["worker"]["decision"]["kind"], "grow");
        let back: StatusDoc = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        // No autoscaled pool: no key at all.
        let v = serde_json::to_value(doc()).unwrap();
        assert!(v.get("autoscale").is_none(), "{v}");
    }

    #[test]
    fn a_reload_plan_says_per_process_what_changed_and_what_is_done() {
        use crate::status::{PlanEntry, PlanResize};
        let e = |process: &str, action, keys: &[&str], env: &[&str], size: Option<(u32, u32)>| {
            PlanEntry {
                process: process.into(),
                action,
                keys: keys.iter().map(|k| k.to_string()).collect(),
                env: env.iter().map(|k| k.to_string()).collect(),
                size: size.map(|(from, to)| PlanResize { from, to }),
            }
        };
        let mut plan = ReloadPlan {
            dry_run: false,
            processes: vec![
                e("api", PlanAction::Restart, &["command"], &[], None),
                e("web", PlanAction::Replace, &["ready"], &["TOKEN"], None),
                e(
                    "worker",
                    PlanAction::Roll,
                    &["command", "replicas"],
                    &[],
                    Some((2, 3)),
                ),
                e(
                    "queue",
                    PlanAction::Resize,
                    &["replicas"],
                    &[],
                    Some((4, 2)),
                ),
                e("tunnel", PlanAction::Update, &["max_replicas"], &[], None),
                e("db", PlanAction::Nothing, &[], &["A", "B"], None),
                e("backup", PlanAction::Rearm, &["every"], &[], None),
                e("old", PlanAction::Stop, &[], &[], None),
                e("new", PlanAction::Start, &[], &[], Some((0, 2))),
            ],
            unchanged: vec!["redis".into(), "migrate".into()],
        };
        let plain = Style { color: false };
        let want = "\
reload: what changed, and what is done
  restart  api                      command
  replace  web                      ready; env TOKEN (the new process is ready before the old one stops)
  roll     worker                   command, replicas 2 → 3 (member by member, each ready before the next)
  resize   queue                    replicas 4 → 2
  update   tunnel                   max_replicas (no restart needed)
  nothing  db                       env A, B (not running: it takes the new definition at its next start)
  rearm    backup                   every (its schedule is armed again)
  stop     old                      removed from the stack file
  start    new                      new in the stack file (2 members)
  unchanged (they keep their pids): redis, migrate";
        assert_eq!(reload_plan(&plan, plain), want);
        // A progress line carrying it prints it.
        assert_eq!(progress_line(&Progress::plan(plan.clone()), plain), want);
        plan.dry_run = true;
        let dry = reload_plan(&plan, plain);
        assert!(
            dry.starts_with(
                "reload --dry-run: what changed, and what a reload does (nothing was changed)\n"
            ),
            "{dry}"
        );
        // Coloured, the columns stay.
        let colored = reload_plan(&plan, Style { color: true });
        assert!(
            colored.contains("\x1b[33mrestart\x1b[0m  api "),
            "{colored}"
        );
        assert!(
            colored.contains("\x1b[2mupdate\x1b[0m   tunnel "),
            "{colored}"
        );
        // Nothing changed.
        let none = ReloadPlan {
            dry_run: false,
            processes: vec![],
            unchanged: vec!["redis".into()],
        };
        assert_eq!(
            reload_plan(&none, plain),
            "reload: no change (1 process unchanged)"
        );
    }

    #[test]
    fn progress_lines_line_up_with_and_without_colour() {
        let p = Progress::new("api", Step::Ready, "ready in 0.3s");
        assert_eq!(
            progress_line(&p, Style { color: false }),
            "  ok  api                      ready in 0.3s"
        );
        let red = Progress {
            step: Step::Failed,
            ..p
        };
        assert_eq!(
            progress_line(&red, Style { color: true }),
            "\x1b[31mFAIL\x1b[0m  api                      ready in 0.3s"
        );
    }

    #[test]
    fn a_live_line_has_its_clock_and_fits_its_terminal() {
        let plain = Style { color: false };
        let p = Progress::waiting(
            "api",
            "http://127.0.0.1:8000/health → 503",
            std::time::Duration::from_millis(12_400),
            Some(std::time::Duration::from_secs(120)),
        );
        assert_eq!(
            live_line(&p, plain, 100),
            "  ..  api                      http://127.0.0.1:8000/health → 503  (12s of 2m00s)"
        );
        let narrow = live_line(&p, plain, 60);
        assert_eq!(narrow.chars().count(), 60, "{narrow}");
        assert!(narrow.ends_with("…  (12s of 2m00s)"), "{narrow}");
        let w = Progress::waiting(
            "web",
            "waiting for api",
            std::time::Duration::from_millis(1_400),
            None,
        );
        assert_eq!(
            live_line(&w, plain, 100),
            "  ..  web                      waiting for api  (1.4s)"
        );
    }

    #[test]
    fn a_name_keeps_its_colour_and_plain_labels_are_padded() {
        let on = Style { color: true };
        assert_eq!(on.label("api", 6), on.label("api", 6));
        assert!(on.label("api", 6).starts_with("\x1b["));
        assert_eq!(Style { color: false }.prefix("api", 6), "api    | ");
    }

    #[test]
    fn durations() {
        assert_eq!(short_duration(5.0), "5s");
        assert_eq!(short_duration(125.0), "2m05s");
        assert_eq!(short_duration(3.0 * 3600.0 + 60.0 * 12.0), "3h12m");
        assert_eq!(short_duration(2.0 * 86400.0 + 4.0 * 3600.0), "2d04h");
    }
}
