//! One image's numbers: size and compressed size, its layers with the
//! history entry that made each, the bytes later layers overwrite or delete
//! (wasted bytes, whiteouts and opaque directories applied), whether it runs
//! as root, and its largest files.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::archive::FoundImage;
use super::layer::{join_path, EntryKind, LayerScan, Whiteout};

/// The measured facts of one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageAnalysis {
    /// The image as named on the command line (or in its archive).
    pub name: String,
    /// `sha256:` and the hex sha256 of its config: the image id.
    pub id: String,
    /// Sum of its layers' uncompressed tar sizes.
    pub size_bytes: u64,
    /// Sum of its layers gzip-compressed at the default level.
    pub gzip_bytes: u64,
    /// Sum of its layers zstd-compressed.
    pub zstd_bytes: u64,
    /// Its layers, bottom first.
    pub layers: Vec<LayerSummary>,
    /// Bytes of files that a later layer overwrites or deletes.
    pub wasted_bytes: u64,
    /// How many files make up the wasted bytes.
    pub wasted_file_count: u64,
    /// The biggest of those files, biggest first.
    pub wasted_files: Vec<WastedFile>,
    /// The configured user (`""` when none is set).
    pub user: String,
    /// Whether the image runs as root (no user, `0` or `root`).
    pub runs_as_root: bool,
    /// The largest files of its final filesystem, biggest first.
    pub largest_files: Vec<ImageFile>,
    /// The full layer scans, for fleet arithmetic.
    #[serde(skip)]
    pub scans: Vec<Arc<LayerScan>>,
}

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerSummary {
    /// `sha256:` and the hex sha256 of the uncompressed layer tar.
    pub diff_id: String,
    /// Bytes of the uncompressed layer tar.
    pub size_bytes: u64,
    /// Bytes gzip-compressed.
    pub gzip_bytes: u64,
    /// Bytes zstd-compressed.
    pub zstd_bytes: u64,
    /// Entries that are neither directories nor whiteouts.
    pub file_count: u64,
    /// The history entry's `created_by`, when the config records it.
    pub created_by: Option<String>,
}

/// Why a file's bytes are wasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WasteReason {
    /// A later layer puts something else at its path.
    Overwritten,
    /// A later layer deletes it (a whiteout or an opaque directory).
    Deleted,
}

/// A file whose bytes ship but are never seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WastedFile {
    /// Its path.
    pub path: String,
    /// Its content bytes.
    pub size_bytes: u64,
    /// Index of the layer that added it.
    pub layer: usize,
    /// Index of the layer that overwrote or deleted it.
    pub hidden_by_layer: usize,
    /// Overwritten or deleted.
    pub reason: WasteReason,
}

/// A file of the image's final filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    /// Its path.
    pub path: String,
    /// Its content bytes.
    pub size_bytes: u64,
    /// Index of the layer it comes from.
    pub layer: usize,
}

impl ImageAnalysis {
    /// Derives every per-image number from a found image; lists keep the
    /// `top` biggest entries.
    pub fn new(name: String, found: FoundImage, top: usize) -> Self {
        let history = layer_history(&found);
        let layers: Vec<LayerSummary> = found
            .layers
            .iter()
            .enumerate()
            .map(|(index, scan)| LayerSummary {
                diff_id: scan.diff_id.clone(),
                size_bytes: scan.size_bytes,
                gzip_bytes: scan.gzip_bytes,
                zstd_bytes: scan.zstd_bytes,
                file_count: scan.file_count,
                created_by: history.get(index).cloned().flatten(),
            })
            .collect();
        let filesystem = Filesystem::replay(&found.layers);
        let user = configured_user(&found);
        Self {
            name,
            id: found.id,
            size_bytes: layers.iter().map(|l| l.size_bytes).sum(),
            gzip_bytes: layers.iter().map(|l| l.gzip_bytes).sum(),
            zstd_bytes: layers.iter().map(|l| l.zstd_bytes).sum(),
            layers,
            wasted_bytes: filesystem.wasted.iter().map(|w| w.size_bytes).sum(),
            wasted_file_count: filesystem.wasted.len() as u64,
            wasted_files: biggest(filesystem.wasted.clone(), top, |w| w.size_bytes),
            runs_as_root: runs_as_root(&user),
            user,
            largest_files: biggest(filesystem.files(), top, |f| f.size_bytes),
            scans: found.layers,
        }
    }
}

/// The `created_by` of each history entry that made a layer, in order.
fn layer_history(found: &FoundImage) -> Vec<Option<String>> {
    found
        .config
        .history()
        .iter()
        .flatten()
        .filter(|entry| !entry.empty_layer().unwrap_or(false))
        .map(|entry| entry.created_by().clone())
        .collect()
}

fn configured_user(found: &FoundImage) -> String {
    found
        .config
        .config()
        .as_ref()
        .and_then(|config| config.user().clone())
        .unwrap_or_default()
}

/// Whether a configured `user[:group]` means root: empty, `0` or `root`.
pub fn runs_as_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default().trim();
    name.is_empty() || name == "0" || name == "root"
}

fn biggest<T>(mut items: Vec<T>, top: usize, size: impl Fn(&T) -> u64) -> Vec<T> {
    items.sort_by_key(|item| std::cmp::Reverse(size(item)));
    items.truncate(top);
    items
}

/// What a path holds in the filesystem the layers build up.
#[derive(Debug, Clone, Copy)]
struct Live {
    layer: usize,
    size_bytes: u64,
    is_file: bool,
    is_dir: bool,
}

/// The union filesystem, replayed layer by layer, with what got hidden.
#[derive(Debug, Default)]
pub struct Filesystem {
    live: BTreeMap<String, Live>,
    /// Files a later layer overwrote or deleted.
    pub wasted: Vec<WastedFile>,
}

impl Filesystem {
    /// Applies every layer in order: first its whiteouts to what lies below,
    /// then its entries on top.
    pub fn replay(layers: &[Arc<LayerScan>]) -> Self {
        let mut filesystem = Self::default();
        for (index, layer) in layers.iter().enumerate() {
            for whiteout in &layer.whiteouts {
                match whiteout {
                    Whiteout::Path(path) => filesystem.delete(path, index),
                    Whiteout::Opaque(dir) => {
                        filesystem.hide_below(dir, index, WasteReason::Deleted)
                    }
                }
            }
            for entry in &layer.entries {
                filesystem.put(&entry.path, &entry.kind, index);
            }
        }
        filesystem
    }

    /// The regular files that remain visible.
    pub fn files(&self) -> Vec<ImageFile> {
        self.live
            .iter()
            .filter(|(_, live)| live.is_file)
            .map(|(path, live)| ImageFile {
                path: path.clone(),
                size_bytes: live.size_bytes,
                layer: live.layer,
            })
            .collect()
    }

    fn put(&mut self, path: &str, kind: &EntryKind, layer: usize) {
        let live = match kind {
            EntryKind::File { size_bytes, .. } => Live {
                layer,
                size_bytes: *size_bytes,
                is_file: true,
                is_dir: false,
            },
            EntryKind::Directory => Live {
                layer,
                size_bytes: 0,
                is_file: false,
                is_dir: true,
            },
            EntryKind::Other => Live {
                layer,
                size_bytes: 0,
                is_file: false,
                is_dir: false,
            },
        };
        if let Some(old) = self.live.get(path).copied() {
            if old.is_dir && !live.is_dir {
                self.hide_below(path, layer, WasteReason::Overwritten);
            }
            self.waste(path, old, layer, WasteReason::Overwritten);
        }
        self.live.insert(path.to_string(), live);
    }

    fn delete(&mut self, path: &str, layer: usize) {
        self.hide_below(path, layer, WasteReason::Deleted);
        if let Some(old) = self.live.remove(path) {
            self.waste(path, old, layer, WasteReason::Deleted);
        }
    }

    /// Removes everything below `dir` (the whole tree for the root, `""`).
    fn hide_below(&mut self, dir: &str, layer: usize, reason: WasteReason) {
        let prefix = join_path(dir, "");
        let hidden: Vec<String> = self
            .live
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .filter(|(path, _)| !path.is_empty())
            .map(|(path, _)| path.clone())
            .collect();
        for path in hidden {
            if let Some(old) = self.live.remove(&path) {
                self.waste(&path, old, layer, reason);
            }
        }
    }

    fn waste(&mut self, path: &str, old: Live, layer: usize, reason: WasteReason) {
        if old.is_file && old.size_bytes > 0 {
            self.wasted.push(WastedFile {
                path: path.to_string(),
                size_bytes: old.size_bytes,
                layer: old.layer,
                hidden_by_layer: layer,
                reason,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::layer::LayerEntry;

    fn file(path: &str, size_bytes: u64) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind: EntryKind::File {
                size_bytes,
                sha256: [size_bytes as u8; 32],
            },
        }
    }

    fn dir(path: &str) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind: EntryKind::Directory,
        }
    }

    fn layer(entries: Vec<LayerEntry>, whiteouts: Vec<Whiteout>) -> Arc<LayerScan> {
        Arc::new(LayerScan {
            diff_id: String::new(),
            size_bytes: 0,
            gzip_bytes: 0,
            zstd_bytes: 0,
            file_count: 0,
            entries,
            whiteouts,
        })
    }

    fn wasted(layers: &[Arc<LayerScan>]) -> Vec<(String, u64, WasteReason)> {
        let mut wasted: Vec<_> = Filesystem::replay(layers)
            .wasted
            .into_iter()
            .map(|w| (w.path, w.size_bytes, w.reason))
            .collect();
        wasted.sort();
        wasted
    }

    #[test]
    fn an_overwritten_file_wastes_its_old_size() {
        let layers = [
            layer(vec![dir("etc"), file("etc/a", 300)], vec![]),
            layer(vec![file("etc/a", 500)], vec![]),
        ];
        assert_eq!(
            wasted(&layers),
            vec![("etc/a".into(), 300, WasteReason::Overwritten)]
        );
        let files = Filesystem::replay(&layers).files();
        assert_eq!(
            files,
            vec![ImageFile {
                path: "etc/a".into(),
                size_bytes: 500,
                layer: 1
            }]
        );
    }

    #[test]
    fn a_whiteout_deletes_a_directory_and_everything_below_it() {
        let layers = [
            layer(
                vec![dir("d"), file("d/x", 10), file("d/y/z", 20), file("dz", 40)],
                vec![],
            ),
            layer(vec![], vec![Whiteout::Path("d".into())]),
        ];
        assert_eq!(
            wasted(&layers),
            vec![
                ("d/x".into(), 10, WasteReason::Deleted),
                ("d/y/z".into(), 20, WasteReason::Deleted)
            ]
        );
        let files = Filesystem::replay(&layers).files();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].path, "dz");
    }

    #[test]
    fn an_opaque_directory_hides_lower_contents_but_keeps_its_own() {
        let layers = [
            layer(vec![dir("d"), file("d/old", 7), file("keep", 9)], vec![]),
            layer(
                vec![dir("d"), file("d/new", 3)],
                vec![Whiteout::Opaque("d".into())],
            ),
        ];
        assert_eq!(
            wasted(&layers),
            vec![("d/old".into(), 7, WasteReason::Deleted)]
        );
        let paths: Vec<_> = Filesystem::replay(&layers)
            .files()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(paths, vec!["d/new".to_string(), "keep".to_string()]);
    }

    #[test]
    fn a_file_replacing_a_directory_hides_the_directory_contents() {
        let layers = [
            layer(vec![dir("d"), file("d/x", 5)], vec![]),
            layer(vec![file("d", 1)], vec![]),
        ];
        assert_eq!(
            wasted(&layers),
            vec![("d/x".into(), 5, WasteReason::Overwritten)]
        );
    }

    #[test]
    fn root_is_no_user_uid_zero_or_root_with_any_group() {
        for user in ["", "0", "root", "0:0", "root:staff"] {
            assert!(runs_as_root(user), "{user}");
        }
        for user in ["1000", "app", "1000:0", "nobody:root"] {
            assert!(!runs_as_root(user), "{user}");
        }
    }
}
