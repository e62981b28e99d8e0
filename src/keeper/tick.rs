//! One tick: its attempts (retried with a backoff, then `escalate`), the
//! lock around each attempt, and the steps of an attempt.
//!
//! Owns: the order of the steps — prereqs, fetch, decide (see `decide`),
//! then either a deploy (update the worktree, re-read the stack file at the
//! new head, the `deploy` steps under their timeouts, reload and restart
//! through the supervisor, verify) or the restart of watched services found
//! not up — and the one tick line each attempt writes. Must not touch:
//! spawning stack processes (always `stackctl`, see `commands`), the
//! decision rules themselves.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::commands::{expand_command, stack_env, Problems};
use super::decide::{self, backoff_after, Decision, NotUp, Repaired, MAX_BACKOFF};
use super::git::{short, Git};
use super::log::timestamp;
use super::Keeper;
use crate::config::{KeeperSpec, Stack};
use crate::error::Error;
use crate::lock::{Owner, StackLock};
use crate::spawn::OneshotOutcome;

/// One prereq check is cut off after this long.
const PREREQ_TIMEOUT: Duration = Duration::from_secs(10);

/// How a tick ended, for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Nothing to do, deployed, or failed and escalated: next tick at the interval.
    Done,
    /// An export holds the stack (or another deploy): wait for it to change.
    Deferred,
    /// A prereq is down: check again after a backoff.
    PrereqDown,
    /// A stop signal arrived.
    Stopped,
}

/// A tick's end, and whether it got as far as deploying (or restarting
/// watched services): a trigger that arrives meanwhile is folded into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TickEnd {
    pub(super) end: End,
    pub(super) acted: bool,
}

/// How one attempt went when it did not fail.
enum Outcome {
    Idle(String),
    Deployed(String),
    /// Watched services restarted at head `.1`.
    Repaired(String, String),
    /// Watched services still down after their restart at head `head`.
    StillDown {
        line: String,
        head: String,
        escalate: Option<Failure>,
    },
    Deferred(String),
    PrereqDown(String),
    Stopped(String),
}

/// A failed attempt: which step, what the tick saw, what went wrong, and
/// the processes that are not up (when that is what failed).
pub(super) struct Failure {
    pub(super) step: &'static str,
    pub(super) seen: String,
    pub(super) error: String,
    pub(super) problems: Problems,
}

impl Failure {
    fn new(step: &'static str, seen: &str, error: impl Into<String>) -> Failure {
        Failure {
            step,
            seen: seen.to_string(),
            error: error.into(),
            problems: Problems::default(),
        }
    }
}

/// What an attempt works on, decided by its first attempt and kept across
/// the retries.
#[derive(Debug, Clone)]
struct Plan {
    /// The worktree's commit when it was decided (a retry may find the
    /// worktree already updated; the log still shows where it came from).
    from: String,
    /// The commit to deploy (a retry moves it to the newest remote head).
    to: String,
    /// Why besides a new commit ("manual trigger", "tunnel not ready (failed)").
    why: Vec<String>,
    work: Work,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    /// The whole deploy; `also`: watched instances found not up, restarted
    /// besides `[keeper] restart`.
    Deploy { also: Vec<String> },
    /// Only restart these watched instances.
    Repair { names: Vec<String> },
}

/// What the fetch found: the worktree's and the remote's commit, and how
/// the tick line shows them (`origin/develop 3f2a1c0→9b8e7d1`).
struct Seen {
    head: String,
    remote: String,
    line: String,
}

/// A tick line, with the note of a folded trigger on the first one.
fn noted(line: &str, note: &mut Option<&str>) -> String {
    match note.take() {
        Some(n) => format!("{line}; {n}"),
        None => line.to_string(),
    }
}

impl Keeper {
    /// One tick: an attempt and its retries; one tick line per attempt.
    /// `follow_up`: a trigger arrived during the previous tick's deploy and
    /// is folded into this one (it does not force a deploy by itself).
    pub(super) async fn tick(&mut self, trigger: bool, follow_up: bool) -> TickEnd {
        let mut note = follow_up
            .then_some("a trigger that came during the last deploy was folded into this tick");
        let total = self.spec.retries.saturating_add(1);
        let mut plan: Option<Plan> = None;
        let mut attempt: u32 = 1;
        let mut delay: Option<Duration> = None;
        loop {
            let result = self.attempt(trigger, &mut plan).await;
            let acted = plan.is_some();
            let f = match result {
                Ok(o) => {
                    let end = self.ended(o, &mut note).await;
                    return TickEnd { end, acted };
                }
                Err(f) => f,
            };
            f.problems.write_to(&self.log);
            let seen = if f.seen.is_empty() {
                String::new()
            } else {
                format!("{}; ", f.seen)
            };
            if attempt >= total {
                let escalated = self.give_up(&f, attempt, plan.as_ref()).await;
                self.log.tick(&noted(
                    &format!(
                        "{seen}{} failed: {}; attempt {attempt}/{total}, giving up; {escalated}",
                        f.step, f.error
                    ),
                    &mut note,
                ));
                return TickEnd {
                    end: End::Done,
                    acted,
                };
            }
            let d = backoff_after(delay, MAX_BACKOFF);
            delay = Some(d);
            self.log.tick(&noted(
                &format!(
                    "{seen}{} failed: {}; attempt {attempt}/{total}, retrying in {}",
                    f.step,
                    f.error,
                    humantime::format_duration(d)
                ),
                &mut note,
            ));
            if self.unless_stopped(tokio::time::sleep(d)).await.is_none() {
                self.log
                    .tick("stopping: a signal arrived while waiting to retry");
                return TickEnd {
                    end: End::Stopped,
                    acted,
                };
            }
            attempt += 1;
        }
    }

    /// What the keeper remembers from an attempt that did not fail, and its
    /// tick line.
    async fn ended(&mut self, o: Outcome, note: &mut Option<&str>) -> End {
        let (line, end) = match o {
            Outcome::Idle(s) => {
                self.memory.escalated = None;
                (s, End::Done)
            }
            Outcome::Deployed(s) => {
                self.memory.failed_at = None;
                self.memory.escalated = None;
                self.memory.repaired = None;
                (s, End::Done)
            }
            Outcome::Repaired(s, head) => {
                self.memory.escalated = None;
                self.memory.repaired = Some(Repaired {
                    head,
                    escalated: false,
                });
                (s, End::Done)
            }
            Outcome::StillDown {
                line,
                head,
                escalate,
            } => {
                let line = match escalate {
                    Some(f) => {
                        f.problems.write_to(&self.log);
                        let e = self.escalate(&f, 1, Some(&head)).await;
                        format!("{line}; {e}")
                    }
                    None => line,
                };
                self.memory.repaired = Some(Repaired {
                    head,
                    escalated: true,
                });
                (line, End::Done)
            }
            Outcome::Deferred(s) => (s, End::Deferred),
            Outcome::PrereqDown(s) => (s, End::PrereqDown),
            Outcome::Stopped(s) => (s, End::Stopped),
        };
        self.log.tick(&noted(&line, note));
        end
    }

    /// The last attempt failed: escalate (once for a failure with no commit
    /// to pin it to) and remember what not to retry. Says how it went.
    async fn give_up(&mut self, f: &Failure, attempts: u32, plan: Option<&Plan>) -> String {
        let key = format!("{}: {}", f.step, f.error);
        let escalated = match (&self.memory.escalated, plan) {
            (Some((k, at)), None) if *k == key => format!(
                "the same failure was escalated at {at}; not escalating again until a tick succeeds"
            ),
            _ => {
                let e = self
                    .escalate(f, attempts, plan.map(|p| p.to.as_str()))
                    .await;
                if plan.is_none() {
                    self.memory.escalated = Some((key, timestamp(SystemTime::now())));
                }
                e
            }
        };
        match plan.map(|p| (&p.work, &p.to)) {
            Some((Work::Deploy { .. }, to)) => self.memory.failed_at = Some(to.clone()),
            Some((Work::Repair { .. }, to)) => {
                self.memory.repaired = Some(Repaired {
                    head: to.clone(),
                    escalated: true,
                });
            }
            None => {}
        }
        escalated
    }

    /// Takes the lock, does the work, gives the lock back.
    async fn attempt(
        &mut self,
        trigger: bool,
        plan: &mut Option<Plan>,
    ) -> Result<Outcome, Failure> {
        let record = self
            .lock
            .read()
            .map_err(|e| Failure::new("lock", "", e.to_string()))?;
        if record.owner == Owner::Export {
            let waiting = self.waiting(trigger).await;
            return Ok(Outcome::Deferred(format!(
                "heartbeat: export holds the stack, task {}{}; not deploying until it is \
                 released; {waiting}",
                record.task_id.as_deref().unwrap_or("?"),
                record
                    .reason
                    .as_deref()
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
        match self
            .lock
            .acquire(Owner::Deploy, &self.task_id, Some("deploy keeper tick"))
        {
            Ok(_) => {}
            Err(Error::LockHeld { message, .. }) => {
                let waiting = self.waiting(trigger).await;
                return Ok(Outcome::Deferred(format!(
                    "heartbeat: {message}; waiting; {waiting}"
                )));
            }
            Err(e) => return Err(Failure::new("lock", "", e.to_string())),
        }
        let result = self.locked(trigger, plan).await;
        let released = self.lock.release(&self.task_id);
        // A deploy may have moved the lock file ([stack] lock_file).
        self.lock = StackLock::of(&self.stack);
        match (result, released) {
            (r, Ok(_)) => r,
            // Not a reason to deploy again: say it; the next attempt (an
            // idempotent acquire) or the keeper's exit frees it.
            (Ok(Outcome::Deployed(s)), Err(e)) => Ok(Outcome::Deployed(format!(
                "{s}; but the lock could not be released: {e}"
            ))),
            (Ok(_), Err(e)) => Err(Failure::new("lock release", "", e.to_string())),
            (Err(f), Err(_)) => Err(f),
        }
    }

    /// While the stack is held by someone else: whether a new commit waits
    /// to be deployed (a fetch only; nothing else is touched).
    async fn waiting(&mut self, trigger: bool) -> String {
        let pending = if trigger {
            "; a trigger is pending"
        } else {
            ""
        };
        let Some(heads) = self.unless_stopped(self.heads()).await else {
            return format!("stopping{pending}");
        };
        match heads {
            Err(e) => format!("could not look for a new commit: {e}{pending}"),
            Ok((head, remote)) if head == remote => {
                self.memory.waiting = None;
                format!(
                    "no new commit waiting ({} at {}){pending}",
                    self.branch_name(),
                    short(&remote)
                )
            }
            Ok((head, remote)) => {
                let since = match &self.memory.waiting {
                    Some((c, since)) if *c == remote => since.clone(),
                    _ => timestamp(SystemTime::now()),
                };
                self.memory.waiting = Some((remote.clone(), since.clone()));
                format!(
                    "a new commit is waiting to be deployed: {} {}→{} (seen since {since}){pending}",
                    self.branch_name(),
                    short(&head),
                    short(&remote)
                )
            }
        }
    }

    /// Fetches; the worktree's and the remote branch's commits.
    async fn heads(&self) -> Result<(String, String), String> {
        let git = Git::new(&self.spec.repo, &super::commands::own_env());
        git.fetch(&self.spec.remote, &self.spec.branch).await?;
        let remote = git
            .remote_head(&self.spec.remote, &self.spec.branch)
            .await?;
        let head = git.head().await?;
        Ok((head, remote))
    }

    /// The part of an attempt that runs while holding the lock as `deploy`.
    async fn locked(&mut self, trigger: bool, plan: &mut Option<Plan>) -> Result<Outcome, Failure> {
        if self.stopping() {
            return Ok(Outcome::Stopped("stopping before the tick began".into()));
        }
        if let Some(down) = self.check_prereqs().await {
            return Ok(down);
        }
        let Some(seen) = self.look(plan.as_ref()).await? else {
            return Ok(Outcome::Stopped("stopping during the fetch".into()));
        };
        if self.stopping() {
            return Ok(Outcome::Stopped(format!(
                "{}; stopping before deploying",
                seen.line
            )));
        }
        let unhealthy = self
            .unhealthy()
            .await
            .map_err(|e| Failure::new("status", &seen.line, e))?;
        if let Some(no_work) = self.plan_work(trigger, plan, &seen, &unhealthy) {
            return Ok(no_work);
        }
        let Some(p) = plan.clone() else {
            return Ok(Outcome::Idle(format!("{}; nothing to do", seen.line)));
        };
        if self.stopping() {
            return Ok(Outcome::Stopped(format!(
                "{}; stopping before deploying",
                seen.line
            )));
        }
        // From here on the attempt is not interrupted by a stop signal.
        match &p.work {
            Work::Deploy { also } => self.deploy(&seen, &p.why, also).await,
            Work::Repair { names } => self.repair(&seen, &p.why, names).await,
        }
    }

    /// Checks each prereq; `Some` when one is down (or a stop came).
    async fn check_prereqs(&mut self) -> Option<Outcome> {
        let env = stack_env(&self.spec, &[]);
        let ctx = crate::probe::ProbeCtx {
            cwd: self.stack.root.clone(),
            env,
        };
        for p in self.spec.prereqs.clone() {
            let checked = self
                .unless_stopped(async {
                    let p = crate::probe::expand(&p, &ctx.env)?;
                    crate::probe::check(&p, &ctx, PREREQ_TIMEOUT).await
                })
                .await;
            match checked {
                None => return Some(Outcome::Stopped("stopping during the prereq checks".into())),
                Some(Ok(())) => {}
                Some(Err(f)) => {
                    let d = backoff_after(self.memory.prereq_backoff, self.spec.interval);
                    self.memory.prereq_backoff = Some(d);
                    return Some(Outcome::PrereqDown(format!(
                        "prereq {p} is down ({f}); nothing restarted; checking again in {}",
                        humantime::format_duration(d)
                    )));
                }
            }
        }
        None
    }

    /// Fetches and compares; `None` when a stop came during the fetch.
    async fn look(&self, plan: Option<&Plan>) -> Result<Option<Seen>, Failure> {
        let Some(heads) = self.unless_stopped(self.heads()).await else {
            return Ok(None);
        };
        let (head, remote) = heads.map_err(|e| Failure::new("fetch", "", e))?;
        let name = self.branch_name();
        let from = plan.map_or(head.as_str(), |p| p.from.as_str());
        let line = if from == remote {
            format!("{name} at {}", short(&remote))
        } else {
            format!("{name} {}→{}", short(from), short(&remote))
        };
        Ok(Some(Seen { head, remote, line }))
    }

    /// Sets `plan` to the work of this attempt, or returns the outcome when
    /// there is none. A retry keeps its plan, moved on to the newest remote
    /// head.
    fn plan_work(
        &mut self,
        trigger: bool,
        plan: &mut Option<Plan>,
        seen: &Seen,
        unhealthy: &[NotUp],
    ) -> Option<Outcome> {
        if let Some(p) = plan {
            p.to = seen.remote.clone();
            if seen.head != seen.remote {
                if let Work::Repair { names } = &p.work {
                    p.work = Work::Deploy {
                        also: names.clone(),
                    };
                }
            }
            return None;
        }
        let decision = decide::decide(
            &self.memory,
            &decide::Facts {
                head: &seen.head,
                remote: &seen.remote,
                trigger,
                unhealthy,
                watching: !self.spec.watch_health.is_empty(),
            },
        );
        if unhealthy.is_empty() {
            // Seen up: an episode of restarting watched services is over.
            self.memory.repaired = None;
        }
        let (why, work) = match decision {
            Decision::Idle(s) => return Some(Outcome::Idle(format!("{}; {s}", seen.line))),
            Decision::StillDown { line, escalate } => {
                let escalate = escalate.then(|| {
                    let problems = Problems::gather(&self.stack, unhealthy.to_vec());
                    Failure {
                        step: "health",
                        seen: seen.line.clone(),
                        error: format!(
                            "{} still not up after the keeper restarted it at {}",
                            problems.summary(),
                            short(&seen.remote)
                        ),
                        problems,
                    }
                });
                return Some(Outcome::StillDown {
                    line: format!("{}; {line}", seen.line),
                    head: seen.remote.clone(),
                    escalate,
                });
            }
            Decision::Deploy { why } => {
                let also = unhealthy.iter().map(|n| n.name.clone()).collect();
                (why, Work::Deploy { also })
            }
            Decision::Repair { names, why } => (why, Work::Repair { names }),
        };
        *plan = Some(Plan {
            from: seen.head.clone(),
            to: seen.remote.clone(),
            why,
            work,
        });
        None
    }

    /// The deploy: update, the stack file at the new head, its deploy
    /// steps, reload and restart, verify.
    async fn deploy(
        &mut self,
        seen: &Seen,
        why: &[String],
        also: &[String],
    ) -> Result<Outcome, Failure> {
        let started = Instant::now();
        self.update(seen).await?;
        let (stack, spec) = self.load_at_head(seen)?;
        self.run_deploy_steps(&stack, &spec, seen).await?;
        let restarted = self.restart_stack(&stack, &spec, also, seen).await?;
        self.stack = stack;
        self.spec = spec;
        self.verify(seen).await?;
        Ok(Outcome::Deployed(format!(
            "{}{}; deployed in {:.1}s ({restarted}); stack ready",
            seen.line,
            why.iter().map(|w| format!("; {w}")).collect::<String>(),
            started.elapsed().as_secs_f64()
        )))
    }

    /// Fast-forwards the worktree to the remote head.
    async fn update(&self, seen: &Seen) -> Result<(), Failure> {
        if seen.head == seen.remote {
            return Ok(());
        }
        Git::new(&self.spec.repo, &super::commands::own_env())
            .fast_forward(&seen.remote, &self.spec.remote, &self.spec.branch)
            .await
            .map_err(|e| Failure::new("update", &seen.line, e))
    }

    /// The stack file as it is at the new head; its diagnostics into the
    /// keeper log when it is not valid.
    fn load_at_head(&self, seen: &Seen) -> Result<(Stack, KeeperSpec), Failure> {
        match crate::config::load(&self.stack_file) {
            Ok(stack) => {
                let spec = stack.keeper.clone().unwrap_or_else(|| self.spec.clone());
                Ok((stack, spec))
            }
            Err(e) => {
                let text = e.to_string();
                for line in text.lines() {
                    self.log.output("stack file", line);
                }
                let first = text.lines().next().unwrap_or("invalid").to_string();
                Err(Failure::new(
                    "stack file",
                    &seen.line,
                    format!(
                        "{} at {} is not valid: {first}",
                        self.stack_file.display(),
                        short(&seen.remote)
                    ),
                ))
            }
        }
    }

    /// `deploy` steps in order, in `repo`, with the stack's environment;
    /// each killed with its whole group at `step_timeout`, all of them
    /// together at `deploy_timeout`.
    async fn run_deploy_steps(
        &self,
        stack: &Stack,
        spec: &KeeperSpec,
        seen: &Seen,
    ) -> Result<(), Failure> {
        let env = stack_env(
            spec,
            &[
                ("STACKCTL_STACK".to_string(), stack.name.clone()),
                ("STACKCTL_KEEPER_COMMIT".to_string(), seen.remote.clone()),
                (
                    "STACKCTL_KEEPER_LOG".to_string(),
                    self.log.path.display().to_string(),
                ),
            ],
        );
        let fail = |e: String| Failure::new("deploy", &seen.line, e);
        let deadline = Instant::now() + spec.deploy_timeout;
        let n = spec.deploy.len();
        for (i, step) in spec.deploy.iter().enumerate() {
            let label = format!("deploy {}/{n}", i + 1);
            let what = format!("deploy step {}/{n} `{step}`", i + 1);
            let all = format!(
                "the deploy steps did not finish within {} (deploy_timeout)",
                humantime::format_duration(spec.deploy_timeout)
            );
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail(format!("{all}; {what} was not started")));
            }
            let argv = expand_command(step, &env).map_err(|e| fail(format!("{what}: {e}")))?;
            let limit = left.min(spec.step_timeout);
            let ended = self
                .run_logged(&label, &argv, &spec.repo, &env, Some(limit))
                .await
                .map_err(|e| fail(format!("{what}: {e}")))?;
            match ended {
                OneshotOutcome::Exited(0) => {}
                OneshotOutcome::TimedOut => {
                    let why = if limit < spec.step_timeout {
                        all
                    } else {
                        format!(
                            "{what} did not finish within {} (step_timeout)",
                            humantime::format_duration(spec.step_timeout)
                        )
                    };
                    self.log.output(
                        &label,
                        &format!("(keeper) {why}: killed it with its whole process group"),
                    );
                    return Err(fail(format!("{why}; killed with its process group")));
                }
                ended => return Err(fail(format!("{what} {ended}"))),
            }
        }
        Ok(())
    }

    /// Through the supervisor, never by spawning stack processes here. A
    /// running supervisor holds the stack file it read when it started, and
    /// `restart` does not re-read it; so `reload` first (it restarts what
    /// changed, and is a no-op when nothing did), then `restart` of what
    /// follows the code (with the tasks it depends on), then the pools
    /// roll. With no supervisor, `start` launches one on the new file.
    /// Says what it restarted.
    async fn restart_stack(
        &self,
        stack: &Stack,
        spec: &KeeperSpec,
        also: &[String],
        seen: &Seen,
    ) -> Result<String, Failure> {
        let (_, before) = self
            .status(stack)
            .await
            .map_err(|e| Failure::new("restart", &seen.line, e))?;
        if !before.supervisor.running {
            self.stackctl_step(stack, &["start"], seen).await?;
            return Ok("started the stack".into());
        }
        // The deploy rebuilt stackctl itself: the running supervisor hands
        // over to the new binary first (no process restarts for that).
        let upgraded = before
            .supervisor
            .pid
            .is_some_and(|pid| binary_changed(pid, &self.exe));
        if upgraded {
            self.stackctl_step(stack, &["upgrade"], seen).await?;
        }
        self.stackctl_step(stack, &["reload"], seen).await?;
        let plan = decide::restart_plan(stack, spec.restart.as_deref(), also);
        for names in [&plan.first, &plan.pools] {
            if names.is_empty() {
                continue;
            }
            let mut args = vec!["restart"];
            args.extend(names.iter().map(String::as_str));
            self.stackctl_step(stack, &args, seen).await?;
        }
        let up = if upgraded { "upgraded stackctl; " } else { "" };
        Ok(format!("{up}reloaded; {}", plan.describe()))
    }

    /// `stackctl ARGS…` as a step of the restart; a failure names the
    /// processes that are not up, with their reasons and logs.
    async fn stackctl_step(
        &self,
        stack: &Stack,
        args: &[&str],
        seen: &Seen,
    ) -> Result<(), Failure> {
        let Err(e) = self.stackctl_logged(stack, args).await else {
            return Ok(());
        };
        let problems = self.problems(stack, None).await;
        let error = if problems.is_empty() {
            format!("{e} (see its output above in the keeper log)")
        } else {
            format!("{e}: {}", problems.summary())
        };
        Err(Failure {
            problems,
            ..Failure::new("restart", &seen.line, error)
        })
    }

    /// The whole stack must be up (`stackctl status` exits 0).
    async fn verify(&self, seen: &Seen) -> Result<(), Failure> {
        let (code, doc) = self
            .status(&self.stack)
            .await
            .map_err(|e| Failure::new("verify", &seen.line, e))?;
        if code == Some(0) {
            return Ok(());
        }
        let problems = Problems::gather(&self.stack, decide::not_up(&doc, None));
        let what = if problems.is_empty() {
            format!("`stackctl status` exited {code:?}")
        } else {
            problems.summary()
        };
        Err(Failure {
            problems,
            ..Failure::new(
                "verify",
                &seen.line,
                format!("the stack is not ready after the restart: {what}"),
            )
        })
    }

    /// Restarts the watched instances `names` found not up (no new commit):
    /// nothing else is touched. With no supervisor, `start` brings the
    /// whole stack up.
    async fn repair(
        &mut self,
        seen: &Seen,
        why: &[String],
        names: &[String],
    ) -> Result<Outcome, Failure> {
        let started = Instant::now();
        let stack = self.stack.clone();
        let (_, before) = self
            .status(&stack)
            .await
            .map_err(|e| Failure::new("restart", &seen.line, e))?;
        let did = if before.supervisor.running {
            let mut args = vec!["restart"];
            args.extend(names.iter().map(String::as_str));
            self.stackctl_step(&stack, &args, seen).await?;
            format!("restarted {}", names.join(" "))
        } else {
            self.stackctl_step(&stack, &["start"], seen).await?;
            "started the stack".to_string()
        };
        let (_, doc) = self
            .status(&stack)
            .await
            .map_err(|e| Failure::new("verify", &seen.line, e))?;
        let problems = Problems::gather(&stack, decide::not_up(&doc, Some(names)));
        if !problems.is_empty() {
            return Err(Failure {
                error: format!("not up after the restart: {}", problems.summary()),
                problems,
                ..Failure::new("verify", &seen.line, "")
            });
        }
        Ok(Outcome::Repaired(
            format!(
                "{}{}; {did} in {:.1}s; {} ready",
                seen.line,
                why.iter().map(|w| format!("; {w}")).collect::<String>(),
                started.elapsed().as_secs_f64(),
                names.join(", ")
            ),
            seen.remote.clone(),
        ))
    }
}

/// Whether the supervisor `pid` runs another binary than the file at `exe`
/// now holds (the deploy rebuilt or replaced it): `/proc/<pid>/exe` is the
/// file it was started from, even once deleted or replaced. The same file,
/// or one with the same bytes, is no change.
fn binary_changed(pid: i32, exe: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let running = format!("/proc/{pid}/exe");
    match (std::fs::metadata(&running), std::fs::metadata(exe)) {
        (Ok(r), Ok(d)) if (r.dev(), r.ino()) == (d.dev(), d.ino()) => false,
        (Ok(r), Ok(d)) if r.len() != d.len() => true,
        (Ok(_), Ok(_)) => match (std::fs::read(&running), std::fs::read(exe)) {
            (Ok(a), Ok(b)) => a != b,
            _ => false,
        },
        // Not ours to read (another user) or no file: nothing to do.
        _ => false,
    }
}
