//! `fleetbench bootstrap`: the four support images (runtime base, Rust
//! builder, broker, PostgreSQL) made from Debian packages and crates.io on a
//! machine that has a Docker Engine but no registry.
//!
//! Each image carries the label [`RECIPE_LABEL`], a hash of its recipe and
//! inputs. A rerun compares it with the recipe on disk and rebuilds only what
//! changed; images configured as `registry` are left to the engine to pull.
//! The root filesystems come from `debootstrap` on the host and the broker
//! binary from `cargo install` on the host, so no build needs the network.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::{FleetConfig, ImageChoice};
use crate::context::{ContextError, ContextTar};
use crate::docker::{BuildRequest, DockerError, Engine};
use crate::progress::Step;

/// Label holding the hash of the recipe an image was built from.
pub const RECIPE_LABEL: &str = "org.fleetbench.recipe-hash";
/// Label naming the support role of a bootstrap image.
pub const ROLE_LABEL: &str = "org.fleetbench.role";

/// Packages the builder adds to minbase: what compiling the workspace needs.
const BUILDER_PACKAGES: &[&str] = &[
    "gcc",
    "g++",
    "make",
    "cmake",
    "pkg-config",
    "libc6-dev",
    "zlib1g-dev",
    "libssl-dev",
    "ca-certificates",
];
/// Packages the PostgreSQL image adds to minbase.
const POSTGRES_PACKAGES: &[&str] = &["postgresql-15"];
/// Cargo features tansu needs for its in-memory storage engine.
const TANSU_FEATURES: &str = "dynostore";
/// Changing how root filesystems are trimmed changes this, and so every hash.
const TRIM_VERSION: &str = "slim-2";

/// Errors of the bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A program the bootstrap runs on the host is missing.
    #[error("`{program}` was not found on PATH, {purpose}; install it: {install}")]
    MissingProgram {
        /// The program looked for.
        program: &'static str,
        /// Why it is needed.
        purpose: &'static str,
        /// The command that installs it.
        install: &'static str,
    },
    /// A host command failed.
    #[error("{operation} failed ({status}); its output is in {log}")]
    Command {
        /// What the command was doing.
        operation: String,
        /// Its exit status.
        status: String,
        /// Where its output went.
        log: PathBuf,
    },
    /// A file operation on the host failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Writing a build context failed.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The engine refused or failed a request.
    #[error(transparent)]
    Docker(#[from] DockerError),
}

/// The four support images, in the order they are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runtime base of every worker image.
    Base,
    /// Rust builder for the Dockerfiles' compile stages.
    Builder,
    /// Kafka-compatible broker.
    Broker,
    /// PostgreSQL server.
    Postgres,
}

impl Role {
    /// Every role, base first since the broker is built on it.
    pub const ALL: [Role; 4] = [Role::Base, Role::Builder, Role::Broker, Role::Postgres];

    /// The role's name in `fleetbench.toml` and in labels.
    pub fn name(self) -> &'static str {
        match self {
            Role::Base => "base",
            Role::Builder => "builder",
            Role::Broker => "broker",
            Role::Postgres => "postgres",
        }
    }

    fn choice(self, config: &FleetConfig) -> &ImageChoice {
        match self {
            Role::Base => &config.images.base,
            Role::Builder => &config.images.builder,
            Role::Broker => &config.images.broker,
            Role::Postgres => &config.images.postgres,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the bootstrap did with one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Built now.
    Built,
    /// Present with the same recipe hash: nothing to do.
    Skipped,
    /// Configured to come from a registry: not built here.
    Registry,
    /// Left out by `--only`.
    NotSelected,
}

/// The result for one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageOutcome {
    /// The support role.
    pub role: Role,
    /// The image reference in use.
    pub image: String,
    /// What was done.
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// The recipe hash (empty for registry images).
    pub recipe_hash: String,
    /// Image id, when the engine has the image.
    pub image_id: Option<String>,
    /// Uncompressed size, when the engine has the image.
    pub size_bytes: Option<u64>,
    /// Time spent on this image, preparation and build.
    pub elapsed_ms: u64,
}

/// Where the bootstrap keeps what it downloads and builds on the host.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLEETBENCH_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("fleetbench")
}

/// Builds what is configured as local and missing or out of date.
pub struct Bootstrap<'a> {
    engine: &'a Engine,
    config: &'a FleetConfig,
    logs: PathBuf,
    cache: PathBuf,
    force: bool,
    only: Vec<Role>,
}

/// One image's recipe: its Dockerfile, the files beside it, and the facts
/// that decide whether an existing image is still good.
struct Recipe {
    role: Role,
    dockerfile: String,
    files: Vec<(&'static str, Vec<u8>)>,
    inputs: Vec<(String, String)>,
}

impl Recipe {
    fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        let mut feed = |key: &str, value: &[u8]| {
            hasher.update((key.len() as u64).to_le_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value);
        };
        feed("role", self.role.name().as_bytes());
        feed("dockerfile", self.dockerfile.as_bytes());
        for (name, bytes) in &self.files {
            feed(name, bytes);
        }
        for (key, value) in &self.inputs {
            feed(key, value.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

impl<'a> Bootstrap<'a> {
    /// Prepares a bootstrap that logs below `logs`; `force` rebuilds all.
    pub fn new(engine: &'a Engine, config: &'a FleetConfig, logs: PathBuf, force: bool) -> Self {
        Self {
            engine,
            config,
            logs,
            cache: cache_dir(),
            force,
            only: Vec::new(),
        }
    }

    /// Limits the bootstrap to these roles; an empty list means all.
    pub fn only(mut self, roles: &[Role]) -> Self {
        self.only = roles.to_vec();
        self
    }

    /// Builds every local image that is missing or out of date, in order,
    /// and reports what was done with each.
    pub async fn run(&self) -> Result<Vec<ImageOutcome>, BootstrapError> {
        std::fs::create_dir_all(&self.logs).map_err(io("creating log directory", &self.logs))?;
        std::fs::create_dir_all(&self.cache)
            .map_err(io("creating cache directory", &self.cache))?;
        let mut outcomes = Vec::new();
        let mut hashes: HashMap<Role, String> = HashMap::new();
        for role in Role::ALL {
            let outcome = self.ensure(role, &hashes).await?;
            hashes.insert(role, outcome.recipe_hash.clone());
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn ensure(
        &self,
        role: Role,
        hashes: &HashMap<Role, String>,
    ) -> Result<ImageOutcome, BootstrapError> {
        let choice = role.choice(self.config);
        let image = choice.reference().to_string();
        if !choice.is_local() {
            info!(%role, %image, "registry image configured, not building");
            let facts = self.engine.image_facts(&image).await?;
            return Ok(ImageOutcome {
                role,
                image,
                action: Action::Registry,
                reason: "configured to come from a registry".into(),
                recipe_hash: String::new(),
                image_id: facts.as_ref().map(|f| f.id.clone()),
                size_bytes: facts.map(|f| f.size_bytes),
                elapsed_ms: 0,
            });
        }

        let recipe = self.recipe(role, hashes)?;
        let hash = recipe.hash();
        let existing = self.engine.image_facts(&image).await?;
        if !self.only.is_empty() && !self.only.contains(&role) {
            return Ok(ImageOutcome {
                role,
                image,
                action: Action::NotSelected,
                reason: "not selected by --only".into(),
                recipe_hash: hash,
                image_id: existing.as_ref().map(|f| f.id.clone()),
                size_bytes: existing.map(|f| f.size_bytes),
                elapsed_ms: 0,
            });
        }
        let present_hash = existing
            .as_ref()
            .and_then(|facts| facts.labels.get(RECIPE_LABEL).cloned());
        if !self.force && present_hash.as_deref() == Some(hash.as_str()) {
            let facts = existing.expect("a hash was read from the image");
            info!(%role, %image, "image already present with the same recipe hash, not building");
            return Ok(ImageOutcome {
                role,
                image,
                action: Action::Skipped,
                reason: "up to date: recipe hash matches".into(),
                recipe_hash: hash,
                image_id: Some(facts.id),
                size_bytes: Some(facts.size_bytes),
                elapsed_ms: 0,
            });
        }
        let reason = match (self.force, present_hash) {
            (true, _) => "rebuild forced".to_string(),
            (false, None) if existing.is_none() => "image missing".to_string(),
            (false, None) => "image has no recipe label".to_string(),
            (false, Some(_)) => "recipe changed".to_string(),
        };
        info!(%role, %image, %reason, "building");
        let step = Step::start(format!("{role}: preparing {image}"));
        let result = self.build(&recipe, &image, &hash, &step).await;
        let elapsed = step.finish();
        result?;
        let facts = self.engine.image_facts(&image).await?;
        info!(%role, %image, elapsed_s = elapsed.as_secs_f64(), "built");
        Ok(ImageOutcome {
            role,
            image,
            action: Action::Built,
            reason,
            recipe_hash: hash,
            image_id: facts.as_ref().map(|f| f.id.clone()),
            size_bytes: facts.map(|f| f.size_bytes),
            elapsed_ms: elapsed.as_millis() as u64,
        })
    }

    fn recipe(&self, role: Role, hashes: &HashMap<Role, String>) -> Result<Recipe, BootstrapError> {
        let dir = self.config.root().join("dockerfiles/bootstrap");
        let read = |name: &str| -> Result<Vec<u8>, BootstrapError> {
            let path = dir.join(name);
            std::fs::read(&path).map_err(io("reading bootstrap recipe", &path))
        };
        let dockerfile = String::from_utf8_lossy(&read(&format!("Dockerfile.{role}"))?).into();
        let boot = &self.config.bootstrap;
        let mut inputs = vec![("trim".to_string(), TRIM_VERSION.to_string())];
        let mut files = Vec::new();
        match role {
            Role::Base => inputs.push(("suite".into(), boot.suite.clone())),
            Role::Builder => {
                inputs.push(("suite".into(), boot.suite.clone()));
                inputs.push(("packages".into(), BUILDER_PACKAGES.join(",")));
                inputs.push(("rustc".into(), host_rustc_version()?));
            }
            Role::Broker => {
                files.push(("broker-entrypoint.sh", read("broker-entrypoint.sh")?));
                inputs.push(("tansu".into(), boot.tansu_version.clone()));
                inputs.push(("features".into(), TANSU_FEATURES.into()));
                inputs.push(("patch".into(), TANSU_PATCH.into()));
                inputs.push(("base".into(), self.base_identity(hashes)));
            }
            Role::Postgres => {
                files.push(("postgres-entrypoint.sh", read("postgres-entrypoint.sh")?));
                inputs.push(("suite".into(), boot.suite.clone()));
                inputs.push(("packages".into(), POSTGRES_PACKAGES.join(",")));
            }
        }
        Ok(Recipe {
            role,
            dockerfile,
            files,
            inputs,
        })
    }

    /// What the broker's `FROM` is: the local base's hash or the registry's.
    fn base_identity(&self, hashes: &HashMap<Role, String>) -> String {
        let base = &self.config.images.base;
        match hashes.get(&Role::Base) {
            Some(hash) if base.is_local() => format!("{}@{hash}", base.local),
            _ => base.reference().to_string(),
        }
    }

    async fn build(
        &self,
        recipe: &Recipe,
        image: &str,
        hash: &str,
        step: &Step,
    ) -> Result<(), BootstrapError> {
        let role = recipe.role;
        let work = tempfile::Builder::new()
            .prefix(&format!("bootstrap-{role}-"))
            .tempdir_in(&self.cache)
            .map_err(io("creating work directory in", &self.cache))?;
        let context_path = work.path().join("context.tar");
        let mut context = ContextTar::create(&context_path, 0)?;
        context.add_bytes("Dockerfile", recipe.dockerfile.as_bytes(), 0o644)?;
        for (name, bytes) in &recipe.files {
            context.add_bytes(name, bytes, 0o755)?;
        }
        let mut build_args = HashMap::new();
        match role {
            Role::Base | Role::Builder | Role::Postgres => {
                let packages: &[&str] = match role {
                    Role::Builder => BUILDER_PACKAGES,
                    Role::Postgres => POSTGRES_PACKAGES,
                    _ => &[],
                };
                step.update(format!(
                    "{role}: debootstrap {}",
                    self.config.bootstrap.suite
                ));
                let rootfs = work.path().join("rootfs");
                self.debootstrap(role, packages, &rootfs).await?;
                trim_rootfs(&rootfs)?;
                if role == Role::Postgres {
                    // The package's postinst made a "main" cluster; the
                    // entrypoint initialises its own data directory instead.
                    empty_dir(&rootfs.join("var/lib/postgresql"))?;
                    empty_dir(&rootfs.join("etc/postgresql"))?;
                }
                step.update(format!("{role}: packing the root filesystem"));
                let rootfs_tar = work.path().join("rootfs.tar");
                self.pack_rootfs(role, &rootfs, &rootfs_tar).await?;
                context.add_file("rootfs.tar", &rootfs_tar)?;
                if role == Role::Builder {
                    step.update(format!("{role}: adding the host's Rust toolchain"));
                    let sysroot = host_rust_sysroot()?;
                    context.add_dir("rust", &sysroot, &|path| {
                        path.starts_with("share") || path.starts_with("lib/rustlib/src")
                    })?;
                }
            }
            Role::Broker => {
                let tansu = self.tansu_binary(step).await?;
                context.add_file("tansu", &tansu)?;
                build_args.insert(
                    "BASE_IMAGE".to_string(),
                    self.config.images.base.reference().to_string(),
                );
            }
        }
        let context_path = context.finish()?;
        let labels = HashMap::from([
            (RECIPE_LABEL.to_string(), hash.to_string()),
            (ROLE_LABEL.to_string(), role.name().to_string()),
            (
                "org.opencontainers.image.title".to_string(),
                format!("fleetbench {role}"),
            ),
        ]);
        let log_path = self.logs.join(format!("{role}.build.log"));
        step.update(format!("{role}: docker build {image}"));
        let request = BuildRequest {
            image,
            dockerfile: "Dockerfile",
            target: None,
            context_tar: &context_path,
            build_args,
            labels,
            no_cache: self.force,
            log_path: &log_path,
        };
        self.engine
            .build(&request, |line| step.update(format!("{role}: {line}")))
            .await?;
        Ok(())
    }

    async fn debootstrap(
        &self,
        role: Role,
        packages: &[&str],
        rootfs: &Path,
    ) -> Result<(), BootstrapError> {
        let program = find_program("debootstrap").ok_or(BootstrapError::MissingProgram {
            program: "debootstrap",
            purpose: "needed to make the Debian root filesystems",
            install: "apt-get install debootstrap",
        })?;
        let boot = &self.config.bootstrap;
        let mut args = vec!["--variant=minbase".to_string()];
        if !packages.is_empty() {
            args.push(format!("--include={}", packages.join(",")));
        }
        args.extend([
            boot.suite.clone(),
            rootfs.display().to_string(),
            boot.mirror.clone(),
        ]);
        let log = self.logs.join(format!("{role}.debootstrap.log"));
        run_logged(
            &program,
            &args,
            &log,
            &format!("debootstrap of the {role} image"),
        )
        .await
    }

    async fn pack_rootfs(
        &self,
        role: Role,
        rootfs: &Path,
        out: &Path,
    ) -> Result<(), BootstrapError> {
        let args = [
            "--numeric-owner",
            "--xattrs",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "-C",
            &rootfs.display().to_string(),
            "-cf",
            &out.display().to_string(),
            ".",
        ]
        .map(String::from);
        let log = self.logs.join(format!("{role}.pack.log"));
        let tar = find_program("tar").ok_or(BootstrapError::MissingProgram {
            program: "tar",
            purpose: "needed to pack root filesystems",
            install: "apt-get install tar",
        })?;
        run_logged(
            &tar,
            &args,
            &log,
            &format!("packing the {role} root filesystem"),
        )
        .await
    }

    /// The tansu binary, compiled with cargo into the cache when missing.
    ///
    /// tansu 0.6.0 answers a fetch that starts inside a record batch with
    /// nothing (or with the batches after it), so a consumer that resumes
    /// from a committed offset in the middle of a producer's batch stalls or
    /// skips records. The recipe compiles tansu from crates.io with its own
    /// `Cargo.lock`, but with tansu-storage replaced by its crates.io source
    /// with [`TANSU_PATCH`] applied (a `[patch]` given on the command line).
    async fn tansu_binary(&self, step: &Step) -> Result<PathBuf, BootstrapError> {
        let version = &self.config.bootstrap.tansu_version;
        let root = self.cache.join("tools").join(format!(
            "tansu-{version}-{}",
            short_hash(TANSU_PATCH.as_bytes())
        ));
        let binary = root.join("bin/tansu");
        if binary.is_file() {
            info!(binary = %binary.display(), "tansu already compiled, not compiling");
            return Ok(binary);
        }
        let cargo = find_program("cargo").ok_or(BootstrapError::MissingProgram {
            program: "cargo",
            purpose: "needed to compile the tansu broker",
            install: "rustup (https://rustup.rs) or your distribution's cargo package",
        })?;
        let patch = find_program("patch").ok_or(BootstrapError::MissingProgram {
            program: "patch",
            purpose: "needed to apply the fetch fix to tansu-storage",
            install: "apt-get install patch",
        })?;
        let work = tempfile::Builder::new()
            .prefix("tansu-src-")
            .tempdir_in(&self.cache)
            .map_err(io("creating work directory in", &self.cache))?;

        step.update(format!(
            "broker: fetching the sources of tansu-storage {version}"
        ));
        let sources = self.storage_sources(&cargo, version, work.path()).await?;
        let storage = work.path().join("tansu-storage");
        crate::tree::sync_tree(&sources, &storage, &|_| false).map_err(BootstrapError::from)?;
        let patch_file = work.path().join("fetch.patch");
        std::fs::write(&patch_file, TANSU_PATCH).map_err(io("writing", &patch_file))?;
        let args = [
            "-p1",
            "-d",
            &path_arg(&storage),
            "-i",
            &path_arg(&patch_file),
        ]
        .map(String::from);
        let log = self.logs.join("broker.patch.log");
        run_logged(&patch, &args, &log, "patching tansu-storage").await?;

        step.update(format!(
            "broker: cargo install tansu {version} (about 12 min on 2 cores)"
        ));
        warn!(%version, "compiling the tansu broker; this is the longest bootstrap step");
        let args = [
            "install",
            "tansu",
            "--version",
            version,
            "--locked",
            "--features",
            TANSU_FEATURES,
            "--root",
            &path_arg(&root),
            "--config",
            &format!(
                "patch.crates-io.tansu-storage.path={:?}",
                path_arg(&storage)
            ),
        ]
        .map(String::from);
        let log = self.logs.join("broker.cargo-install.log");
        run_logged(&cargo, &args, &log, "cargo install tansu").await?;
        Ok(binary)
    }

    /// Downloads the tansu-storage crate with cargo and returns where cargo
    /// unpacked it.
    async fn storage_sources(
        &self,
        cargo: &Path,
        version: &str,
        work: &Path,
    ) -> Result<PathBuf, BootstrapError> {
        let locator = work.join("locate");
        std::fs::create_dir_all(locator.join("src")).map_err(io("creating", &locator))?;
        let manifest = locator.join("Cargo.toml");
        let text = format!(
            "[package]\nname = \"locate-tansu\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             [dependencies]\ntansu-storage = \"={version}\"\n"
        );
        std::fs::write(&manifest, text).map_err(io("writing", &manifest))?;
        let main = locator.join("src/main.rs");
        std::fs::write(&main, "fn main() {}\n").map_err(io("writing", &main))?;
        let output = tokio::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(&manifest)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io("running", cargo))?;
        let log = self.logs.join("broker.cargo-metadata.log");
        std::fs::write(&log, &output.stderr).map_err(io("writing", &log))?;
        if !output.status.success() {
            return Err(BootstrapError::Command {
                operation: "cargo metadata (fetching the tansu sources)".into(),
                status: output.status.to_string(),
                log,
            });
        }
        let metadata: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(|e| BootstrapError::Io {
                operation: "parsing cargo metadata of",
                path: manifest.clone(),
                source: std::io::Error::other(e),
            })?;
        let name = "tansu-storage";
        metadata["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name && p["version"] == version)
            .and_then(|p| p["manifest_path"].as_str())
            .and_then(|m| Path::new(m).parent().map(Path::to_path_buf))
            .ok_or_else(|| BootstrapError::Io {
                operation: "finding the sources of",
                path: PathBuf::from(format!("{name}-{version}")),
                source: std::io::Error::other("not in cargo metadata"),
            })
    }
}

/// The fix for tansu-storage's fetch, applied before compiling the broker.
pub const TANSU_PATCH: &str =
    include_str!("../../dockerfiles/bootstrap/tansu-storage-fetch-inside-batch.patch");

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..6])
}

/// Removes what `debian:*-slim` leaves out: documentation (but licences),
/// manuals, locales, package lists and caches, logs of the installation; and
/// installs the dpkg and apt settings that keep them out later.
pub fn trim_rootfs(rootfs: &Path) -> Result<(), BootstrapError> {
    for dir in [
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "usr/share/linda",
        "usr/share/groff",
        "var/lib/apt/lists",
        "var/cache/apt",
        "var/log",
    ] {
        empty_dir(&rootfs.join(dir))?;
    }
    let doc = rootfs.join("usr/share/doc");
    if doc.is_dir() {
        for package in read_dir(&doc)? {
            for entry in read_dir(&package)? {
                if entry.file_name().is_some_and(|name| name != "copyright") {
                    remove_any(&entry)?;
                }
            }
        }
    }
    let write = |relative: &str, text: &str| {
        let path = rootfs.join(relative);
        std::fs::write(&path, text).map_err(io("writing", &path))
    };
    write(
        "etc/dpkg/dpkg.cfg.d/fleetbench-slim",
        "# Keep images small, as debian:*-slim does.\n\
         path-exclude /usr/share/doc/*\n\
         path-include /usr/share/doc/*/copyright\n\
         path-exclude /usr/share/man/*\n\
         path-exclude /usr/share/groff/*\n\
         path-exclude /usr/share/info/*\n\
         path-exclude /usr/share/lintian/*\n\
         path-exclude /usr/share/linda/*\n\
         path-exclude /usr/share/locale/*\n",
    )?;
    write(
        "etc/apt/apt.conf.d/fleetbench-clean",
        "APT::Keep-Downloaded-Packages \"false\";\n\
         Acquire::GzipIndexes \"true\";\n",
    )?;
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, BootstrapError> {
    let entries = std::fs::read_dir(dir).map_err(io("listing", dir))?;
    entries
        .map(|entry| entry.map(|e| e.path()).map_err(io("listing", dir)))
        .collect()
}

fn remove_any(path: &Path) -> Result<(), BootstrapError> {
    let meta = std::fs::symlink_metadata(path).map_err(io("reading", path))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path).map_err(io("removing", path))
    } else {
        std::fs::remove_file(path).map_err(io("removing", path))
    }
}

fn empty_dir(dir: &Path) -> Result<(), BootstrapError> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in read_dir(dir)? {
        remove_any(&entry)?;
    }
    Ok(())
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError {
    let path = path.to_path_buf();
    move |source| BootstrapError::Io {
        operation,
        path,
        source,
    }
}

/// Finds `program` on PATH, or in the sbin directories that a non-login root
/// shell may not have on PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs a host command with its output in `log`, failing with the log named.
async fn run_logged(
    program: &Path,
    args: &[String],
    log: &Path,
    operation: &str,
) -> Result<(), BootstrapError> {
    let file = std::fs::File::create(log).map_err(io("creating log", log))?;
    let err_file = file.try_clone().map_err(io("creating log", log))?;
    info!(program = %program.display(), ?args, log = %log.display(), "running");
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err_file)
        .status()
        .await
        .map_err(io("starting", program))?;
    if status.success() {
        Ok(())
    } else {
        Err(BootstrapError::Command {
            operation: operation.to_string(),
            status: status.to_string(),
            log: log.to_path_buf(),
        })
    }
}

fn rustc_output(arg: &str) -> Result<String, BootstrapError> {
    let rustc = find_program("rustc").ok_or(BootstrapError::MissingProgram {
        program: "rustc",
        purpose: "its toolchain is copied into the builder image",
        install: "rustup (https://rustup.rs)",
    })?;
    let output = std::process::Command::new(&rustc)
        .arg(arg)
        .output()
        .map_err(io("running", &rustc))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// `rustc --version` of the host toolchain, as the builder records it.
pub fn host_rustc_version() -> Result<String, BootstrapError> {
    rustc_output("--version")
}

fn host_rust_sysroot() -> Result<PathBuf, BootstrapError> {
    rustc_output("--print=sysroot").map(PathBuf::from)
}

/// How long a bootstrap took, for the summary line.
pub fn total_elapsed(outcomes: &[ImageOutcome]) -> Duration {
    Duration::from_millis(outcomes.iter().map(|o| o.elapsed_ms).sum())
}

impl From<crate::tree::TreeError> for BootstrapError {
    fn from(error: crate::tree::TreeError) -> Self {
        BootstrapError::Io {
            operation: error.operation,
            path: error.path,
            source: error.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_licences_and_drops_manuals_and_lists() {
        let root = tempfile::tempdir().unwrap();
        let p = |rel: &str| root.path().join(rel);
        for dir in [
            "usr/share/doc/bash",
            "usr/share/man/man1",
            "var/lib/apt/lists",
            "etc/dpkg/dpkg.cfg.d",
            "etc/apt/apt.conf.d",
        ] {
            std::fs::create_dir_all(p(dir)).unwrap();
        }
        std::fs::write(p("usr/share/doc/bash/copyright"), "GPL").unwrap();
        std::fs::write(p("usr/share/doc/bash/changelog.gz"), "log").unwrap();
        std::fs::write(p("usr/share/man/man1/bash.1.gz"), "man").unwrap();
        std::fs::write(p("var/lib/apt/lists/x_Packages"), "pkgs").unwrap();

        trim_rootfs(root.path()).unwrap();

        assert!(p("usr/share/doc/bash/copyright").exists());
        assert!(!p("usr/share/doc/bash/changelog.gz").exists());
        assert!(!p("usr/share/man/man1").exists());
        assert!(p("var/lib/apt/lists").is_dir());
        assert!(!p("var/lib/apt/lists/x_Packages").exists());
        let dpkg = std::fs::read_to_string(p("etc/dpkg/dpkg.cfg.d/fleetbench-slim")).unwrap();
        assert!(dpkg.contains("path-exclude /usr/share/man/*"));
    }

    #[test]
    fn a_recipe_hash_changes_with_any_input() {
        let recipe = |dockerfile: &str, tansu: &str| Recipe {
            role: Role::Broker,
            dockerfile: dockerfile.into(),
            files: vec![("entry.sh", b"#!/bin/sh".to_vec())],
            inputs: vec![("tansu".into(), tansu.into())],
        };
        let base = recipe("FROM x", "0.6.0").hash();
        assert_eq!(base, recipe("FROM x", "0.6.0").hash());
        assert_ne!(base, recipe("FROM y", "0.6.0").hash());
        assert_ne!(base, recipe("FROM x", "0.6.1").hash());
    }
}
