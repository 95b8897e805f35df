//! Image and fleet analysis (`fleetbench analyze`): reads images from the
//! Docker Engine, a docker-archive tarball or an OCI image layout, reads every
//! layer once, and derives the numbers DESIGN.md defines: size, compressed
//! size, waste, sharing, duplicates, node cost and pull cost.
//!
//! Reading is kept apart from arithmetic: [`layer`] measures one layer tar,
//! [`archive`] finds images and layers in an archive, [`source`] gets
//! archives from the engine or the disk, [`image`] and [`fleet`] compute,
//! [`report`] is the versioned JSON schema and the tables, and [`versus`]
//! times the analysis against `skopeo copy`.
//!
//! Known limits: sizes are those of the layer tars as the engine exports
//! them, headers and padding included, so they exceed the content bytes that
//! `docker image inspect` sums; gzip sizes come from zlib-rs at level 6 in
//! 1 MiB blocks (0.2% more than one unbroken stream for the builder image),
//! and other gzip encoders give other sizes for the same layer (skopeo's
//! pgzip wrote the builder image's layers 3% bigger; Go's `compress/gzip`,
//! which `docker push` uses, was not compared); an index with several
//! platforms yields one image per platform.

pub mod archive;
pub mod fleet;
pub mod image;
pub mod layer;
pub mod report;
pub mod source;
pub mod versus;

use std::path::PathBuf;

pub use fleet::{node_cost, pull_after_change, FleetAnalysis, NodeCost, PullCost};
pub use image::ImageAnalysis;
pub use report::{AnalyzeReport, SCHEMA_VERSION};
pub use source::ImageSpec;

use crate::docker::{DockerError, Engine};

/// Errors while analysing images.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// An archive, or an object inside it, is cut off, corrupted or not what
    /// it claims to be.
    #[error("reading {origin}: {object}: {problem}")]
    Read {
        /// The archive (`docker-archive /x/y.tar`).
        origin: String,
        /// The object inside it (`layer abc/layer.tar`).
        object: String,
        /// What is wrong.
        problem: String,
    },
    /// The engine could not export an image.
    #[error("exporting image '{image}' from the Docker Engine at {endpoint}: {source}")]
    Export {
        /// The image reference.
        image: String,
        /// The engine's endpoint.
        endpoint: String,
        /// The client's error.
        source: bollard::errors::Error,
    },
    /// An engine image was asked for without an engine.
    #[error(
        "analysing image '{image}': it is not a file or directory, and no Docker Engine was given"
    )]
    NoEngine {
        /// The image reference.
        image: String,
    },
    /// Connecting to the engine failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// A local file could not be used.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An external program (skopeo) failed.
    #[error("running {command}: {problem}")]
    Tool {
        /// The command line.
        command: String,
        /// What went wrong, with its output.
        problem: String,
    },
    /// A name given to `--subset`, `--before` or `--after` is not analysed.
    #[error("{option}: no image '{name}' among the analysed images ({known})")]
    UnknownImage {
        /// The option.
        option: &'static str,
        /// The name given.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// A worker thread failed in a way that is a bug.
    #[error("analysing images: {0}")]
    Internal(String),
}

/// Reads images named on the command line, connecting to the engine only
/// when one of them lives there; lists keep the `top` biggest entries.
pub struct Analyzer {
    engine: Option<Engine>,
    top: usize,
}

impl Analyzer {
    /// An analyzer that will connect to the engine on first need.
    pub fn new(top: usize) -> Self {
        Self { engine: None, top }
    }

    /// An analyzer with an engine already connected.
    pub fn with_engine(engine: Engine, top: usize) -> Self {
        Self {
            engine: Some(engine),
            top,
        }
    }

    /// Analyses engine images exported together in one archive, so that the
    /// layers they share are read and compressed once; each is named by its
    /// tag.
    pub async fn analyze_engine_images(
        &mut self,
        tags: &[String],
    ) -> Result<Vec<ImageAnalysis>, AnalyzeError> {
        if self.engine.is_none() {
            self.engine = Some(Engine::connect().await?);
        }
        let engine = self.engine.as_ref().expect("connected above");
        let names: Vec<&str> = tags.iter().map(String::as_str).collect();
        let origin = format!("images {} exported by the Docker Engine", names.join(", "));
        let found = source::export(engine, &names, origin).await?;
        let mut images: Vec<ImageAnalysis> = found
            .into_iter()
            .map(|found| {
                let name = found.name.clone().unwrap_or_else(|| found.id.clone());
                ImageAnalysis::new(name, found, self.top)
            })
            .collect();
        // Two tags of one image come back as one entry under one of them:
        // the other tags get a copy, found by the image id.
        for tag in tags {
            if images.iter().any(|i| &i.name == tag) {
                continue;
            }
            let Some(facts) = engine.image_facts(tag).await? else {
                continue;
            };
            let same = |i: &&ImageAnalysis| strip_algorithm(&i.id) == strip_algorithm(&facts.id);
            if let Some(twin) = images.iter().find(same) {
                let mut copy = twin.clone();
                copy.name = tag.clone();
                images.push(copy);
            }
        }
        Ok(images)
    }

    /// Analyses every image `argument` names (an archive may hold several;
    /// they are named by their tag, or `argument#n`).
    pub async fn analyze(&mut self, argument: &str) -> Result<Vec<ImageAnalysis>, AnalyzeError> {
        let spec = ImageSpec::parse(argument);
        if spec.needs_engine() && self.engine.is_none() {
            self.engine = Some(Engine::connect().await?);
        }
        let found = spec.load(self.engine.as_ref()).await?;
        let single = found.len() == 1;
        let images = found
            .into_iter()
            .enumerate()
            .map(|(index, found)| {
                let name = match (&found.name, single) {
                    (_, true) => argument.to_string(),
                    (Some(name), false) => name.clone(),
                    (None, false) => format!("{argument}#{}", index + 1),
                };
                ImageAnalysis::new(name, found, self.top)
            })
            .collect::<Vec<_>>();
        for image in &images {
            tracing::info!(image = %image.name, size_bytes = image.size_bytes, layers = image.layers.len(), "analysed image");
        }
        Ok(images)
    }
}

/// An image id without its `sha256:` prefix.
fn strip_algorithm(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, hex)| hex)
}
