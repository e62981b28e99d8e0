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
use std::process::Stdio;
use std::time::Duration;

/// How long one git command may take (a fetch over a slow link included).
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// A git worktree.
#[derive(Debug, Clone)]
pub(crate) struct Git {
    repo: PathBuf,
}

impl Git {
    pub(crate) fn new(repo: &Path) -> Git {
        Git {
            repo: repo.to_path_buf(),
        }
    }

    /// Runs git and returns its trimmed stdout, or a sentence saying what failed.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("-C")
            .arg(&self.repo)
            .args(args)
            // Never wait for a password on a terminal nobody watches.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Ctrl-C in the keeper's terminal must not cut a git command short.
            .process_group(0)
            .kill_on_drop(true);
        let shown = format!("git {}", args.join(" "));
        let out = match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(format!("cannot run `{shown}`: {e}")),
            Err(_) => {
                return Err(format!(
                    "`{shown}` did not finish within {}s",
                    GIT_TIMEOUT.as_secs()
                ))
            }
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no output");
        Err(format!("`{shown}` failed ({}): {last}", out.status))
    }

    /// `git fetch <remote> +refs/heads/<branch>:refs/remotes/<remote>/<branch>`.
    pub(crate) async fn fetch(&self, remote: &str, branch: &str) -> Result<(), String> {
        let refspec = format!("+refs/heads/{branch}:refs/remotes/{remote}/{branch}");
        self.run(&["fetch", "--quiet", "--no-tags", remote, &refspec])
            .await
            .map(drop)
    }

    /// The commit `<remote>/<branch>` points at (after [`Git::fetch`]).
    pub(crate) async fn remote_head(&self, remote: &str, branch: &str) -> Result<String, String> {
        let r = format!("refs/remotes/{remote}/{branch}^{{commit}}");
        self.run(&["rev-parse", "--verify", "--quiet", &r])
            .await
            .map_err(|_| format!("the remote branch {remote}/{branch} does not exist"))
    }

    /// The commit the worktree is at.
    pub(crate) async fn head(&self) -> Result<String, String> {
        self.run(&["rev-parse", "--verify", "HEAD^{commit}"]).await
    }

    /// Tracked files with changes that are not committed (untracked files,
    /// such as build output, do not count).
    pub(crate) async fn dirty(&self) -> Result<Vec<String>, String> {
        let out = self
            .run(&["status", "--porcelain", "--untracked-files=no"])
            .await?;
        Ok(out.lines().map(|l| l.trim().to_string()).collect())
    }

    /// Moves the worktree from its HEAD to `to`, fast-forward only.
    pub(crate) async fn fast_forward(
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
pub(crate) fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}
