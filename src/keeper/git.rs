//! The git side of the keeper: fetch, compare heads, fast-forward.
//!
//! Owns: running `git -C <repo> …` with no prompt and a deadline, and
//! turning its failures into one readable sentence. Must not touch: the
//! lock, the stack, anything but the worktree it is given.
//!
//! The keeper only ever *fast-forwards*: a dirty worktree, a worktree on
//! another branch, or local commits not on the remote branch are refused
//! with what to do, never reset away.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::CommandSpec;
use crate::spawn::{run_oneshot_with, OneshotOptions, OneshotOutcome};

/// How long one git command may take (a fetch over a slow link included).
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// A git worktree.
#[derive(Debug, Clone)]
pub(super) struct Git {
    repo: PathBuf,
    /// The environment git runs with (the keeper's own).
    env: Vec<(String, String)>,
}

impl Git {
    /// `repo`, with git run in `env` (never prompting).
    pub(super) fn new(repo: &Path, env: &[(String, String)]) -> Git {
        let mut env: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k != "GIT_TERMINAL_PROMPT" && k != "GIT_ASKPASS")
            .cloned()
            .collect();
        // Never wait for a password on a terminal nobody watches.
        env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
        env.push(("GIT_ASKPASS".into(), "true".into()));
        Git {
            repo: repo.to_path_buf(),
            env,
        }
    }

    /// Runs git (in its own session, like every one-shot: Ctrl-C in the
    /// keeper's terminal does not cut it short) and returns its trimmed
    /// stdout, or a sentence saying what failed.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut argv = vec![
            "git".to_string(),
            "-C".to_string(),
            self.repo.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let shown = format!("git {}", args.join(" "));
        let opts = OneshotOptions {
            split_stdout: true,
            ..OneshotOptions::deadline(GIT_TIMEOUT)
        };
        let out = run_oneshot_with(
            &CommandSpec::Argv(argv),
            Path::new("/"),
            &self.env,
            &opts,
            |_| {},
        )
        .await
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
        if out.outcome == OneshotOutcome::Exited(0) {
            return Ok(out.stdout.trim().to_string());
        }
        if out.outcome == OneshotOutcome::TimedOut {
            return Err(format!(
                "`{shown}` did not finish within {}s and was killed",
                GIT_TIMEOUT.as_secs()
            ));
        }
        let last = out
            .output
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no output");
        Err(format!("`{shown}` {} ({last})", out.outcome))
    }

    /// `git fetch <remote> +refs/heads/<branch>:refs/remotes/<remote>/<branch>`.
    pub(super) async fn fetch(&self, remote: &str, branch: &str) -> Result<(), String> {
        let refspec = format!("+refs/heads/{branch}:refs/remotes/{remote}/{branch}");
        self.run(&["fetch", "--quiet", "--no-tags", remote, &refspec])
            .await
            .map(drop)
    }

    /// The commit `<remote>/<branch>` points at (after [`Git::fetch`]).
    pub(super) async fn remote_head(&self, remote: &str, branch: &str) -> Result<String, String> {
        let r = format!("refs/remotes/{remote}/{branch}^{{commit}}");
        self.run(&["rev-parse", "--verify", "--quiet", &r])
            .await
            .map_err(|_| format!("the remote branch {remote}/{branch} does not exist"))
    }

    /// The commit the worktree is at.
    pub(super) async fn head(&self) -> Result<String, String> {
        self.run(&["rev-parse", "--verify", "HEAD^{commit}"]).await
    }

    /// Tracked files with changes that are not committed (untracked files,
    /// such as build output, do not count).
    pub(super) async fn dirty(&self) -> Result<Vec<String>, String> {
        let out = self
            .run(&["status", "--porcelain", "--untracked-files=no"])
            .await?;
        Ok(out.lines().map(|l| l.trim().to_string()).collect())
    }

    /// Moves the worktree from its HEAD to `to`, fast-forward only.
    pub(super) async fn fast_forward(
        &self,
        to: &str,
        remote: &str,
        branch: &str,
    ) -> Result<(), String> {
        let dirty = self.dirty().await?;
        if !dirty.is_empty() {
            let shown: Vec<&str> = dirty.iter().take(5).map(String::as_str).collect();
            return Err(format!(
                "the worktree {} has uncommitted changes ({}{}); commit, stash or \
                 `git checkout -- .` them, the keeper will not overwrite them",
                self.repo.display(),
                shown.join(", "),
                if dirty.len() > 5 { ", …" } else { "" }
            ));
        }
        let current = self
            .run(&["symbolic-ref", "--quiet", "--short", "HEAD"])
            .await
            .ok();
        if let Some(b) = current.as_deref() {
            if b != branch {
                return Err(format!(
                    "the worktree {} is on branch {b}, but the keeper keeps {remote}/{branch}; \
                     `git checkout {branch}` there",
                    self.repo.display()
                ));
            }
        }
        if self
            .run(&["merge-base", "--is-ancestor", "HEAD", to])
            .await
            .is_err()
        {
            return Err(format!(
                "the worktree {} has commits that are not on {remote}/{branch}; the keeper \
                 only fast-forwards: push them or reset the branch to {remote}/{branch}",
                self.repo.display()
            ));
        }
        match current {
            Some(_) => self.run(&["merge", "--ff-only", "--quiet", to]).await,
            None => self.run(&["checkout", "--quiet", "--detach", to]).await,
        }
        .map(drop)
    }
}

/// The short form of a commit id, as the log shows it.
pub(super) fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}
