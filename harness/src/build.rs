//! `fleetbench build`: builds the strategies' images on the chosen runtime
//! bases and compile modes, and times each build in three scenarios:
//!
//! - **cold**: no build cache (each Dockerfile's first build in the strategy
//!   runs with `nocache`; later images of the same file may reuse what the
//!   strategy itself just built, as a real pipeline would), base images present;
//! - **warm**: the same build again, nothing changed;
//! - **change**: one line of one worker's source changed, in a copy of the
//!   build context (never in the user's tree); the images whose id changed
//!   are what would have to be redeployed.
//!
//! Two compile modes: `in-docker` compiles inside the Dockerfiles from
//! crates vendored into the context (no network during the build);
//! `prebuilt` compiles the workspace once on the host and only packages.
//! Every file in the images carries `SOURCE_DATE_EPOCH` (the last commit's
//! time) as its time, so two clean builds give the same layers;
//! [`verify_reproducible`] checks it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;
use tracing::info;

use crate::analyze::layer::EntryKind;
use crate::analyze::{AnalyzeError, Analyzer};
use crate::config::FleetConfig;
use crate::context::{ContextError, ContextTar};
use crate::docker::{BuildRequest, DockerError, Engine};
use crate::strategy::{self, Base, ImagePlan, Strategy, WORKERS};

/// The Rust target every binary is compiled for.
pub const TARGET_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Errors of `fleetbench build`.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The engine failed a build or an inspection.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// A build context could not be written.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// Reading images back for the reproducibility check failed.
    #[error(transparent)]
    Analyze(#[from] AnalyzeError),
    /// A host command (cargo) failed; its output is in the log.
    #[error("{operation} failed ({status}); see {log}")]
    Command {
        /// What was being done.
        operation: String,
        /// The exit status.
        status: String,
        /// The log file.
        log: PathBuf,
    },
    /// A file or directory could not be used.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The one-worker change could not be applied.
    #[error("changing worker '{worker}' for the change scenario: {problem}")]
    Change {
        /// The worker.
        worker: String,
        /// What is wrong.
        problem: String,
    },
}

impl From<crate::tree::TreeError> for BuildError {
    fn from(error: crate::tree::TreeError) -> Self {
        BuildError::Io {
            operation: error.operation,
            path: error.path,
            source: error.source,
        }
    }
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io {
        operation,
        path,
        source,
    }
}

/// Where the binaries of an image come from.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum CompileMode {
    /// Compiled inside the Dockerfile, from vendored crates.
    InDocker,
    /// Compiled once on the host, then packaged.
    Prebuilt,
}

impl CompileMode {
    /// Both modes.
    pub const ALL: [CompileMode; 2] = [CompileMode::InDocker, CompileMode::Prebuilt];

    /// The mode's name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            CompileMode::InDocker => "in-docker",
            CompileMode::Prebuilt => "prebuilt",
        }
    }
}

/// A build scenario.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// No build cache.
    Cold,
    /// Nothing changed since the last build.
    Warm,
    /// One worker's source changed by one line.
    Change,
}

impl Scenario {
    /// The scenario's name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Cold => "cold",
            Scenario::Warm => "warm",
            Scenario::Change => "change",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Strategies, in order.
    pub strategies: Vec<Strategy>,
    /// Runtime bases.
    pub bases: Vec<Base>,
    /// Compile modes.
    pub modes: Vec<CompileMode>,
    /// Scenarios, run in the order cold, warm, change.
    pub scenarios: Vec<Scenario>,
    /// The worker whose source the change scenario edits.
    pub change_worker: String,
    /// Build only the images of these names (all when empty).
    pub only_images: Vec<String>,
    /// Cargo profile of the prebuilt mode's host compile (`release`; `dev`
    /// for quick checks, whose images are not comparable).
    pub profile: String,
    /// Directory of the per-image build logs.
    pub logs: PathBuf,
    /// Directory of contexts, vendored crates and prebuilt binaries.
    pub work: PathBuf,
}

/// One timed image build.
#[derive(Debug, Clone, Serialize)]
pub struct ImageBuild {
    /// The strategy.
    pub strategy: Strategy,
    /// The runtime base.
    pub base: Base,
    /// The compile mode.
    pub mode: CompileMode,
    /// The scenario.
    pub scenario: Scenario,
    /// The image's name within the strategy.
    pub image: String,
    /// The tag built.
    pub tag: String,
    /// Wall time of the build, context upload included, ms.
    pub elapsed_ms: u64,
    /// Dockerfile steps the engine took from its cache.
    pub cached_steps: usize,
    /// Dockerfile steps in all.
    pub total_steps: usize,
    /// The image id (digest of its configuration).
    pub id: String,
    /// Uncompressed size, as the engine reports it.
    pub size_bytes: u64,
    /// Layer diff ids, bottom first.
    pub layers: Vec<String>,
    /// In the change scenario: whether the id differs from the warm build's.
    pub changed: Option<bool>,
    /// Where the build's output is.
    pub log: PathBuf,
}

/// A host compile for the prebuilt mode.
#[derive(Debug, Clone, Serialize)]
pub struct HostCompile {
    /// The base the binaries are for (dynamic or static linking).
    pub base: Base,
    /// Whether this compile is of the changed copy of the workspace.
    pub scenario: Scenario,
    /// Wall time of `cargo build --release`, ms.
    pub elapsed_ms: u64,
}

/// Everything one `fleetbench build` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// The commit built, or `unknown`.
    pub revision: String,
    /// The time given to every file in the images.
    pub source_date_epoch: u64,
    /// The worker edited by the change scenario.
    pub change_worker: String,
    /// Host compiles of the prebuilt mode.
    pub host_compiles: Vec<HostCompile>,
    /// Every image build, in order.
    pub builds: Vec<ImageBuild>,
}

impl BuildReport {
    /// Images whose id changed in the change scenario of a strategy, base and mode.
    pub fn redeployed(&self, strategy: Strategy, base: Base, mode: CompileMode) -> Vec<&str> {
        self.builds
            .iter()
            .filter(|b| b.strategy == strategy && b.base == base && b.mode == mode)
            .filter(|b| b.changed == Some(true))
            .map(|b| b.image.as_str())
            .collect()
    }
}

/// Which source a build is of: what the OCI labels and file times say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceIdentity {
    /// The commit time of `HEAD`, or `SOURCE_DATE_EPOCH` when set (0 outside git).
    pub epoch: u64,
    /// The commit, or `unknown`.
    pub revision: String,
    /// The repository's `origin` URL, or `unknown`.
    pub source: String,
}

/// The identity of the source tree at `root`.
pub fn source_identity(root: &Path) -> SourceIdentity {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| git(&["log", "-1", "--format=%ct"]).and_then(|t| t.parse().ok()))
        .unwrap_or(0);
    SourceIdentity {
        epoch,
        revision: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
        source: git(&["remote", "get-url", "origin"]).unwrap_or_else(|| "unknown".into()),
    }
}

/// The path patterns of `.dockerignore` that fleetbench understands: a
/// top-level name (`target`), or `**/*.suffix`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    names: BTreeSet<String>,
    suffixes: Vec<String>,
}

impl IgnoreRules {
    /// Parses `.dockerignore` text; comments and blank lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut rules = Self::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(suffix) = line.strip_prefix("**/*") {
                rules.suffixes.push(suffix.to_string());
            } else {
                rules
                    .names
                    .insert(line.trim_start_matches("./").trim_end_matches('/').into());
            }
        }
        rules
    }

    /// Whether `relative` (a path below the root) is left out of the context.
    pub fn ignores(&self, relative: &Path) -> bool {
        let text = relative.to_string_lossy();
        self.names.contains(text.as_ref())
            || relative.components().next().is_some_and(|c| {
                self.names
                    .contains(c.as_os_str().to_string_lossy().as_ref())
            })
            || self.suffixes.iter().any(|s| text.ends_with(s.as_str()))
    }
}

/// The one-line change of the change scenario: a string the worker's
/// `run_process` passes through `black_box`, so that every binary holding
/// the worker (its own, the unified set, the multi-call binary) changes.
pub fn change_source(worker: &str, source: &str) -> Result<String, BuildError> {
    let anchor = "pub async fn run_process() -> i32 {";
    let at = source.find(anchor).ok_or_else(|| BuildError::Change {
        worker: worker.to_string(),
        problem: format!("its src/lib.rs has no `{anchor}` to change"),
    })?;
    let insert = at + anchor.len();
    Ok(format!(
        "{}\n    std::hint::black_box(\"fleetbench change scenario\");{}",
        &source[..insert],
        &source[insert..]
    ))
}

/// What the images of one compile mode are built from.
enum Context {
    /// One source context for every image (in-docker).
    Tar(PathBuf),
    /// The directory of host-compiled binaries (prebuilt); each image gets a
    /// context with only its own.
    Binaries(PathBuf),
}

/// Builds what `options` asks for, calling `progress` with a line per step.
pub struct Builder<'a> {
    engine: &'a Engine,
    config: &'a FleetConfig,
    options: BuildOptions,
    root: PathBuf,
    identity: SourceIdentity,
}

impl<'a> Builder<'a> {
    /// A builder for the project of `config`.
    pub fn new(engine: &'a Engine, config: &'a FleetConfig, options: BuildOptions) -> Self {
        let root = config.root();
        let identity = source_identity(&root);
        Self {
            engine,
            config,
            options,
            root,
            identity,
        }
    }

    /// Runs every build; `progress` sees one line per image.
    pub async fn run(&self, mut progress: impl FnMut(&str)) -> Result<BuildReport, BuildError> {
        for dir in [&self.options.logs, &self.options.work] {
            std::fs::create_dir_all(dir).map_err(io_error("creating directory", dir))?;
        }
        let mut report = BuildReport {
            revision: self.identity.revision.clone(),
            source_date_epoch: self.identity.epoch,
            change_worker: self.options.change_worker.clone(),
            host_compiles: Vec::new(),
            builds: Vec::new(),
        };
        let wants = |s: Scenario| self.options.scenarios.contains(&s);
        for &mode in &self.options.modes {
            for &base in &self.options.bases {
                progress(&format!(
                    "preparing the {} context ({})",
                    mode.name(),
                    base.name()
                ));
                let context = self.context(mode, base, false, &mut report).await?;
                let changed = if wants(Scenario::Change) {
                    Some(self.context(mode, base, true, &mut report).await?)
                } else {
                    None
                };
                for &strategy in &self.options.strategies {
                    let plans: Vec<ImagePlan> = strategy::images(strategy)
                        .into_iter()
                        .filter(|plan| {
                            self.options.only_images.is_empty()
                                || self.options.only_images.contains(&plan.name)
                        })
                        .collect();
                    let mut warm_ids = HashMap::new();
                    for scenario in [Scenario::Cold, Scenario::Warm, Scenario::Change] {
                        if !wants(scenario) {
                            continue;
                        }
                        let (source, is_change) = match (scenario, &changed) {
                            (Scenario::Change, Some(changed)) => (changed, true),
                            _ => (&context, false),
                        };
                        let mut seen_files = BTreeSet::new();
                        for plan in &plans {
                            let no_cache =
                                scenario == Scenario::Cold && seen_files.insert(&plan.dockerfile);
                            progress(&format!(
                                "{} {} {} {}: {}",
                                strategy.name(),
                                base.name(),
                                mode.name(),
                                scenario.name(),
                                plan.name
                            ));
                            let tar = match source {
                                Context::Tar(tar) => tar.clone(),
                                Context::Binaries(dir) => {
                                    self.prebuilt_context(base, is_change, plan, dir)?
                                }
                            };
                            let mut build = self
                                .build_image(strategy, base, mode, scenario, plan, &tar, no_cache)
                                .await?;
                            if scenario == Scenario::Change {
                                build.changed =
                                    warm_ids.get(&plan.name).map(|id: &String| *id != build.id);
                            } else {
                                warm_ids.insert(plan.name.clone(), build.id.clone());
                            }
                            report.builds.push(build);
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Writes the build context of `mode` (and `base`, for prebuilt binaries).
    async fn context(
        &self,
        mode: CompileMode,
        base: Base,
        changed: bool,
        report: &mut BuildReport,
    ) -> Result<Context, BuildError> {
        let suffix = if changed { "-change" } else { "" };
        match mode {
            CompileMode::InDocker => {
                let tar = self.options.work.join(format!("in-docker{suffix}.tar"));
                if base == self.options.bases[0] {
                    let vendor = self.vendor().await?;
                    let change = if changed {
                        Some(self.changed_lib()?)
                    } else {
                        None
                    };
                    self.write_source_context(&tar, &vendor, change.as_ref())?;
                }
                Ok(Context::Tar(tar))
            }
            CompileMode::Prebuilt => {
                let tree = self.host_tree(changed)?;
                let started = Instant::now();
                let compiled = self.host_compile(&tree, base, changed).await?;
                report.host_compiles.push(HostCompile {
                    base,
                    scenario: if changed {
                        Scenario::Change
                    } else {
                        Scenario::Cold
                    },
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
                let staged = self
                    .options
                    .work
                    .join(format!("binaries-{}{suffix}", base.name()));
                stage_binaries(&compiled, &staged)?;
                Ok(Context::Binaries(staged))
            }
        }
    }

    /// A prebuilt context: the Dockerfiles and only the binaries `plan`
    /// packages, so that no image build uploads the others.
    fn prebuilt_context(
        &self,
        base: Base,
        changed: bool,
        plan: &ImagePlan,
        bin_dir: &Path,
    ) -> Result<PathBuf, BuildError> {
        let suffix = if changed { "-change" } else { "" };
        let tar = self.options.work.join(format!(
            "prebuilt-{}{suffix}-{}.tar",
            base.name(),
            plan.name
        ));
        let mut context = ContextTar::create(&tar, self.identity.epoch)?;
        context.add_dir("dockerfiles", &self.root.join("dockerfiles"), &|_| false)?;
        for binary in &plan.binaries {
            context.add_file(
                &format!("prebuilt/{TARGET_TRIPLE}/{binary}"),
                &bin_dir.join(binary),
            )?;
        }
        context.finish()?;
        Ok(tar)
    }

    /// The changed worker's `src/lib.rs`, as (path in the tree, new text).
    fn changed_lib(&self) -> Result<(PathBuf, String), BuildError> {
        let worker = &self.options.change_worker;
        if !WORKERS.contains(&worker.as_str()) {
            return Err(BuildError::Change {
                worker: worker.clone(),
                problem: format!("not a worker of the fleet ({})", WORKERS.join(", ")),
            });
        }
        let relative = PathBuf::from(format!("workers/{worker}/src/lib.rs"));
        let path = self.root.join(&relative);
        let text = std::fs::read_to_string(&path).map_err(io_error("reading", &path))?;
        Ok((relative, change_source(worker, &text)?))
    }

    /// The tree the prebuilt mode compiles: a copy of the workspace (what
    /// the build context holds) at a fixed place, brought up to date file by
    /// file, with the one-line change when `changed`. Both scenarios compile
    /// it into one target directory, so the change costs what it costs a
    /// developer, the changed worker and what depends on it, and the user's
    /// `target/` is never touched.
    fn host_tree(&self, changed: bool) -> Result<PathBuf, BuildError> {
        let tree = self.options.work.join("host-tree");
        let rules = self.ignore_rules()?;
        let written = crate::tree::sync_tree(&self.root, &tree, &|p| {
            rules.ignores(p) || p.starts_with("vendor")
        })?;
        info!(tree = %tree.display(), written, changed, "workspace copy brought up to date");
        if changed {
            let (relative, text) = self.changed_lib()?;
            let path = tree.join(relative);
            std::fs::write(&path, text).map_err(io_error("writing", &path))?;
        }
        Ok(tree)
    }

    fn ignore_rules(&self) -> Result<IgnoreRules, BuildError> {
        let path = self.root.join(".dockerignore");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(IgnoreRules::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IgnoreRules::default()),
            Err(e) => Err(io_error("reading", &path)(e)),
        }
    }

    /// The workspace, the vendored crates and the cargo settings that use
    /// them offline, as one context tar.
    fn write_source_context(
        &self,
        tar: &Path,
        vendor: &Path,
        change: Option<&(PathBuf, String)>,
    ) -> Result<(), BuildError> {
        let rules = self.ignore_rules()?;
        let mut context = ContextTar::create(tar, self.identity.epoch)?;
        let skip =
            |p: &Path| rules.ignores(p) || p.starts_with("vendor") || p == Path::new(".cargo");
        let mut top: Vec<_> = std::fs::read_dir(&self.root)
            .map_err(io_error("listing", &self.root))?
            .collect::<Result<_, _>>()
            .map_err(io_error("listing", &self.root))?;
        top.sort_by_key(|e| e.file_name());
        for entry in top {
            let name = PathBuf::from(entry.file_name());
            if skip(&name) {
                continue;
            }
            let label = name.to_string_lossy().to_string();
            if entry.path().is_dir() {
                context.add_dir(&label, &entry.path(), &|p| {
                    let full = name.join(p);
                    skip(&full) || change.is_some_and(|(changed, _)| *changed == full)
                })?;
            } else {
                context.add_file(&label, &entry.path())?;
            }
        }
        if let Some((relative, text)) = change {
            context.add_bytes(&relative.to_string_lossy(), text.as_bytes(), 0o644)?;
        }
        context.add_dir("vendor", vendor, &|_| false)?;
        context.add_bytes(
            ".cargo/config.toml",
            b"# Written by fleetbench build: crates come from vendor/, never the network.\n\
              [source.crates-io]\nreplace-with = \"vendored-sources\"\n\n\
              [source.vendored-sources]\ndirectory = \"vendor\"\n\n\
              [net]\noffline = true\n",
            0o644,
        )?;
        context.finish()?;
        Ok(())
    }

    /// `cargo vendor` of the workspace's locked crates, cached by the lock
    /// file's hash.
    async fn vendor(&self) -> Result<PathBuf, BuildError> {
        use sha2::Digest;
        let lock = self.root.join("Cargo.lock");
        let bytes = std::fs::read(&lock).map_err(io_error("reading", &lock))?;
        let hash = hex::encode(sha2::Sha256::digest(&bytes));
        let dir = self.options.work.join(format!("vendor-{}", &hash[..16]));
        if dir.join(".complete").exists() {
            return Ok(dir);
        }
        let partial = self.options.work.join("vendor-partial");
        let _ = std::fs::remove_dir_all(&partial);
        let log = self.options.logs.join("cargo-vendor.log");
        let args = vec![
            "vendor".to_string(),
            "--locked".into(),
            partial.display().to_string(),
        ];
        run_logged("cargo", &args, &self.root, &[], &log, "cargo vendor").await?;
        let pruned = prune_windows_crates(&partial)?;
        info!(crates = pruned, "emptied Windows-only vendored crates");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir).map_err(io_error("moving vendored crates to", &dir))?;
        std::fs::write(dir.join(".complete"), "").map_err(io_error("marking", &dir))?;
        Ok(dir)
    }

    /// `cargo build` of the workspace's binaries in `tree`, for `base`, into
    /// a target directory beside the tree; returns the binaries' directory
    /// (static ones below the target triple, as `+crt-static` needs
    /// `--target`). The directory is kept between runs: the first prebuilt
    /// build on a machine compiles every dependency once, later ones only
    /// what changed. It lies outside the tree because `sync_tree` removes
    /// from the copy whatever the workspace lacks, a `target/` inside it too.
    /// The compile of the `changed` tree logs to a file of its own.
    async fn host_compile(
        &self,
        tree: &Path,
        base: Base,
        changed: bool,
    ) -> Result<PathBuf, BuildError> {
        let profile = &self.options.profile;
        // Cargo resolves a relative CARGO_TARGET_DIR against the tree it
        // compiles, so the directories are made absolute first.
        let tree = std::path::absolute(tree).map_err(io_error("resolving", tree))?;
        let work = &self.options.work;
        let mut target_dir = std::path::absolute(work)
            .map_err(io_error("resolving", work))?
            .join("host-target");
        let mut args = vec![
            "build".to_string(),
            "--profile".into(),
            profile.clone(),
            "--locked".into(),
            "--workspace".into(),
            // The images hold the workers and `fleet`; the harness is not
            // packaged, so it is not part of the compile being timed.
            "--exclude".into(),
            "fleetbench".into(),
            "--bins".into(),
        ];
        if base == Base::Scratch {
            args.push("--target".into());
            args.push(TARGET_TRIPLE.into());
        }
        let suffix = if changed { "-change" } else { "" };
        let log = self
            .options
            .logs
            .join(format!("cargo-{profile}-{}{suffix}.log", base.name()));
        let mut env = vec![("CARGO_TARGET_DIR", target_dir.display().to_string())];
        if base == Base::Scratch {
            env.push(("RUSTFLAGS", base.rustflags().to_string()));
            target_dir.push(TARGET_TRIPLE);
        }
        let profile_dir = if profile == "dev" {
            "debug"
        } else {
            profile.as_str()
        };
        info!(base = base.name(), %profile, tree = %tree.display(), "compiling the workers on the host");
        run_logged(
            "cargo",
            &args,
            &tree,
            &env,
            &log,
            &format!("cargo build --profile {profile}"),
        )
        .await?;
        Ok(target_dir.join(profile_dir))
    }

    #[allow(clippy::too_many_arguments)]
    async fn build_image(
        &self,
        strategy: Strategy,
        base: Base,
        mode: CompileMode,
        scenario: Scenario,
        plan: &ImagePlan,
        context: &Path,
        no_cache: bool,
    ) -> Result<ImageBuild, BuildError> {
        let mut tag = plan.tag(strategy, base);
        if scenario == Scenario::Change {
            tag.push_str("-change");
        }
        let log = self.options.logs.join(format!(
            "{}-{}-{}-{}-{}.log",
            strategy.name(),
            base.name(),
            mode.name(),
            scenario.name(),
            plan.name
        ));
        let build_args = self.build_args(base, mode);
        let labels = HashMap::from([("org.fleetbench.mode".to_string(), mode.name().to_string())]);
        let request = BuildRequest {
            image: &tag,
            dockerfile: &plan.dockerfile,
            target: plan.target.as_deref(),
            context_tar: context,
            build_args,
            labels,
            no_cache,
            log_path: &log,
        };
        let built = self.engine.build(&request, |_| {}).await?;
        let facts = self
            .engine
            .image_facts(&tag)
            .await?
            .ok_or_else(|| DockerError::Build {
                image: tag.clone(),
                dockerfile: plan.dockerfile.clone(),
                message: "the engine reported success but has no such image".into(),
                log: log.clone(),
            })?;
        info!(
            strategy = strategy.name(),
            base = base.name(),
            mode = mode.name(),
            scenario = scenario.name(),
            image = %tag,
            elapsed_ms = built.elapsed.as_millis() as u64,
            cached_steps = built.cached_steps,
            "built"
        );
        Ok(ImageBuild {
            strategy,
            base,
            mode,
            scenario,
            image: plan.name.clone(),
            tag,
            elapsed_ms: built.elapsed.as_millis() as u64,
            cached_steps: built.cached_steps,
            total_steps: built.total_steps,
            id: facts.id,
            size_bytes: facts.size_bytes,
            layers: facts.layers,
            changed: None,
            log,
        })
    }

    fn build_args(&self, base: Base, mode: CompileMode) -> HashMap<String, String> {
        let images = &self.config.images;
        let builder = match mode {
            // Packaging prebuilt binaries needs a shell, not a toolchain.
            CompileMode::Prebuilt => images.base.reference(),
            CompileMode::InDocker => images.builder.reference(),
        };
        let runtime = match base {
            Base::Debian => images.base.reference(),
            Base::Scratch => "scratch",
        };
        HashMap::from([
            ("BUILDER_IMAGE".to_string(), builder.to_string()),
            ("RUNTIME_IMAGE".into(), runtime.to_string()),
            ("RUSTFLAGS".into(), base.rustflags().to_string()),
            ("TARGET".into(), TARGET_TRIPLE.to_string()),
            (
                "PREBUILT".into(),
                if mode == CompileMode::Prebuilt {
                    "1"
                } else {
                    ""
                }
                .to_string(),
            ),
            ("SOURCE_DATE_EPOCH".into(), self.identity.epoch.to_string()),
            ("REVISION".into(), self.identity.revision.clone()),
            ("SOURCE".into(), self.identity.source.clone()),
        ])
    }
}

/// Whether a vendored crate only ever builds for Windows targets: the
/// `windows-*`, `windows_*` and `winapi*` families.
pub fn is_windows_only(crate_dir: &str) -> bool {
    crate_dir.starts_with("windows-")
        || crate_dir.starts_with("windows_")
        || crate_dir == "windows"
        || crate_dir.starts_with("winapi")
}

/// Empties the Windows-only crates of a `cargo vendor` directory (a third of
/// its bytes), as cargo-vendor-filterer does: cargo still reads their
/// manifests to resolve the lock file, but never compiles them on Linux.
/// Each keeps its manifest and build script, gets an empty library, and a
/// checksum file that lists no files (cargo checks only what is listed).
pub fn prune_windows_crates(vendor: &Path) -> Result<usize, BuildError> {
    let mut pruned = 0;
    for entry in std::fs::read_dir(vendor).map_err(io_error("listing", vendor))? {
        let entry = entry.map_err(io_error("listing", vendor))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !is_windows_only(&name) {
            continue;
        }
        let dir = entry.path();
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(io_error("reading", &manifest))?;
        let parsed: toml::Table = toml::from_str(&text).map_err(|e| BuildError::Change {
            worker: name.clone(),
            problem: format!(
                "vendored manifest {} does not parse: {e}",
                manifest.display()
            ),
        })?;
        let lib_path = parsed
            .get("lib")
            .and_then(|lib| lib.get("path"))
            .and_then(|path| path.as_str())
            .unwrap_or("src/lib.rs")
            .to_string();
        let build_script = parsed
            .get("package")
            .and_then(|p| p.get("build"))
            .and_then(|b| b.as_str())
            .map(str::to_string);
        let checksum_path = dir.join(".cargo-checksum.json");
        let checksum: serde_json::Value = std::fs::read_to_string(&checksum_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let keep = |relative: &Path| {
            relative == Path::new("Cargo.toml")
                || build_script
                    .as_deref()
                    .is_some_and(|b| relative == Path::new(b))
                || (build_script.is_none() && relative == Path::new("build.rs"))
        };
        for child in std::fs::read_dir(&dir).map_err(io_error("listing", &dir))? {
            let child = child.map_err(io_error("listing", &dir))?;
            let relative = PathBuf::from(child.file_name());
            if keep(&relative) {
                continue;
            }
            let path = child.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).map_err(io_error("removing", &path))?;
            } else {
                std::fs::remove_file(&path).map_err(io_error("removing", &path))?;
            }
        }
        let lib = dir.join(&lib_path);
        if let Some(parent) = lib.parent() {
            std::fs::create_dir_all(parent).map_err(io_error("creating", parent))?;
        }
        std::fs::write(&lib, "").map_err(io_error("writing", &lib))?;
        let stub = serde_json::json!({"files": {}, "package": checksum.get("package")});
        std::fs::write(&checksum_path, stub.to_string())
            .map_err(io_error("writing", &checksum_path))?;
        pruned += 1;
    }
    Ok(pruned)
}

/// Copies the fleet's binaries (the nine workers and `fleet`) out of the
/// compile's directory into `to`, so that a later compile into the same
/// target directory cannot replace them before they are packaged.
fn stage_binaries(compiled: &Path, to: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(to).map_err(io_error("creating", to))?;
    for binary in WORKERS.iter().copied().chain(["fleet"]) {
        let from = compiled.join(binary);
        let target = to.join(binary);
        std::fs::copy(&from, &target).map_err(io_error("copying the compiled binary", &from))?;
    }
    Ok(())
}

/// Runs a host command in `dir` with its output in `log`.
async fn run_logged(
    program: &str,
    args: &[String],
    dir: &Path,
    env: &[(&str, String)],
    log: &Path,
    operation: &str,
) -> Result<(), BuildError> {
    let file = std::fs::File::create(log).map_err(io_error("creating log", log))?;
    let err_file = file.try_clone().map_err(io_error("creating log", log))?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err_file)
        .status()
        .await
        .map_err(io_error("starting", Path::new(program)))?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Command {
            operation: operation.to_string(),
            status: status.to_string(),
            log: log.to_path_buf(),
        })
    }
}

/// One image's reproducibility: its layers in two clean builds.
#[derive(Debug, Clone, Serialize)]
pub struct Reproducibility {
    /// The image's tag.
    pub tag: String,
    /// Whether every layer diff id is the same.
    pub reproducible: bool,
    /// The layers that differ, with the files that differ in them.
    pub differing_layers: Vec<LayerDifference>,
}

/// A layer that two clean builds made differently.
#[derive(Debug, Clone, Serialize)]
pub struct LayerDifference {
    /// Position of the layer, bottom first.
    pub index: usize,
    /// Diff id in the first build.
    pub first: String,
    /// Diff id in the second build.
    pub second: String,
    /// Paths whose content differs or that only one build has; empty when
    /// only metadata (times, modes, owners) differs.
    pub files: Vec<String>,
}

/// Compares the layers of the images `first` built with those of a second,
/// clean build tagged `second`, and names the files that differ.
pub async fn compare_builds(
    engine: &Engine,
    first: &ImageBuild,
    second: &ImageBuild,
) -> Result<Reproducibility, BuildError> {
    let mut differing = Vec::new();
    let count = first.layers.len().max(second.layers.len());
    let mut scans = None;
    for index in 0..count {
        let (a, b) = (first.layers.get(index), second.layers.get(index));
        if a == b {
            continue;
        }
        if scans.is_none() {
            let mut analyzer = Analyzer::with_engine(engine.clone(), 0);
            let one = analyzer.analyze(&first.tag).await?;
            let two = analyzer.analyze(&second.tag).await?;
            scans = Some((one, two));
        }
        let (one, two) = scans.as_ref().expect("scans were just read");
        let files_of = |images: &[crate::analyze::ImageAnalysis]| {
            images
                .first()
                .and_then(|image| image.scans.get(index))
                .map(|scan| {
                    scan.entries
                        .iter()
                        .filter_map(|e| match &e.kind {
                            EntryKind::File { sha256, .. } => Some((e.path.clone(), *sha256)),
                            _ => None,
                        })
                        .collect::<BTreeMap<_, _>>()
                })
                .unwrap_or_default()
        };
        let (x, y) = (files_of(one), files_of(two));
        let files = x
            .keys()
            .chain(y.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|path| x.get(*path) != y.get(*path))
            .cloned()
            .collect();
        differing.push(LayerDifference {
            index,
            first: a.cloned().unwrap_or_default(),
            second: b.cloned().unwrap_or_default(),
            files,
        });
    }
    Ok(Reproducibility {
        tag: first.tag.clone(),
        reproducible: differing.is_empty(),
        differing_layers: differing,
    })
}

/// Builds every image of `options` twice without cache and compares the
/// layers of the two builds.
pub async fn verify_reproducible(
    engine: &Engine,
    config: &FleetConfig,
    options: &BuildOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Reproducibility>, BuildError> {
    let mut once = options.clone();
    once.scenarios = vec![Scenario::Cold];
    let builder = Builder::new(engine, config, once);
    let mut results = Vec::new();
    let first = builder.run(&mut progress).await?;
    let mut keep = HashMap::new();
    for build in &first.builds {
        let copy = format!("{}-repro-first", build.tag);
        engine
            .client
            .tag_image(
                &build.id,
                Some(
                    bollard::query_parameters::TagImageOptionsBuilder::default()
                        .repo(copy.split(':').next().unwrap_or(&copy))
                        .tag(copy.split(':').nth(1).unwrap_or("latest"))
                        .build(),
                ),
            )
            .await
            .map_err(|source| DockerError::Inspect {
                image: build.tag.clone(),
                source,
            })?;
        let mut kept = build.clone();
        kept.tag = copy;
        keep.insert(build.tag.clone(), kept);
    }
    let second = builder.run(&mut progress).await?;
    for build in &second.builds {
        if let Some(first) = keep.get(&build.tag) {
            progress(&format!("comparing {}", build.tag));
            results.push(compare_builds(engine, first, build).await?);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_names_and_suffixes_are_honoured() {
        let rules = IgnoreRules::parse("# c\n.git\ntarget\n**/*.log\n");
        assert!(rules.ignores(Path::new("target")));
        assert!(rules.ignores(Path::new("target/debug/x")));
        assert!(rules.ignores(Path::new("workers/a/build.log")));
        assert!(!rules.ignores(Path::new("workers/target-x/src/lib.rs")));
        assert!(!rules.ignores(Path::new("harness/src/main.rs")));
    }

    #[test]
    fn only_windows_crate_families_are_pruned() {
        for name in [
            "windows-sys-0.52.0",
            "windows_x86_64_gnu",
            "winapi",
            "windows",
        ] {
            assert!(is_windows_only(name), "{name}");
        }
        for name in ["windowed", "wasi", "win-crypto-ng", "tokio"] {
            assert!(!is_windows_only(name), "{name}");
        }
    }

    #[test]
    fn the_change_scenario_edits_one_line_of_run_process() {
        let source = "//! w\npub async fn run_process() -> i32 {\n    0\n}\n";
        let changed = change_source("w", source).unwrap();
        assert_eq!(changed.lines().count(), source.lines().count() + 1);
        assert!(changed.contains("black_box(\"fleetbench change scenario\")"));
        assert!(change_source("w", "fn main() {}").is_err());
    }
}
