//! Following logs (`stackctl logs -f`) across restarts and rotations.
//!
//! Owns: watching the state folder with inotify (through `notify`) and
//! reading what each followed log gains. Must not touch: the CLI's
//! filtering and printing (it gets complete lines through a callback).
//!
//! Theory: one watch on the folder, not on files, because a rotation
//! replaces the file (`x.log` is renamed to `x.log.1` and created anew) and
//! a new pool instance creates a new one. On any event every followed log
//! is checked: the path is stat-ed *first*, then the open file is read to
//! its end, and only then, if the path is a different file now, the new one
//! is opened and read from its start. The writer renames before it creates,
//! so everything written to the old file is on the open handle by the time
//! the path changes: nothing is missed or read twice. A restart appends to
//! the same file, so it is just more bytes. Nothing polls: without events
//! the follower sleeps in `recv`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use notify::{RecursiveMode, Watcher};

/// Where followed lines go (the terminal, for `logs -f`).
pub trait Output {
    /// A complete line (without its newline) of the log labelled `label`.
    ///
    /// # Errors
    /// Stops following (e.g. stdout was closed).
    fn line(&mut self, label: &str, line: &[u8]) -> io::Result<()>;

    /// A batch of changes was read: time to flush.
    ///
    /// # Errors
    /// Stops following.
    fn flush(&mut self) -> io::Result<()>;
}

type Emit<'a> = dyn Output + 'a;

/// Chooses new files to follow by file name: their label, or `None`.
pub type Accept = Box<dyn Fn(&str) -> Option<String>>;

/// One followed log.
#[derive(Debug)]
pub struct Followed {
    /// Shown before each line.
    pub label: String,
    /// The log's path (its current file is read).
    pub path: PathBuf,
    file: Option<File>,
    id: Option<(u64, u64)>,
    pos: u64,
    partial: Vec<u8>,
}

impl Followed {
    /// Follows `path` from `pos` in `file` (opened before its tail was
    /// printed, so the follower continues exactly where the tail ended), or
    /// from the start of whatever appears at `path` when `file` is `None`.
    pub fn new(label: String, path: PathBuf, file: Option<File>, pos: u64) -> Followed {
        let id = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        let mut file = file;
        if let Some(f) = file.as_mut() {
            if f.seek(SeekFrom::Start(pos)).is_err() {
                file = None;
            }
        }
        Followed {
            label,
            path,
            file,
            id,
            pos,
            partial: Vec::new(),
        }
    }

    fn drain(&mut self, buf: &mut [u8], emit: &mut Emit<'_>) -> io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        loop {
            let n = match f.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An unreadable file is skipped until it changes.
                Err(_) => return Ok(()),
            };
            self.pos += n as u64;
            let mut rest = &buf[..n];
            while let Some(i) = memchr::memchr(b'\n', rest) {
                if self.partial.is_empty() {
                    emit.line(&self.label, &rest[..i])?;
                } else {
                    self.partial.extend_from_slice(&rest[..i]);
                    let line = std::mem::take(&mut self.partial);
                    emit.line(&self.label, &line)?;
                }
                rest = &rest[i + 1..];
            }
            self.partial.extend_from_slice(rest);
        }
    }

    fn flush_partial(&mut self, emit: &mut Emit<'_>) -> io::Result<()> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.partial);
        emit.line(&self.label, &line)
    }

    /// Reads what the log gained, moving to a new file after a rotation or
    /// a re-creation, and back to the start after a truncation.
    fn poll(&mut self, buf: &mut [u8], emit: &mut Emit<'_>) -> io::Result<()> {
        let now = std::fs::metadata(&self.path).ok();
        // Where we were when the size above was taken: what the drain below
        // adds must not look like a truncation.
        let pos_at_stat = self.pos;
        self.drain(buf, emit)?;
        let Some(m) = now else {
            // Removed: keep the old handle until something appears.
            return Ok(());
        };
        let id = (m.dev(), m.ino());
        if Some(id) != self.id {
            self.flush_partial(emit)?;
            // Several rotations may have happened since the last look: the
            // files that came after ours now sit at `.log.(k-1)` … `.log.1`
            // (ours at `.log.k`), then the live `.log`. Read them in that
            // order, each once (by inode), so nothing is missed or repeated.
            let mut next: Vec<PathBuf> = Vec::new();
            if let Some(old) = self.id {
                let rotated = super::rotate::rotated_files(&self.path);
                if let Some(k) = rotated.iter().position(|p| file_id(p) == Some(old)) {
                    next.extend(rotated[..k].iter().rev().cloned());
                }
            }
            next.push(self.path.clone());
            let mut seen = self.id.into_iter().collect::<Vec<_>>();
            for p in next {
                let Ok(f) = File::open(&p) else { continue };
                let Some(fid) = f.metadata().ok().map(|m| (m.dev(), m.ino())) else {
                    continue;
                };
                if seen.contains(&fid) {
                    continue;
                }
                seen.push(fid);
                self.file = Some(f);
                self.id = Some(fid);
                self.pos = 0;
                self.drain(buf, emit)?;
            }
        } else if m.len() < pos_at_stat {
            // Truncated in place (copytruncate by some other tool).
            self.flush_partial(emit)?;
            if let Some(f) = self.file.as_mut() {
                f.seek(SeekFrom::Start(0))?;
            }
            self.pos = 0;
            self.drain(buf, emit)?;
        }
        Ok(())
    }
}

/// The (device, inode) of the file at `p`.
fn file_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Follows a set of logs in one folder until the callback fails.
pub struct Follower {
    files: Vec<Followed>,
    accept: Accept,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    _watcher: notify::RecommendedWatcher,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// Watches `dir` (the state folder) for changes to `files`, and for new
    /// files that `accept` names (a pool's new instance).
    ///
    /// # Errors
    /// When inotify cannot watch the folder.
    pub fn new(dir: &Path, files: Vec<Followed>, accept: Accept) -> io::Result<Follower> {
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |ev| {
            let _ = tx.send(ev);
        })
        .map_err(io::Error::other)?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(io::Error::other)?;
        Ok(Follower {
            files,
            accept,
            rx,
            _watcher: watcher,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Emits every complete line the logs gain, forever: returns when the
    /// output fails (stdout closed) or the watch ends.
    ///
    /// # Errors
    /// The output's errors.
    pub fn run(&mut self, out: &mut Emit<'_>) -> io::Result<()> {
        // Whatever was written between opening the files and watching.
        self.poll(out, None)?;
        out.flush()?;
        while let Ok(ev) = self.rx.recv() {
            // Take every event already queued: one pass over the files for
            // a burst of writes.
            let mut touched: Vec<PathBuf> = Vec::new();
            let mut everything = false;
            let mut events = vec![ev];
            events.extend(self.rx.try_iter());
            for ev in events {
                match ev {
                    Ok(ev) if !ev.paths.is_empty() && !ev.need_rescan() => {
                        for p in ev.paths {
                            self.maybe_add(&p);
                            if !touched.contains(&p) {
                                touched.push(p);
                            }
                        }
                    }
                    // A queue overflow or an unknown event: look at all.
                    _ => everything = true,
                }
            }
            self.poll(out, (!everything).then_some(&touched[..]))?;
            out.flush()?;
        }
        Ok(())
    }

    fn maybe_add(&mut self, p: &Path) {
        // By name: one folder is watched, however its path was spelled.
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        if self
            .files
            .iter()
            .any(|f| f.path.file_name().is_some_and(|n| n == name))
        {
            return;
        }
        if let Some(label) = (self.accept)(name) {
            self.files
                .push(Followed::new(label, p.to_path_buf(), None, 0));
        }
    }

    /// Polls the followed logs named in `touched` (by file name), or all.
    fn poll(&mut self, out: &mut Emit<'_>, touched: Option<&[PathBuf]>) -> io::Result<()> {
        for f in &mut self.files {
            let hit = touched.is_none_or(|t| {
                t.iter()
                    .any(|p| p.file_name().is_some_and(|n| Some(n) == f.path.file_name()))
            });
            if hit {
                f.poll(&mut self.buf, out)?;
            }
        }
        Ok(())
    }
}
