//! Docker build contexts written as tar files, with fixed timestamps and
//! ownership so that the same inputs always give the same context bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Errors while writing a build context.
#[derive(Debug, thiserror::Error)]
#[error("writing build context {context}: adding {entry}: {source}")]
pub struct ContextError {
    /// The context tar file.
    pub context: PathBuf,
    /// The entry being added.
    pub entry: String,
    /// The error.
    pub source: std::io::Error,
}

/// A build context being written to a tar file.
pub struct ContextTar {
    path: PathBuf,
    builder: tar::Builder<BufWriter<File>>,
    mtime: u64,
}

impl ContextTar {
    /// Starts a context at `path`; every entry gets `mtime` as its time.
    pub fn create(path: &Path, mtime: u64) -> Result<Self, ContextError> {
        let file = File::create(path).map_err(|source| ContextError {
            context: path.to_path_buf(),
            entry: "(the tar file itself)".into(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            builder: tar::Builder::new(BufWriter::new(file)),
            mtime,
        })
    }

    fn error(&self, entry: &str) -> impl FnOnce(std::io::Error) -> ContextError {
        let context = self.path.clone();
        let entry = entry.to_string();
        move |source| ContextError {
            context,
            entry,
            source,
        }
    }

    fn header(&self, size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    /// Adds `bytes` as the file `name` with permission bits `mode`.
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8], mode: u32) -> Result<(), ContextError> {
        let mut header = self.header(bytes.len() as u64, mode, tar::EntryType::Regular);
        let err = self.error(name);
        self.builder
            .append_data(&mut header, name, bytes)
            .map_err(err)
    }

    /// Adds the host file `source` as `name`, keeping its permission bits.
    pub fn add_file(&mut self, name: &str, source: &Path) -> Result<(), ContextError> {
        use std::os::unix::fs::PermissionsExt;
        let entry = format!("{name} (from {})", source.display());
        let file = File::open(source).map_err(self.error(&entry))?;
        let meta = file.metadata().map_err(self.error(&entry))?;
        let mut header = self.header(
            meta.len(),
            meta.permissions().mode() & 0o7777,
            tar::EntryType::Regular,
        );
        let err = self.error(&entry);
        self.builder
            .append_data(&mut header, name, file)
            .map_err(err)
    }

    /// Adds the host directory `source` below `name`, recursively, keeping
    /// symbolic links as links; `skip` drops paths relative to `source`.
    pub fn add_dir(
        &mut self,
        name: &str,
        source: &Path,
        skip: &dyn Fn(&Path) -> bool,
    ) -> Result<(), ContextError> {
        let mut stack = vec![PathBuf::new()];
        while let Some(relative) = stack.pop() {
            let host = source.join(&relative);
            let mut children: Vec<_> = std::fs::read_dir(&host)
                .map_err(self.error(&host.display().to_string()))?
                .collect::<Result<_, _>>()
                .map_err(self.error(&host.display().to_string()))?;
            children.sort_by_key(|entry| entry.file_name());
            for child in children {
                let child_relative = relative.join(child.file_name());
                if skip(&child_relative) {
                    continue;
                }
                let target = format!("{name}/{}", child_relative.display());
                let kind = child.file_type().map_err(self.error(&target))?;
                if kind.is_dir() {
                    let mut header = self.header(0, 0o755, tar::EntryType::Directory);
                    let err = self.error(&target);
                    self.builder
                        .append_data(&mut header, &target, std::io::empty())
                        .map_err(err)?;
                    stack.push(child_relative);
                } else if kind.is_symlink() {
                    let link = std::fs::read_link(child.path()).map_err(self.error(&target))?;
                    let mut header = self.header(0, 0o777, tar::EntryType::Symlink);
                    let err = self.error(&target);
                    self.builder
                        .append_link(&mut header, &target, &link)
                        .map_err(err)?;
                } else {
                    self.add_file(&target, &child.path())?;
                }
            }
        }
        Ok(())
    }

    /// Writes the end of the archive and closes the file.
    pub fn finish(self) -> Result<PathBuf, ContextError> {
        let Self { path, builder, .. } = self;
        let fail = |source| ContextError {
            context: path.clone(),
            entry: "(end of archive)".into(),
            source,
        };
        let mut writer = builder.into_inner().map_err(fail)?;
        writer.flush().map_err(fail)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path) -> Vec<(String, u64, u32)> {
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    entry.path().unwrap().display().to_string(),
                    header.mtime().unwrap(),
                    header.mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_same_inputs_give_byte_identical_contexts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/a")).unwrap();
        std::fs::write(dir.path().join("src/a/x.txt"), "x").unwrap();
        std::fs::write(dir.path().join("src/b.txt"), "b").unwrap();
        let write = |name: &str| {
            let mut tar = ContextTar::create(&dir.path().join(name), 42).unwrap();
            tar.add_bytes("Dockerfile", b"FROM scratch\n", 0o644)
                .unwrap();
            tar.add_dir("src", &dir.path().join("src"), &|_| false)
                .unwrap();
            std::fs::read(tar.finish().unwrap()).unwrap()
        };
        assert_eq!(write("one.tar"), write("two.tar"));
    }

    #[test]
    fn skipped_paths_are_left_out_and_times_are_fixed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/share/doc")).unwrap();
        std::fs::write(dir.path().join("src/share/doc/readme"), "r").unwrap();
        std::fs::write(dir.path().join("src/keep"), "k").unwrap();
        let mut tar = ContextTar::create(&dir.path().join("c.tar"), 7).unwrap();
        tar.add_dir("rust", &dir.path().join("src"), &|p| {
            p.starts_with("share/doc")
        })
        .unwrap();
        let path = tar.finish().unwrap();
        let names: Vec<_> = entries(&path).into_iter().map(|e| e.0).collect();
        assert!(names.contains(&"rust/keep".to_string()), "{names:?}");
        assert!(names.iter().all(|n| !n.contains("doc")), "{names:?}");
        assert!(entries(&path).iter().all(|e| e.1 == 7));
    }
}
