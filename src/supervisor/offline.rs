//! The truth from the pid files, for when no supervisor answers: `status`
//! without a supervisor, `stop` of processes a killed supervisor left
//! behind, and a new supervisor clearing them before it starts anything.
//!
//! Every pid is checked against its recorded start time and boot id before
//! it is believed or signalled: a pid file that outlived its process (a
//! reboot, a crash) never makes stackctl signal a stranger.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::fsm::State;
use crate::config::Stack;
use crate::output::{ProcessStatus, StatusDoc, SupervisorInfo};
use crate::plan::{self, Instance};
use crate::spawn::identity::{self, PidRecord};
use crate::state::StateDir;

/// The instances of `stack` that may have pid files: configured pool
/// members plus any member number a pid file names.
fn known_instances(stack: &Stack, state: &StateDir) -> Vec<(Instance, Option<PidRecord>)> {
    let mut files: Vec<String> = std::fs::read_dir(state.pids_dir())
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".pid"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for spec in &stack.processes {
        let mut insts = plan::instances(&spec.name, spec.replicas);
        if spec.is_pool() {
            for f in &files {
                if let (base, Some(i)) = plan::split_instance(f) {
                    if base == spec.name && !insts.iter().any(|x| x.index == Some(i)) {
                        insts.push(Instance {
                            name: f.clone(),
                            process: spec.name.clone(),
                            index: Some(i),
                        });
                    }
                }
            }
            insts.sort_by_key(|i| i.index);
        }
        for inst in insts {
            let rec = PidRecord::read(&state.pid_file(&inst.name)).ok().flatten();
            out.push((inst, rec));
        }
    }
    // Pid files of processes the stack file does not name (it is broken,
    // or they were removed from it): still ours to show and to stop.
    for f in files {
        if f == "stackctl" || out.iter().any(|(i, _)| i.name == f) {
            continue;
        }
        let (base, index) = plan::split_instance(&f);
        let inst = Instance {
            name: f.clone(),
            process: base.to_string(),
            index,
        };
        let rec = PidRecord::read(&state.pid_file(&f)).ok().flatten();
        out.push((inst, rec));
    }
    out
}

/// `status` from the pid files alone.
pub fn status(stack: &Stack, names: &[String]) -> Result<StatusDoc, crate::error::Error> {
    let sel = plan::select(stack, names).map_err(|u| {
        crate::error::Error::usage(format!(
            "no process named {} in stack {}",
            u.iter()
                .map(|x| format!("`{}`", x.name))
                .collect::<Vec<_>>()
                .join(", "),
            stack.name
        ))
    })?;
    let state = StateDir::new(&stack.state_dir);
    let mut processes = Vec::new();
    for (inst, rec) in known_instances(stack, &state) {
        if !names.is_empty() && !sel.contains(&inst) {
            continue;
        }
        let spec = stack.process(&inst.process);
        if spec.is_none() && rec.is_none() {
            continue;
        }
        let live = rec.as_ref().filter(|r| r.is_live());
        let message = match (&rec, live) {
            (Some(r), None) => Some(format!(
                "not running: pid {} from its pid file is gone (or is another process now)",
                r.pid
            )),
            (_, Some(_)) => Some("unsupervised: its supervisor is gone".to_string()),
            _ => None,
        };
        processes.push(ProcessStatus {
            name: inst.name.clone(),
            kind: spec.map_or(crate::config::Kind::Service, |p| p.kind),
            pool: inst.index.map(|_| inst.process.clone()),
            instance: inst.index,
            pid: live.map(|r| r.pid),
            state: if live.is_some() {
                State::Running
            } else {
                State::Stopped
            },
            ready: false,
            restarts: 0,
            uptime_s: live
                .and_then(|r| identity::uptime_of(r.start_ticks))
                .map(|d| d.as_secs_f64()),
            rss_mb: live
                .and_then(|r| identity::rss_bytes(r.pid))
                .map(|b| (b as f64 / 1_048_576.0 * 10.0).round() / 10.0),
            exit_code: None,
            message,
        });
    }
    Ok(StatusDoc {
        stack: stack.name.clone(),
        supervisor: SupervisorInfo {
            pid: None,
            running: false,
        },
        processes,
    })
}

/// What an offline stop did.
#[derive(Debug, Default)]
pub struct Cleared {
    /// (instance, pid) stopped.
    pub stopped: Vec<(String, i32)>,
    /// (instance, pid) still alive after SIGKILL.
    pub survivors: Vec<(String, i32)>,
}

/// Stops every live process the pid files (and the stack's environment
/// mark) prove to be this stack's, gracefully then with SIGKILL, and removes
/// their pid files. Blocking; used with no supervisor running.
pub fn stop_all(stack: &Stack) -> Cleared {
    let state = StateDir::new(&stack.state_dir);
    let mut targets: Vec<(String, i32, Signal, Duration)> = Vec::new();
    for (inst, rec) in known_instances(stack, &state) {
        // A process the stack file does not describe (now) gets the defaults.
        let (sig, grace) = stack
            .process(&inst.process)
            .map_or((Signal::SIGTERM, stack.stop_timeout), |p| {
                (p.stop_signal, p.stop_timeout)
            });
        match rec {
            Some(r) if r.is_live() => {
                targets.push((inst.name.clone(), r.pgid, sig, grace));
            }
            Some(_) => {
                let _ = std::fs::remove_file(state.pid_file(&inst.name));
            }
            None => {}
        }
    }
    let mut out = Cleared::default();
    for (name, pgid, sig, _) in &targets {
        tracing::info!(process = %name, "stopping pid {pgid} left by a previous supervisor");
        let _ = crate::spawn::signal_group(*pgid, *sig);
    }
    let start = Instant::now();
    let mut killed = vec![false; targets.len()];
    loop {
        let mut pending = false;
        for (i, (_, pgid, _, grace)) in targets.iter().enumerate() {
            if crate::spawn::group_exists(*pgid) {
                if start.elapsed() >= *grace && !killed[i] {
                    let _ = crate::spawn::signal_group(*pgid, Signal::SIGKILL);
                    killed[i] = true;
                }
                pending = true;
            }
        }
        let max_grace = targets.iter().map(|t| t.3).max().unwrap_or_default();
        if !pending || start.elapsed() > max_grace + Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (name, pgid, _, _) in targets {
        if crate::spawn::group_exists(pgid) {
            out.survivors.push((name, pgid));
        } else {
            let _ = std::fs::remove_file(state.pid_file(&name));
            out.stopped.push((name, pgid));
        }
    }
    // Whatever left its group but kept the stack's mark.
    let id = super::stack_id(&stack.state_dir);
    let strays = identity::stack_members(&id);
    for (pid, _) in &strays {
        let _ = crate::spawn::signal_pid(*pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while strays.iter().any(|(p, _)| identity::is_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for (pid, name) in strays {
        if identity::is_alive(pid) {
            let _ = crate::spawn::signal_pid(pid, Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(20));
        }
        if identity::is_alive(pid) {
            out.survivors.push((name, pid));
        } else {
            out.stopped.push((name, pid));
        }
    }
    out
}
