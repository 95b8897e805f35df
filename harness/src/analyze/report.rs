//! The result of `fleetbench analyze`: one versioned JSON document, and the
//! same content as terminal tables.

use std::collections::HashMap;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde::{Deserialize, Serialize};

use super::fleet::{node_cost, pull_after_change, FleetAnalysis, NodeCost, PullCost};
use super::image::ImageAnalysis;
use super::AnalyzeError;
use crate::units::format_bytes;

/// Version of the JSON layout; raised whenever a field changes meaning or
/// disappears.
pub const SCHEMA_VERSION: u32 = 1;
/// Characters of a history entry shown in a table cell.
const CREATED_BY_CHARS: usize = 60;

/// Everything one analysis found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalyzeReport {
    /// Always [`SCHEMA_VERSION`] for this layout.
    pub schema_version: u32,
    /// Every image analysed.
    pub images: Vec<ImageAnalysis>,
    /// The fleet made of the images named on the command line.
    pub fleet: FleetAnalysis,
    /// The cost of a node per requested subset.
    pub subsets: Vec<NodeCost>,
    /// The bytes to pull going from `--before` to `--after`, when asked.
    pub pull_after_change: Option<PullCost>,
}

/// What to compute beyond the per-image and fleet numbers.
#[derive(Debug, Clone, Default)]
pub struct ReportRequest {
    /// Names of the fleet's images.
    pub fleet: Vec<String>,
    /// Subsets of image names to cost as nodes.
    pub subsets: Vec<Vec<String>>,
    /// Image names a node holds before a change.
    pub before: Vec<String>,
    /// Image names the node runs after it.
    pub after: Vec<String>,
    /// How many entries lists keep.
    pub top: usize,
}

impl AnalyzeReport {
    /// Builds the report from analysed images, looked up by name.
    pub fn build(
        images: Vec<ImageAnalysis>,
        request: &ReportRequest,
    ) -> Result<Self, AnalyzeError> {
        let by_name: HashMap<&str, &ImageAnalysis> =
            images.iter().map(|i| (i.name.as_str(), i)).collect();
        let pick = |names: &[String], option| lookup(&by_name, names, option);
        let fleet: Vec<ImageAnalysis> = pick(&request.fleet, "the fleet")?
            .into_iter()
            .cloned()
            .collect();
        let subsets = request
            .subsets
            .iter()
            .map(|subset| Ok(node_cost(pick(subset, "--subset")?)))
            .collect::<Result<_, AnalyzeError>>()?;
        let pull = if request.before.is_empty() && request.after.is_empty() {
            None
        } else {
            Some(pull_after_change(
                pick(&request.before, "--before")?,
                pick(&request.after, "--after")?,
            ))
        };
        let fleet = FleetAnalysis::new(&fleet, request.top);
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            images,
            fleet,
            subsets,
            pull_after_change: pull,
        })
    }

    /// The report as titled terminal tables, lists cut to `top` rows.
    pub fn tables(&self, top: usize) -> Vec<(String, Table)> {
        let mut tables = vec![("Images".to_string(), images_table(&self.images))];
        for image in &self.images {
            tables.push((format!("Layers of {}", image.name), layers_table(image)));
            if !image.wasted_files.is_empty() {
                tables.push((
                    format!("Wasted files of {}", image.name),
                    wasted_table(image, top),
                ));
            }
            tables.push((
                format!("Largest files of {}", image.name),
                largest_table(image, top),
            ));
        }
        tables.push(("Fleet".to_string(), fleet_table(&self.fleet)));
        tables.push(("Sharing".to_string(), sharing_table(&self.fleet)));
        if !self.fleet.duplicates.is_empty() {
            tables.push((
                "Duplicate content".to_string(),
                duplicates_table(&self.fleet, top),
            ));
        }
        if !self.subsets.is_empty() {
            tables.push((
                "Node cost per subset".to_string(),
                subsets_table(&self.subsets),
            ));
        }
        if let Some(pull) = &self.pull_after_change {
            tables.push((
                "Bytes to pull after the change".to_string(),
                pull_table(pull),
            ));
        }
        tables
    }
}

fn lookup<'a>(
    by_name: &HashMap<&str, &'a ImageAnalysis>,
    names: &[String],
    option: &'static str,
) -> Result<Vec<&'a ImageAnalysis>, AnalyzeError> {
    names
        .iter()
        .map(|name| {
            by_name.get(name.as_str()).copied().ok_or_else(|| {
                let mut known: Vec<&str> = by_name.keys().copied().collect();
                known.sort();
                AnalyzeError::UnknownImage {
                    option,
                    name: name.clone(),
                    known: known.join(", "),
                }
            })
        })
        .collect()
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(header.to_vec());
    table
}

fn bytes(value: u64) -> Cell {
    Cell::new(format_bytes(value)).set_alignment(CellAlignment::Right)
}

fn number(value: impl ToString) -> Cell {
    Cell::new(value.to_string()).set_alignment(CellAlignment::Right)
}

fn images_table(images: &[ImageAnalysis]) -> Table {
    let mut table = table(&[
        "image",
        "size",
        "gzip",
        "zstd",
        "layers",
        "wasted",
        "runs as root",
    ]);
    for image in images {
        table.add_row(vec![
            Cell::new(&image.name),
            bytes(image.size_bytes),
            bytes(image.gzip_bytes),
            bytes(image.zstd_bytes),
            number(image.layers.len()),
            bytes(image.wasted_bytes),
            Cell::new(if image.runs_as_root { "yes" } else { "no" }),
        ]);
    }
    table
}

fn layers_table(image: &ImageAnalysis) -> Table {
    let mut table = table(&[
        "#",
        "diff id",
        "size",
        "gzip",
        "zstd",
        "files",
        "created by",
    ]);
    for (index, layer) in image.layers.iter().enumerate() {
        let short_id = layer.diff_id.trim_start_matches("sha256:").chars().take(12);
        table.add_row(vec![
            number(index),
            Cell::new(short_id.collect::<String>()),
            bytes(layer.size_bytes),
            bytes(layer.gzip_bytes),
            bytes(layer.zstd_bytes),
            number(layer.file_count),
            Cell::new(shorten(
                layer.created_by.as_deref().unwrap_or("-"),
                CREATED_BY_CHARS,
            )),
        ]);
    }
    table
}

fn shorten(text: &str, chars: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= chars {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(chars - 1).collect::<String>())
    }
}

fn wasted_table(image: &ImageAnalysis, top: usize) -> Table {
    let mut table = table(&["path", "size", "added in", "hidden by", "how"]);
    for file in image.wasted_files.iter().take(top) {
        table.add_row(vec![
            Cell::new(&file.path),
            bytes(file.size_bytes),
            number(file.layer),
            number(file.hidden_by_layer),
            Cell::new(format!("{:?}", file.reason).to_lowercase()),
        ]);
    }
    table
}

fn largest_table(image: &ImageAnalysis, top: usize) -> Table {
    let mut table = table(&["path", "size", "layer"]);
    for file in image.largest_files.iter().take(top) {
        table.add_row(vec![
            Cell::new(&file.path),
            bytes(file.size_bytes),
            number(file.layer),
        ]);
    }
    table
}

fn fleet_table(fleet: &FleetAnalysis) -> Table {
    let mut table = table(&[
        "naive",
        "stored",
        "transfer gzip",
        "transfer zstd",
        "distinct layers",
        "duplicate",
    ]);
    table.add_row(vec![
        bytes(fleet.naive_bytes),
        bytes(fleet.stored_bytes),
        bytes(fleet.transfer_gzip_bytes),
        bytes(fleet.transfer_zstd_bytes),
        number(fleet.distinct_layers),
        bytes(fleet.duplicate_bytes),
    ]);
    table
}

fn sharing_table(fleet: &FleetAnalysis) -> Table {
    let mut table = table(&["image", "shared", "unique"]);
    for sharing in &fleet.sharing {
        table.add_row(vec![
            Cell::new(&sharing.image),
            bytes(sharing.shared_bytes),
            bytes(sharing.unique_bytes),
        ]);
    }
    table
}

fn duplicates_table(fleet: &FleetAnalysis, top: usize) -> Table {
    let mut table = table(&["path", "size", "layers", "duplicate", "images"]);
    for duplicate in fleet.duplicates.iter().take(top) {
        table.add_row(vec![
            Cell::new(duplicate.paths.join("\n")),
            bytes(duplicate.size_bytes),
            number(duplicate.layer_count),
            bytes(duplicate.duplicate_bytes),
            Cell::new(duplicate.images.join("\n")),
        ]);
    }
    table
}

fn subsets_table(subsets: &[NodeCost]) -> Table {
    let mut table = table(&[
        "images",
        "layers",
        "stored",
        "transfer gzip",
        "transfer zstd",
    ]);
    for subset in subsets {
        table.add_row(vec![
            Cell::new(subset.images.join(", ")),
            number(subset.layer_count),
            bytes(subset.stored_bytes),
            bytes(subset.transfer_gzip_bytes),
            bytes(subset.transfer_zstd_bytes),
        ]);
    }
    table
}

fn pull_table(pull: &PullCost) -> Table {
    let mut table = table(&["new layers", "size", "gzip", "zstd"]);
    table.add_row(vec![
        number(pull.new_layers.len()),
        bytes(pull.size_bytes),
        bytes(pull.gzip_bytes),
        bytes(pull.zstd_bytes),
    ]);
    table
}

impl ReportRequest {
    /// The request the command line makes: the fleet is the images named,
    /// or the `--before` and `--after` images when none is.
    pub fn from_args(
        images: &[String],
        subsets: &[String],
        before: &[String],
        after: &[String],
        top: usize,
    ) -> Self {
        let fleet = if images.is_empty() {
            unique(before.iter().chain(after))
        } else {
            unique(images.iter())
        };
        Self {
            fleet,
            subsets: subsets
                .iter()
                .map(|subset| subset.split(',').map(|s| s.trim().to_string()).collect())
                .collect(),
            before: before.to_vec(),
            after: after.to_vec(),
            top,
        }
    }

    /// Every image to analyse, each once, in the order first named.
    pub fn all_images(&self) -> Vec<String> {
        unique(self.fleet.iter().chain(&self.before).chain(&self.after))
    }
}

fn unique<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .filter(|name| seen.insert(name.as_str()))
        .cloned()
        .collect()
}
