//! A fleet's numbers: naive, stored and transfer sizes, what each image
//! shares with the others, content duplicated across distinct layers, the
//! cost of a node that runs a subset of the images, and the bytes a node
//! pulls when one image set replaces another.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::image::ImageAnalysis;
use super::layer::{EntryKind, LayerScan};

/// The measured facts of a set of images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetAnalysis {
    /// Sum of the sizes of all images.
    pub naive_bytes: u64,
    /// Bytes of the distinct layers (by diff id).
    pub stored_bytes: u64,
    /// Distinct layers gzip-compressed: what a fresh node pulls.
    pub transfer_gzip_bytes: u64,
    /// Distinct layers zstd-compressed.
    pub transfer_zstd_bytes: u64,
    /// Number of distinct layers.
    pub distinct_layers: usize,
    /// Shared and unique bytes of each image.
    pub sharing: Vec<ImageSharing>,
    /// Bytes of file content present in more than one distinct layer,
    /// counting every copy after the first.
    pub duplicate_bytes: u64,
    /// The biggest duplicated contents, biggest first.
    pub duplicates: Vec<DuplicateContent>,
}

/// How much of an image is in layers other images use too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSharing {
    /// The image.
    pub image: String,
    /// Bytes in layers another image of the fleet also uses.
    pub shared_bytes: u64,
    /// Bytes in layers only this image uses.
    pub unique_bytes: u64,
}

/// One file content found in several distinct layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateContent {
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Bytes of one copy.
    pub size_bytes: u64,
    /// Distinct layers holding it.
    pub layer_count: usize,
    /// `size_bytes` times (`layer_count` - 1).
    pub duplicate_bytes: u64,
    /// The paths it has, sorted.
    pub paths: Vec<String>,
    /// The images whose layers hold it, sorted.
    pub images: Vec<String>,
}

/// What a node running some images stores and pulls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCost {
    /// The images the node runs.
    pub images: Vec<String>,
    /// Distinct layers among them.
    pub layer_count: usize,
    /// Bytes of those layers, uncompressed.
    pub stored_bytes: u64,
    /// Bytes of those layers, gzip-compressed.
    pub transfer_gzip_bytes: u64,
    /// Bytes of those layers, zstd-compressed.
    pub transfer_zstd_bytes: u64,
}

/// What a node that holds one image set pulls to get another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullCost {
    /// Diff ids of the layers of `after` that `before` lacks.
    pub new_layers: Vec<String>,
    /// Their bytes, uncompressed.
    pub size_bytes: u64,
    /// Their bytes, gzip-compressed.
    pub gzip_bytes: u64,
    /// Their bytes, zstd-compressed.
    pub zstd_bytes: u64,
}

impl FleetAnalysis {
    /// Computes the fleet numbers; `duplicates` keeps the `top` biggest.
    pub fn new(images: &[ImageAnalysis], top: usize) -> Self {
        let layers = distinct_layers(images.iter());
        let (duplicate_bytes, mut duplicates) = duplicates(images);
        duplicates.truncate(top);
        Self {
            naive_bytes: images.iter().map(|i| i.size_bytes).sum(),
            stored_bytes: layers.values().map(|l| l.size_bytes).sum(),
            transfer_gzip_bytes: layers.values().map(|l| l.gzip_bytes).sum(),
            transfer_zstd_bytes: layers.values().map(|l| l.zstd_bytes).sum(),
            distinct_layers: layers.len(),
            sharing: sharing(images),
            duplicate_bytes,
            duplicates,
        }
    }
}

/// The distinct layers of some images, by diff id.
fn distinct_layers<'a>(
    images: impl Iterator<Item = &'a ImageAnalysis>,
) -> HashMap<&'a str, &'a LayerScan> {
    images
        .flat_map(|image| image.scans.iter())
        .map(|scan| (scan.diff_id.as_str(), scan.as_ref()))
        .collect()
}

fn sharing(images: &[ImageAnalysis]) -> Vec<ImageSharing> {
    let mut users: HashMap<&str, HashSet<usize>> = HashMap::new();
    for (index, image) in images.iter().enumerate() {
        for scan in &image.scans {
            users.entry(&scan.diff_id).or_default().insert(index);
        }
    }
    images
        .iter()
        .map(|image| {
            let (shared, unique): (Vec<_>, Vec<_>) = image
                .scans
                .iter()
                .partition(|scan| users[scan.diff_id.as_str()].len() > 1);
            ImageSharing {
                image: image.name.clone(),
                shared_bytes: shared.iter().map(|s| s.size_bytes).sum(),
                unique_bytes: unique.iter().map(|s| s.size_bytes).sum(),
            }
        })
        .collect()
}

/// Where one content hash was seen.
#[derive(Default)]
struct Sightings<'a> {
    size_bytes: u64,
    layers: BTreeSet<&'a str>,
    paths: BTreeSet<&'a str>,
    images: BTreeSet<&'a str>,
}

/// Total duplicate bytes, and every duplicated content, biggest first.
fn duplicates(images: &[ImageAnalysis]) -> (u64, Vec<DuplicateContent>) {
    let mut seen: HashMap<&[u8; 32], Sightings> = HashMap::new();
    for image in images {
        for scan in &image.scans {
            for entry in &scan.entries {
                let EntryKind::File { size_bytes, sha256 } = &entry.kind else {
                    continue;
                };
                if *size_bytes == 0 {
                    continue;
                }
                let sightings = seen.entry(sha256).or_default();
                sightings.size_bytes = *size_bytes;
                sightings.layers.insert(&scan.diff_id);
                sightings.paths.insert(&entry.path);
                sightings.images.insert(&image.name);
            }
        }
    }
    let mut found: Vec<DuplicateContent> = seen
        .into_iter()
        .filter(|(_, s)| s.layers.len() > 1)
        .map(|(sha256, s)| DuplicateContent {
            sha256: hex::encode(sha256),
            size_bytes: s.size_bytes,
            layer_count: s.layers.len(),
            duplicate_bytes: s.size_bytes * (s.layers.len() as u64 - 1),
            paths: s.paths.into_iter().map(str::to_string).collect(),
            images: s.images.into_iter().map(str::to_string).collect(),
        })
        .collect();
    found.sort_by(|a, b| {
        b.duplicate_bytes
            .cmp(&a.duplicate_bytes)
            .then(a.sha256.cmp(&b.sha256))
    });
    (found.iter().map(|d| d.duplicate_bytes).sum(), found)
}

/// What a node that runs exactly `images` stores and pulls from scratch.
pub fn node_cost<'a>(images: impl IntoIterator<Item = &'a ImageAnalysis>) -> NodeCost {
    let images: Vec<&ImageAnalysis> = images.into_iter().collect();
    let layers = distinct_layers(images.iter().copied());
    NodeCost {
        images: images.iter().map(|i| i.name.clone()).collect(),
        layer_count: layers.len(),
        stored_bytes: layers.values().map(|l| l.size_bytes).sum(),
        transfer_gzip_bytes: layers.values().map(|l| l.gzip_bytes).sum(),
        transfer_zstd_bytes: layers.values().map(|l| l.zstd_bytes).sum(),
    }
}

/// The layers a node holding `before` must pull to run `after`: those of
/// `after` whose diff id no image of `before` has.
pub fn pull_after_change<'a>(
    before: impl IntoIterator<Item = &'a ImageAnalysis>,
    after: impl IntoIterator<Item = &'a ImageAnalysis>,
) -> PullCost {
    let held: HashSet<&str> = before
        .into_iter()
        .flat_map(|image| image.scans.iter().map(|s| s.diff_id.as_str()))
        .collect();
    let mut new_layers: Vec<&LayerScan> = distinct_layers(after.into_iter())
        .into_values()
        .filter(|layer| !held.contains(layer.diff_id.as_str()))
        .collect();
    new_layers.sort_by(|a, b| a.diff_id.cmp(&b.diff_id));
    PullCost {
        new_layers: new_layers.iter().map(|l| l.diff_id.clone()).collect(),
        size_bytes: new_layers.iter().map(|l| l.size_bytes).sum(),
        gzip_bytes: new_layers.iter().map(|l| l.gzip_bytes).sum(),
        zstd_bytes: new_layers.iter().map(|l| l.zstd_bytes).sum(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::analyze::layer::LayerEntry;

    fn layer(diff_id: &str, size_bytes: u64, files: &[(&str, u8, u64)]) -> Arc<LayerScan> {
        Arc::new(LayerScan {
            diff_id: diff_id.into(),
            size_bytes,
            gzip_bytes: size_bytes / 2,
            zstd_bytes: size_bytes / 3,
            file_count: files.len() as u64,
            entries: files
                .iter()
                .map(|(path, content, size_bytes)| LayerEntry {
                    path: path.to_string(),
                    kind: EntryKind::File {
                        size_bytes: *size_bytes,
                        sha256: [*content; 32],
                    },
                })
                .collect(),
            whiteouts: vec![],
        })
    }

    fn image(name: &str, scans: Vec<Arc<LayerScan>>) -> ImageAnalysis {
        ImageAnalysis {
            name: name.into(),
            id: String::new(),
            size_bytes: scans.iter().map(|s| s.size_bytes).sum(),
            gzip_bytes: 0,
            zstd_bytes: 0,
            layers: vec![],
            wasted_bytes: 0,
            wasted_file_count: 0,
            wasted_files: vec![],
            user: String::new(),
            runs_as_root: true,
            largest_files: vec![],
            scans,
        }
    }

    fn two_on_a_base() -> Vec<ImageAnalysis> {
        let base = layer("base", 600, &[("lib/a", 1, 500)]);
        vec![
            image(
                "a",
                vec![Arc::clone(&base), layer("a", 90, &[("bin/x", 2, 80)])],
            ),
            image("b", vec![base, layer("b", 60, &[("opt/x", 2, 80)])]),
        ]
    }

    #[test]
    fn a_shared_base_is_stored_once() {
        let fleet = FleetAnalysis::new(&two_on_a_base(), 10);
        assert_eq!(fleet.naive_bytes, 1350);
        assert_eq!(fleet.stored_bytes, 750);
        assert_eq!(fleet.transfer_gzip_bytes, 300 + 45 + 30);
        assert_eq!(fleet.distinct_layers, 3);
        assert_eq!(
            fleet.sharing[0],
            ImageSharing {
                image: "a".into(),
                shared_bytes: 600,
                unique_bytes: 90
            }
        );
    }

    #[test]
    fn the_same_content_in_two_layers_is_duplicate_once() {
        let fleet = FleetAnalysis::new(&two_on_a_base(), 10);
        assert_eq!(fleet.duplicate_bytes, 80);
        assert_eq!(fleet.duplicates.len(), 1);
        assert_eq!(fleet.duplicates[0].paths, vec!["bin/x", "opt/x"]);
        assert_eq!(fleet.duplicates[0].images, vec!["a", "b"]);
    }

    #[test]
    fn a_change_pulls_only_the_layers_the_node_lacks() {
        let images = two_on_a_base();
        let pull = pull_after_change([&images[0]], [&images[1]]);
        assert_eq!(pull.new_layers, vec!["b".to_string()]);
        assert_eq!(
            (pull.size_bytes, pull.gzip_bytes, pull.zstd_bytes),
            (60, 30, 20)
        );
        let node = node_cost([&images[1]]);
        assert_eq!((node.layer_count, node.stored_bytes), (2, 660));
    }
}
