//! The fleet configuration file, `fleetbench.toml`: which images the tool
//! builds or takes from a registry, and how the offline images are made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors while reading or validating `fleetbench.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file that was read.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected layout.
    #[error("parsing config file {path}: {message}")]
    Parse {
        /// The file that was parsed.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("invalid config file {path}: {field}: {problem}")]
    Invalid {
        /// The file that was validated.
        path: PathBuf,
        /// The dotted key of the offending value.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// The whole of `fleetbench.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// How the offline images are made.
    pub bootstrap: BootstrapConfig,
    /// The four support images, by role.
    pub images: ImagesConfig,
    /// What `fleetbench bench` measures.
    pub bench: BenchConfig,
    /// Thresholds of `fleetbench gate`, by metric kind.
    pub gate: crate::gate::GateConfig,
    /// Where the file was read from; its directory is the project root.
    #[serde(skip)]
    pub path: PathBuf,
}

/// Settings of `fleetbench bootstrap`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Debian suite that debootstrap installs (`bookworm`).
    pub suite: String,
    /// Debian mirror URL that debootstrap downloads from.
    pub mirror: String,
    /// Version of the `tansu` crate built as the broker.
    pub tansu_version: String,
}

/// What `fleetbench bench` builds, analyses and runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Strategies, in the order reports list them.
    pub strategies: Vec<crate::strategy::Strategy>,
    /// Runtime bases.
    pub bases: Vec<crate::strategy::Base>,
    /// The worker whose source the change scenario edits by one line.
    pub change_worker: String,
}

/// The support images every strategy and test relies on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Runtime base of the worker images.
    pub base: ImageChoice,
    /// Rust builder image used by the Dockerfiles' build stages.
    pub builder: ImageChoice,
    /// Kafka-compatible broker.
    pub broker: ImageChoice,
    /// PostgreSQL server.
    pub postgres: ImageChoice,
}

/// Where one support image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// Built on this machine by `fleetbench bootstrap`, no registry needed.
    Local,
    /// Pulled from a registry by the engine.
    Registry,
}

/// One support image: its two possible references and which one is in use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageChoice {
    /// Which of the two references is used.
    pub source: ImageSource,
    /// Reference of the locally built image (`name:tag`).
    pub local: String,
    /// Reference of the public registry image (`name:tag`).
    pub registry: String,
}

impl ImageChoice {
    /// The reference in use, according to `source`.
    pub fn reference(&self) -> &str {
        match self.source {
            ImageSource::Local => &self.local,
            ImageSource::Registry => &self.registry,
        }
    }

    /// Whether `fleetbench bootstrap` has to build this image.
    pub fn is_local(&self) -> bool {
        self.source == ImageSource::Local
    }
}

impl ImagesConfig {
    /// The images by role name, in bootstrap order.
    pub fn by_role(&self) -> BTreeMap<&'static str, &ImageChoice> {
        BTreeMap::from([
            ("base", &self.base),
            ("builder", &self.builder),
            ("broker", &self.broker),
            ("postgres", &self.postgres),
        ])
    }

    /// Switches every image to one source (the `--images` flag).
    pub fn set_all(&mut self, source: ImageSource) {
        for choice in [
            &mut self.base,
            &mut self.builder,
            &mut self.broker,
            &mut self.postgres,
        ] {
            choice.source = source;
        }
    }
}

impl FleetConfig {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.path = path.to_path_buf();
        Ok(config)
    }

    /// Parses and validates configuration text; `path` is used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: FleetConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The directory holding the configuration file: the project root.
    pub fn root(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, problem: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            problem: problem.to_string(),
        };
        if !self.bootstrap.mirror.starts_with("http://")
            && !self.bootstrap.mirror.starts_with("https://")
        {
            return Err(invalid(
                "bootstrap.mirror".into(),
                "must be an http:// or https:// URL",
            ));
        }
        if self.bootstrap.suite.trim().is_empty() {
            return Err(invalid("bootstrap.suite".into(), "must not be empty"));
        }
        if self.bench.strategies.is_empty() {
            return Err(invalid("bench.strategies".into(), "must name a strategy"));
        }
        if self.bench.bases.is_empty() {
            return Err(invalid("bench.bases".into(), "must name a base"));
        }
        if !crate::strategy::WORKERS.contains(&self.bench.change_worker.as_str()) {
            return Err(invalid(
                "bench.change_worker".into(),
                "must be one of the nine workers (data-ingestor, kpi-worker, ...)",
            ));
        }
        for kind in crate::report::MetricKind::ALL {
            let threshold = self.gate.threshold(kind);
            if !(threshold.max_change_pct >= 0.0 && threshold.max_change_pct.is_finite()) {
                return Err(invalid(
                    format!("gate.{}.max_change_pct", kind.name()),
                    "must be a percentage of 0 or more",
                ));
            }
        }
        for (role, choice) in self.images.by_role() {
            for (key, reference) in [("local", &choice.local), ("registry", &choice.registry)] {
                if !is_valid_reference(reference) {
                    return Err(invalid(
                        format!("images.{role}.{key}"),
                        "must be an image reference like name:tag, lowercase, without spaces",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `reference` looks like `[registry/]name[:tag]` as Docker accepts it.
fn is_valid_reference(reference: &str) -> bool {
    !reference.is_empty()
        && !reference.starts_with(['/', ':', '-', '.'])
        && !reference.ends_with([':', '/'])
        && reference
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:@".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../fleetbench.toml");

    #[test]
    fn the_shipped_config_parses() {
        let config = FleetConfig::parse(SHIPPED, Path::new("fleetbench.toml")).unwrap();
        assert_eq!(config.images.base.reference(), "fleetbench/base:bookworm");
        assert!(config.images.broker.is_local());
    }

    #[test]
    fn switching_all_images_to_registry_selects_public_references() {
        let mut config = FleetConfig::parse(SHIPPED, Path::new("fleetbench.toml")).unwrap();
        config.images.set_all(ImageSource::Registry);
        assert_eq!(config.images.base.reference(), "debian:bookworm-slim");
        assert_eq!(config.images.postgres.reference(), "postgres:15");
    }

    #[test]
    fn an_unknown_key_is_reported_with_its_name() {
        let text = SHIPPED.replace("[bootstrap]", "[bootstrap]\nmirrors = 1");
        let err = FleetConfig::parse(&text, Path::new("x.toml")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("x.toml"), "{message}");
        assert!(message.contains("mirrors"), "{message}");
    }

    #[test]
    fn an_uppercase_image_reference_names_the_field() {
        let text = SHIPPED.replace("fleetbench/base:bookworm", "Fleetbench/Base");
        let err = FleetConfig::parse(&text, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("images.base.local"), "{err}");
    }

    #[test]
    fn a_negative_gate_threshold_names_its_key() {
        let text = SHIPPED.replacen("max_change_pct = 1.0", "max_change_pct = -1.0", 1);
        let err = FleetConfig::parse(&text, Path::new("x.toml")).unwrap_err();
        assert!(
            err.to_string().contains("gate.image_bytes.max_change_pct"),
            "{err}"
        );
    }

    #[test]
    fn a_change_worker_outside_the_fleet_is_rejected() {
        let text = SHIPPED.replace(
            "change_worker = \"alert-manager\"",
            "change_worker = \"mailer\"",
        );
        let err = FleetConfig::parse(&text, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("bench.change_worker"), "{err}");
    }

    #[test]
    fn a_mirror_without_scheme_is_rejected() {
        let text = SHIPPED.replace("http://deb.debian.org/debian", "deb.debian.org");
        let err = FleetConfig::parse(&text, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("bootstrap.mirror"), "{err}");
    }
}
