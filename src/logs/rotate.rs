//! Size rotation: the names of rotated files and the rename chain.
//!
//! Owns: `<name>.log` → `<name>.log.1` → … → `<name>.log.<keep>`, deleting
//! what falls beyond `keep`. Must not touch: deciding *when* to rotate (the
//! sink does that, only at line boundaries) or file contents.
//!
//! Rotation renames, never copies and truncates: a reader that holds the old
//! file open (`stackctl logs -f`) reads it to its end and then moves to the
//! new one, so nothing is missed or read twice.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// `<path>.<i>` (`api.log.1`); `i == 0` is `path` itself.
pub fn rotated_path(path: &Path, i: u32) -> PathBuf {
    if i == 0 {
        return path.to_path_buf();
    }
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Shifts `path` to `path.1`, `path.1` to `path.2`, …, keeping at most
/// `keep` rotated files; with `keep == 0` the current file is just removed.
/// Afterwards `path` does not exist; the caller creates it.
///
/// # Errors
/// The first rename (or removal) that fails for a reason other than the
/// file not being there; older files may already have moved one step, which
/// loses nothing.
pub fn shift(path: &Path, keep: u32) -> io::Result<()> {
    // Files beyond `keep` (left by a larger `keep` earlier) go first.
    let mut i = keep.saturating_add(1);
    loop {
        let p = rotated_path(path, i);
        match std::fs::remove_file(&p) {
            Ok(()) => i += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    if keep == 0 {
        return ignore_missing(std::fs::remove_file(path));
    }
    for i in (1..keep).rev() {
        ignore_missing(std::fs::rename(
            rotated_path(path, i),
            rotated_path(path, i + 1),
        ))?;
    }
    ignore_missing(std::fs::rename(path, rotated_path(path, 1)))
}

/// The rotated files that exist, newest first (`.log.1`, `.log.2`, …),
/// up to the first gap.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    (1..)
        .map(|i| rotated_path(path, i))
        .take_while(|p| p.exists())
        .collect()
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = Path::new("/x/api.log");
        assert_eq!(rotated_path(p, 0), Path::new("/x/api.log"));
        assert_eq!(rotated_path(p, 3), Path::new("/x/api.log.3"));
    }

    #[test]
    fn shift_keeps_at_most_keep() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        for round in 0..5 {
            std::fs::write(&p, format!("{round}")).unwrap();
            shift(&p, 2).unwrap();
            assert!(!p.exists());
        }
        assert_eq!(std::fs::read_to_string(rotated_path(&p, 1)).unwrap(), "4");
        assert_eq!(std::fs::read_to_string(rotated_path(&p, 2)).unwrap(), "3");
        assert!(!rotated_path(&p, 3).exists());
        // A smaller keep later removes the surplus.
        std::fs::write(&p, "5").unwrap();
        shift(&p, 1).unwrap();
        assert_eq!(std::fs::read_to_string(rotated_path(&p, 1)).unwrap(), "5");
        assert!(!rotated_path(&p, 2).exists());
        std::fs::write(&p, "6").unwrap();
        shift(&p, 0).unwrap();
        assert!(!p.exists());
    }
}
