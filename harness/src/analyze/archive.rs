//! Image archives: a docker-archive (what `docker save` writes) or an OCI
//! image layout, as one tar stream or as a directory. Finds every image's
//! config and layers, scans each layer exactly once and checks each layer's
//! diff id against the config.

use std::collections::HashMap;
use std::fmt::Display;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::layer::{normalize_path, scan_layer, LayerScan};
use super::AnalyzeError;

/// Entries up to this size are kept in memory until the manifest says what
/// they are; bigger ones are scanned as layers while they stream past.
const SMALL_ENTRY_BYTES: u64 = 4 << 20;
/// Annotations that carry an image's name in an OCI index.
const NAME_ANNOTATIONS: [&str; 2] = [
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

/// One image found in an archive.
#[derive(Debug, Clone)]
pub struct FoundImage {
    /// The name the archive gives it (a repo tag), if any.
    pub name: Option<String>,
    /// `sha256:` and the hex sha256 of its config: the image id.
    pub id: String,
    /// Its configuration.
    pub config: ImageConfiguration,
    /// Its layers, bottom first.
    pub layers: Vec<Arc<LayerScan>>,
}

/// A problem with one object of an archive, before the archive is named.
#[derive(Debug)]
struct Problem {
    object: String,
    problem: String,
}

fn problem(object: impl Into<String>, problem: impl Display) -> Problem {
    Problem {
        object: object.into(),
        problem: problem.to_string(),
    }
}

impl Problem {
    fn in_archive(self, origin: &str) -> AnalyzeError {
        AnalyzeError::Read {
            origin: origin.to_string(),
            object: self.object,
            problem: self.problem,
        }
    }
}

/// An image as a manifest describes it, before its layers are looked at.
struct Recipe {
    name: Option<String>,
    config_path: String,
    layer_paths: Vec<String>,
}

/// Reads small files of an archive: manifests, indexes, configs.
trait Blobs {
    fn small(&self, path: &str) -> Result<Option<Vec<u8>>, Problem>;
}

/// Reads every image of an archive given as one tar stream, in one pass.
pub fn read_tar_stream(reader: impl Read, origin: &str) -> Result<Vec<FoundImage>, AnalyzeError> {
    let contents = TarContents::walk(reader).map_err(|p| p.in_archive(origin))?;
    let recipes = find_recipes(&contents).map_err(|p| p.in_archive(origin))?;
    recipes
        .into_iter()
        .map(|recipe| {
            let layers = recipe
                .layer_paths
                .iter()
                .map(|path| contents.layer(path))
                .collect::<Result<Vec<_>, _>>()?;
            assemble(&contents, recipe, layers)
        })
        .collect::<Result<_, _>>()
        .map_err(|p| p.in_archive(origin))
}

/// Reads every image of an OCI layout (or extracted docker-archive)
/// directory, scanning distinct layers in parallel.
pub fn read_directory(dir: &Path, origin: &str) -> Result<Vec<FoundImage>, AnalyzeError> {
    let blobs = DirBlobs(dir.to_path_buf());
    let recipes = find_recipes(&blobs).map_err(|p| p.in_archive(origin))?;
    let mut paths: Vec<String> = recipes
        .iter()
        .flat_map(|r| r.layer_paths.iter().cloned())
        .collect();
    paths.sort();
    paths.dedup();
    let scans = scan_files_in_parallel(dir, &paths).map_err(|p| p.in_archive(origin))?;
    recipes
        .into_iter()
        .map(|recipe| {
            let layers = recipe
                .layer_paths
                .iter()
                .map(|p| Arc::clone(&scans[p]))
                .collect();
            assemble(&blobs, recipe, layers)
        })
        .collect::<Result<_, _>>()
        .map_err(|p| p.in_archive(origin))
}

/// Parses the config and checks that the layers are the ones it lists.
fn assemble(
    blobs: &dyn Blobs,
    recipe: Recipe,
    layers: Vec<Arc<LayerScan>>,
) -> Result<FoundImage, Problem> {
    let config_bytes = blobs
        .small(&recipe.config_path)?
        .ok_or_else(|| problem(&recipe.config_path, "listed in the manifest but missing"))?;
    let config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|e| problem(&recipe.config_path, format!("not an image config: {e}")))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(problem(
            &recipe.config_path,
            format!(
                "lists {} diff ids but the manifest lists {} layers",
                diff_ids.len(),
                layers.len()
            ),
        ));
    }
    for ((path, scan), expected) in recipe.layer_paths.iter().zip(&layers).zip(diff_ids) {
        if &scan.diff_id != expected {
            return Err(problem(
                format!("layer {path}"),
                format!(
                    "content hashes to {} but the config says {expected}: the layer is corrupted",
                    scan.diff_id
                ),
            ));
        }
    }
    Ok(FoundImage {
        name: recipe.name,
        id: format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes))),
        config,
        layers,
    })
}

/// A docker-archive when `manifest.json` is present (newer engines write it
/// beside the OCI files too), else an OCI layout.
fn find_recipes(blobs: &dyn Blobs) -> Result<Vec<Recipe>, Problem> {
    if let Some(bytes) = blobs.small("manifest.json")? {
        return docker_recipes(&bytes);
    }
    if let Some(bytes) = blobs.small("index.json")? {
        let index = ImageIndex::from_reader(&bytes[..])
            .map_err(|e| problem("index.json", format!("not an OCI index: {e}")))?;
        let mut recipes = Vec::new();
        oci_recipes(blobs, &index, None, &mut recipes)?;
        return Ok(recipes);
    }
    Err(problem(
        "the archive",
        "has neither manifest.json (docker-archive) nor index.json (OCI layout); \
         is it truncated or not an image archive?",
    ))
}

/// One image of a docker-archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_recipes(manifest: &[u8]) -> Result<Vec<Recipe>, Problem> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(manifest).map_err(|e| {
        problem(
            "manifest.json",
            format!("not a docker-archive manifest: {e}"),
        )
    })?;
    Ok(entries
        .into_iter()
        .map(|entry| Recipe {
            name: entry.repo_tags.and_then(|tags| tags.into_iter().next()),
            config_path: normalize_path(&entry.config),
            layer_paths: entry.layers.iter().map(|l| normalize_path(l)).collect(),
        })
        .collect())
}

/// Walks an index, following nested indexes, and collects its images.
fn oci_recipes(
    blobs: &dyn Blobs,
    index: &ImageIndex,
    inherited_name: Option<&str>,
    recipes: &mut Vec<Recipe>,
) -> Result<(), Problem> {
    for descriptor in index.manifests() {
        let name = descriptor_name(descriptor).or(inherited_name.map(str::to_string));
        let path = blob_path(descriptor);
        let bytes = blobs
            .small(&path)?
            .ok_or_else(|| problem(&path, "listed in the index but missing"))?;
        let media_type = descriptor.media_type().to_string();
        if media_type.contains("index") || media_type.contains("manifest.list") {
            let nested = ImageIndex::from_reader(&bytes[..])
                .map_err(|e| problem(&path, format!("not an OCI index: {e}")))?;
            oci_recipes(blobs, &nested, name.as_deref(), recipes)?;
            continue;
        }
        let manifest = ImageManifest::from_reader(&bytes[..])
            .map_err(|e| problem(&path, format!("not an OCI manifest: {e}")))?;
        recipes.push(Recipe {
            name,
            config_path: blob_path(manifest.config()),
            layer_paths: manifest.layers().iter().map(blob_path).collect(),
        });
    }
    Ok(())
}

fn descriptor_name(descriptor: &Descriptor) -> Option<String> {
    let annotations = descriptor.annotations().as_ref()?;
    NAME_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.get(*key).cloned())
}

/// Where a layout keeps the blob a descriptor points to.
fn blob_path(descriptor: &Descriptor) -> String {
    let digest = descriptor.digest();
    format!("blobs/{}/{}", digest.algorithm(), digest.digest())
}

/// What a single pass over a tar stream keeps.
#[derive(Default)]
struct TarContents {
    small: HashMap<String, Vec<u8>>,
    scanned: HashMap<String, Arc<LayerScan>>,
    links: HashMap<String, String>,
}

impl Blobs for TarContents {
    fn small(&self, path: &str) -> Result<Option<Vec<u8>>, Problem> {
        Ok(self.small.get(self.resolve(path)).cloned())
    }
}

impl TarContents {
    fn walk(reader: impl Read) -> Result<Self, Problem> {
        let mut contents = Self::default();
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| problem("the archive", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| problem("the archive", tar_problem(e)))?;
            let path = normalize_path(
                &entry
                    .path()
                    .map_err(|e| problem("the archive", e))?
                    .to_string_lossy(),
            );
            match entry.header().entry_type() {
                tar::EntryType::Directory => {}
                tar::EntryType::Symlink | tar::EntryType::Link => contents.add_link(&path, &entry),
                _ => contents.add_file(path, &mut entry)?,
            }
        }
        Ok(contents)
    }

    fn add_file(
        &mut self,
        path: String,
        entry: &mut tar::Entry<'_, impl Read>,
    ) -> Result<(), Problem> {
        let size_bytes = entry.size();
        if path.ends_with("layer.tar") || size_bytes > SMALL_ENTRY_BYTES {
            tracing::debug!(layer = %path, size_bytes, "scanning layer");
            let scan =
                scan_entry(entry, size_bytes).map_err(|e| problem(format!("layer {path}"), e))?;
            self.scanned.insert(path, Arc::new(scan));
        } else {
            let mut bytes = Vec::with_capacity(size_bytes as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| problem(&path, e))?;
            if (bytes.len() as u64) < size_bytes {
                return Err(problem(path, truncated(bytes.len() as u64, size_bytes)));
            }
            self.small.insert(path, bytes);
        }
        Ok(())
    }

    /// Records a link (docker-archives link a layer used twice to its first
    /// copy), resolved relative to the link's directory.
    fn add_link(&mut self, path: &str, entry: &tar::Entry<'_, impl Read>) {
        let Ok(Some(target)) = entry.link_name() else {
            return;
        };
        let target = target.to_string_lossy();
        let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
        let mut parts: Vec<&str> = if target.starts_with('/') {
            Vec::new()
        } else {
            parent.split('/').filter(|p| !p.is_empty()).collect()
        };
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                part => parts.push(part),
            }
        }
        self.links.insert(path.to_string(), parts.join("/"));
    }

    fn resolve<'a>(&'a self, path: &'a str) -> &'a str {
        self.links.get(path).map_or(path, String::as_str)
    }

    /// The scan of the layer at `path`, scanning it now if it was small.
    fn layer(&self, path: &str) -> Result<Arc<LayerScan>, Problem> {
        let target = self.resolve(path);
        if let Some(scan) = self.scanned.get(target) {
            return Ok(Arc::clone(scan));
        }
        let bytes = self.small.get(target).ok_or_else(|| {
            problem(
                format!("layer {path}"),
                "listed in the manifest but missing from the archive (is it truncated?)",
            )
        })?;
        scan_layer(&bytes[..])
            .map(Arc::new)
            .map_err(|e| problem(format!("layer {path}"), e))
    }
}

/// Scans a layer entry, telling a cut-off archive from a broken layer.
fn scan_entry(entry: &mut impl Read, size_bytes: u64) -> Result<LayerScan, String> {
    let mut counted = CountingReader {
        inner: entry,
        bytes: 0,
    };
    let scanned = scan_layer(&mut counted);
    if scanned.is_err() {
        let _ = io::copy(&mut counted, &mut io::sink());
    }
    if counted.bytes < size_bytes {
        return Err(truncated(counted.bytes, size_bytes));
    }
    scanned.map_err(|e| e.to_string())
}

fn truncated(read_bytes: u64, size_bytes: u64) -> String {
    format!("unexpected end of archive after {read_bytes} of {size_bytes} bytes")
}

/// The tar crate says "failed to read entire block" when a header is cut off.
fn tar_problem(error: io::Error) -> String {
    if error.kind() == io::ErrorKind::UnexpectedEof || error.to_string().contains("entire block") {
        format!("unexpected end of archive ({error})")
    } else {
        error.to_string()
    }
}

struct CountingReader<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Blobs of a layout directory, read from their files.
struct DirBlobs(PathBuf);

impl Blobs for DirBlobs {
    fn small(&self, path: &str) -> Result<Option<Vec<u8>>, Problem> {
        match std::fs::read(self.0.join(path)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(problem(path, e)),
        }
    }
}

/// Scans the layer files, as many at once as there are cores.
fn scan_files_in_parallel(
    dir: &Path,
    paths: &[String],
) -> Result<HashMap<String, Arc<LayerScan>>, Problem> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, paths.len().max(1));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(paths.len()));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let scanned =
                        scan_file(&dir.join(path)).map_err(|e| problem(format!("layer {path}"), e));
                    results
                        .lock()
                        .expect("no scan panics while holding the lock")
                        .push((path.clone(), scanned));
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no scan panicked while holding the lock")
        .into_iter()
        .map(|(path, scanned)| scanned.map(|scan| (path, Arc::new(scan))))
        .collect()
}

fn scan_file(path: &Path) -> Result<LayerScan, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening: {e}"))?;
    let size_bytes = file.metadata().map_err(|e| e.to_string())?.len();
    scan_entry(&mut io::BufReader::new(file), size_bytes)
}
