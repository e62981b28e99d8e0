//! The truth from the pid files, for when no supervisor answers: `status`
//! without a supervisor, `stop` of processes a killed supervisor left
//! behind, and a new supervisor clearing them before it starts anything.
//!
//! Every pid is checked against its recorded start time and boot id before
//! it is believed or signalled: a pid file that outlived its process (a
//! reboot, a crash) never makes stackctl signal a stranger.
//!
//! Owns: reading the pid files back into instances, and stopping what they
//! prove is ours (through the one stop sequence, `spawn::terminate`, in
//! reverse dependency order). Must not touch: pid-file writing (the units').

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::Stack;
use crate::plan::{self, Instance};
use crate::spawn::identity::{self, PidRecord};
use crate::spawn::{strays::Mark, How, StopReport, Target};
use crate::state::StateDir;
use crate::status::{Observed, State, StatusDoc, SupervisorInfo};

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
///
/// # Errors
/// Unknown names (2).
pub fn status(stack: &Stack, names: &[String]) -> Result<StatusDoc, crate::error::Error> {
    let sel = plan::select(stack, names).map_err(|u| super::unknown_names(stack, &u))?;
    let state = StateDir::new(&stack.state_dir);
    let mut processes = Vec::new();
    let group_rss = crate::spawn::identity::group_rss_table();
    for (inst, rec) in known_instances(stack, &state) {
        if !names.is_empty() && !sel.contains(&inst) {
            continue;
        }
        let spec = stack.process(&inst.process);
        if spec.is_none() && rec.is_none() {
            continue;
        }
        let kind = spec.map_or(crate::config::Kind::Service, |p| p.kind);
        processes.push(observe(rec.as_ref()).status(&inst, kind, &group_rss));
    }
    Ok(StatusDoc {
        stack: stack.name.clone(),
        supervisor: SupervisorInfo {
            pid: None,
            running: false,
            anchor: PidRecord::read(&state.anchor_pid())
                .ok()
                .flatten()
                .filter(PidRecord::is_live)
                .map(|r| r.pid),
        },
        processes,
        autoscale: std::collections::BTreeMap::new(),
    })
}

/// What a pid file proves: a live process of ours (running, unsupervised),
/// or a process that is gone.
fn observe(rec: Option<&PidRecord>) -> Observed {
    let live = rec.filter(|r| r.is_live());
    let message = match (rec, live) {
        (Some(r), None) => Some(format!(
            "not running: pid {} from its pid file is gone (or is another process now)",
            r.pid
        )),
        (_, Some(_)) => Some("unsupervised: its supervisor is gone".to_string()),
        _ => None,
    };
    Observed {
        state: if live.is_some() {
            State::Running
        } else {
            State::Stopped
        },
        pid: live.map(|r| r.pid),
        ready: false,
        restarts: 0,
        uptime: live.and_then(|r| identity::uptime_of(r.start_ticks)),
        exit_code: None,
        message,
    }
}

/// What an offline stop did.
#[derive(Debug, Default)]
pub struct Cleared {
    /// (instance, pid) stopped.
    pub stopped: Vec<(String, i32)>,
    /// (instance, pid) still alive after SIGKILL.
    pub survivors: Vec<(String, i32)>,
}

/// A live process to stop, with how its stack file says to stop it.
struct Doomed {
    name: String,
    process: String,
    pgid: i32,
    how: How,
}

/// Stops every live process the pid files (and the stack's mark) prove to
/// be this stack's, in reverse dependency order (what the stack file no
/// longer names first), each through the one stop sequence with its own
/// stop_signal and stop_timeout, and removes their pid files. For when no
/// supervisor runs.
pub async fn stop_all(stack: &Stack) -> Cleared {
    stop_all_but(stack, &[]).await
}

/// [`stop_all`], sparing the processes `keep` (the anchor's own: they are
/// adopted, not stopped). What is left is a dead generation's: processes
/// whose anchor and supervisor both died, their output pipes with them.
/// Strays are swept only when nothing is kept (a kept process's strays
/// carry the same mark).
pub async fn stop_all_but(stack: &Stack, keep: &[i32]) -> Cleared {
    let state = StateDir::new(&stack.state_dir);
    let stack_id = state.stack_id();
    let doomed: Vec<Doomed> = live_records(stack, &state)
        .into_iter()
        .filter(|d| !keep.contains(&d.pgid))
        .collect();
    let mut out = Cleared::default();
    for level in stop_levels(stack, &doomed) {
        let mut stops = tokio::task::JoinSet::new();
        for d in level {
            tracing::info!(process = %d.name, "stopping pid {} left by a previous supervisor", d.pgid);
            let (name, pgid, how, id) = (d.name.clone(), d.pgid, d.how, stack_id.clone());
            stops.spawn(async move {
                let names = [name];
                let target = Target {
                    group: Some(pgid),
                    strays: Some(Mark {
                        stack_id: &id,
                        instances: Some(&names),
                    }),
                    spare: &[],
                };
                let r = crate::spawn::terminate(target, how, std::future::pending()).await;
                let [name] = names;
                (name, pgid, r)
            });
        }
        while let Some(Ok((name, pgid, r))) = stops.join_next().await {
            record(&mut out, &name, pgid, &r);
            if r.survivors.is_empty() {
                PidRecord::remove(&state.pid_file(&name));
            }
        }
    }
    // Whatever left its group but kept the stack's mark, under any name,
    // but the kept processes' own groups.
    let everything = Target {
        group: None,
        strays: Some(Mark {
            stack_id: &stack_id,
            instances: None,
        }),
        spare: keep,
    };
    let how = How {
        signal: Signal::SIGTERM,
        grace: stack.stop_timeout.min(Duration::from_secs(10)),
    };
    let r = crate::spawn::terminate(everything, how, std::future::pending()).await;
    for (name, pid) in &r.strays {
        if r.survivors.contains(pid) {
            out.survivors.push((name.clone(), *pid));
        } else {
            out.stopped.push((name.clone(), *pid));
        }
    }
    out
}

/// [`stop_all`] for a caller without a runtime (the CLI).
///
/// # Errors
/// When a runtime cannot be made.
pub fn stop_all_now(stack: &Stack) -> Result<Cleared, crate::error::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| crate::error::Error::failed(format!("cannot start a runtime: {e}")))?;
    Ok(rt.block_on(stop_all(stack)))
}

/// Adds what stopping `name` (group `pgid`) did to `out`.
fn record(out: &mut Cleared, name: &str, pgid: i32, r: &StopReport) {
    if r.survivors.is_empty() {
        out.stopped.push((name.to_string(), pgid));
    } else {
        out.survivors
            .extend(r.survivors.iter().map(|p| (name.to_string(), *p)));
    }
    for (stray, pid) in &r.strays {
        if !r.survivors.contains(pid) {
            out.stopped.push((stray.clone(), *pid));
        }
    }
}

/// The live processes the pid files prove are ours (stale pid files are
/// removed on the way).
fn live_records(stack: &Stack, state: &StateDir) -> Vec<Doomed> {
    let mut out = Vec::new();
    for (inst, rec) in known_instances(stack, state) {
        // A process the stack file does not describe (now) gets the defaults.
        let how = stack.process(&inst.process).map_or(
            How {
                signal: Signal::SIGTERM,
                grace: stack.stop_timeout,
            },
            |p| How {
                signal: p.stop_signal,
                grace: p.stop_timeout,
            },
        );
        match rec {
            Some(r) if r.is_live() => out.push(Doomed {
                name: inst.name.clone(),
                process: inst.process.clone(),
                pgid: r.pgid,
                how,
            }),
            Some(_) => {
                PidRecord::remove(&state.pid_file(&inst.name));
            }
            None => {}
        }
    }
    out
}

/// `doomed` grouped for stopping: what the stack file does not name first,
/// then its start levels in reverse.
fn stop_levels<'a>(stack: &Stack, doomed: &'a [Doomed]) -> Vec<Vec<&'a Doomed>> {
    let order = crate::config::start_order(stack);
    let level_of = |p: &str| order.iter().position(|l| l.iter().any(|n| n == p));
    let mut levels: Vec<Vec<&Doomed>> = vec![Vec::new(); order.len() + 1];
    for d in doomed {
        match level_of(&d.process) {
            Some(i) => levels[order.len() - i].push(d),
            None => levels[0].push(d),
        }
    }
    levels.retain(|l| !l.is_empty());
    levels
}
