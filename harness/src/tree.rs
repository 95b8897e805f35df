//! Copies of directory trees that keep what is already equal untouched, so
//! that a compiler's fingerprints (file modification times) see only the
//! files that really changed.

use std::path::{Path, PathBuf};

/// A file operation of a tree copy that failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {path}: {source}")]
pub struct TreeError {
    /// What was being done.
    pub operation: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
}

fn failed(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TreeError {
    let path = path.to_path_buf();
    move |source| TreeError {
        operation,
        path,
        source,
    }
}

/// Brings `to` to the contents of `from`, less the relative paths `skip`
/// names: files whose bytes differ (or that are new) are written, files and
/// directories `from` lacks are removed, equal files keep their modification
/// time. Returns how many files were written. Regular files and directories
/// only; symbolic links are followed.
pub fn sync_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<usize, TreeError> {
    let mut written = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let source_dir = from.join(&relative);
        let target_dir = to.join(&relative);
        std::fs::create_dir_all(&target_dir).map_err(failed("creating", &target_dir))?;
        let mut wanted = std::collections::HashSet::new();
        for entry in std::fs::read_dir(&source_dir).map_err(failed("listing", &source_dir))? {
            let entry = entry.map_err(failed("listing", &source_dir))?;
            let child = relative.join(entry.file_name());
            if skip(&child) {
                continue;
            }
            wanted.insert(entry.file_name());
            let source = entry.path();
            let target = to.join(&child);
            if source.is_dir() {
                if target.is_file() {
                    std::fs::remove_file(&target).map_err(failed("removing", &target))?;
                }
                stack.push(child);
                continue;
            }
            if target.is_dir() {
                std::fs::remove_dir_all(&target).map_err(failed("removing", &target))?;
            }
            let bytes = std::fs::read(&source).map_err(failed("reading", &source))?;
            if std::fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
                std::fs::write(&target, &bytes).map_err(failed("writing", &target))?;
                let permissions = std::fs::metadata(&source)
                    .map_err(failed("reading the permissions of", &source))?
                    .permissions();
                std::fs::set_permissions(&target, permissions)
                    .map_err(failed("setting the permissions of", &target))?;
                written += 1;
            }
        }
        for entry in std::fs::read_dir(&target_dir).map_err(failed("listing", &target_dir))? {
            let entry = entry.map_err(failed("listing", &target_dir))?;
            if wanted.contains(&entry.file_name()) {
                continue;
            }
            let stale = entry.path();
            if stale.is_dir() {
                std::fs::remove_dir_all(&stale).map_err(failed("removing", &stale))?;
            } else {
                std::fs::remove_file(&stale).map_err(failed("removing", &stale))?;
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_second_sync_rewrites_only_the_changed_file_and_removes_the_stale_ones() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        write(&from.path().join("a/same.rs"), "same");
        write(&from.path().join("a/edited.rs"), "old");
        write(&from.path().join("gone.rs"), "gone");
        write(&from.path().join("target/big"), "skipped");
        let skip = |p: &Path| p.starts_with("target");
        assert_eq!(sync_tree(from.path(), to.path(), &skip).unwrap(), 3);
        assert!(!to.path().join("target").exists());

        let same = to.path().join("a/same.rs");
        let old_time = std::fs::metadata(&same).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&from.path().join("a/edited.rs"), "new");
        std::fs::remove_file(from.path().join("gone.rs")).unwrap();

        assert_eq!(sync_tree(from.path(), to.path(), &skip).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(to.path().join("a/edited.rs")).unwrap(),
            "new"
        );
        assert!(!to.path().join("gone.rs").exists());
        assert_eq!(
            std::fs::metadata(&same).unwrap().modified().unwrap(),
            old_time
        );
    }
}
