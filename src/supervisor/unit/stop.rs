//! How a unit ends a process: through the one stop sequence
//! (`spawn::terminate`), after its leader exited on its own or on request,
//! and telling the anchor when an exit has been acted on.
//!
//! Owns: which target and timings each case uses, the pid file's removal,
//! and what is logged. Must not touch: the sequence itself (`spawn`).

use crate::supervisor::record::AfterStop;
use std::path::Path;

use super::{Child, Unit};
use crate::config::Kind;
use crate::spawn::identity::PidRecord;
use crate::spawn::{self, strays::Mark, How, StopReport, Target};
use crate::status::State;

impl Unit {
    /// This instance's mark: how its processes are found outside its group.
    pub(super) fn mark(&self) -> Mark<'_> {
        Mark {
            stack_id: &self.ctx.stack_id,
            cgroups: Some(&self.ctx.cgroup_record),
            instances: Some(std::slice::from_ref(&self.inst.name)),
        }
    }

    /// After the leader exited on its own: nothing it left may linger (it
    /// would be a second copy after the restart), so what is left of the
    /// incarnation is killed at once — in its group, and, for a service,
    /// outside it (a task may leave a daemon behind on purpose, `pg_ctl
    /// start`: it is stopped with the stack). The pid file goes, and the
    /// anchor may forget the exit. (The anchor reports an exit only once
    /// the output is drained, so a failure's log tail ends with its last
    /// line.)
    pub(super) async fn cleanup_after_exit(&self, child: &Child, pid_path: Option<&Path>) {
        if spawn::group_exists(child.pid) {
            tracing::info!(process = %self.name(), "killing what pid {} left in its group", child.pid);
        }
        let strays = (self.spec.kind == Kind::Service).then(|| self.mark());
        let target = Target {
            group: Some(child.pid),
            strays,
            spare: self.overlap.as_slice(),
        };
        let report = spawn::terminate(target, How::KILL, async {}).await;
        self.log_stop_findings(&report);
        if let Some(p) = pid_path {
            PidRecord::remove(p);
        }
        self.ctx.anchor.ack(child.pid);
    }

    fn log_stop_findings(&self, report: &StopReport) {
        for (_, pid) in &report.strays {
            tracing::info!(process = %self.name(), "stopped pid {pid}, which had left its process group");
        }
        if !report.survivors.is_empty() {
            tracing::error!(process = %self.name(), "still alive after SIGKILL: {:?}", report.survivors);
        }
    }

    /// Stops the child and what it started, through the one stop sequence
    /// (`spawn::terminate`): stop_signal, up to stop_timeout, SIGKILL.
    /// During an overlapping restart the other process serves: the state
    /// stays `running`, and that process is never taken for a stray.
    pub(super) async fn stop_child(
        &mut self,
        child: &mut Child,
        pid_path: Option<&Path>,
        then: AfterStop,
    ) -> StopReport {
        if self.overlap.is_none() {
            self.after_stop = then;
            self.set(|s| s.state = State::Stopping);
        }
        let how = How {
            signal: self.spec.stop_signal,
            grace: self.spec.stop_timeout,
        };
        tracing::info!(process = %self.name(), "stopping pid {} with {} (grace {})", child.pid, how.signal.as_str(), humantime::format_duration(how.grace));
        self.doing(
            format!("stopping: {} sent", how.signal.as_str()),
            Some(how.grace),
        );
        let target = Target {
            group: Some(child.pid),
            strays: Some(self.mark()),
            spare: self.overlap.as_slice(),
        };
        let report = spawn::terminate(target, how, async {
            child.wait().await;
        })
        .await;
        if report.killed {
            tracing::warn!(process = %self.name(), "{}", killed_message(&how));
        }
        self.log_stop_findings(&report);
        if let Some(p) = pid_path {
            PidRecord::remove(p);
        }
        // Done with this pid, whether or not its exit has come yet: the
        // anchor forgets it once it is gone.
        self.ctx.anchor.ack(child.pid);
        self.after_stop = AfterStop::Down;
        report
    }
}

/// What a stop that needed SIGKILL says, in `status` and `stackctl.log`.
pub fn killed_message(how: &How) -> String {
    format!(
        "did not exit within its stop_timeout of {} after {}: killed with SIGKILL",
        humantime::format_duration(how.grace),
        how.signal.as_str()
    )
}
