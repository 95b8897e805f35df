//! The packaging strategies: which images each one builds (from which
//! Dockerfile and stage, holding which binaries) and which image and command
//! runs each of the nine workers. The same workers and code in every
//! strategy; only the packaging differs.

use serde::{Deserialize, Serialize};

/// The nine workers of the fleet, in pipeline order; each is also the name
/// of its binary.
pub const WORKERS: [&str; 9] = [
    "data-ingestor",
    "kpi-worker",
    "anomaly-detector",
    "model-trainer",
    "forecaster",
    "alert-manager",
    "incident-correlator",
    "sla-reporter",
    "retention-compactor",
];

/// The workers the specialised strategy gives images of their own, with the
/// image name and Dockerfile suffix of each.
const SPECIALIZED: [(&str, &str); 3] = [
    ("data-ingestor", "ingestor"),
    ("kpi-worker", "kpi"),
    ("anomaly-detector", "aiops"),
];

/// A way of packaging the fleet into images.
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
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// One self-contained Dockerfile per worker, each compiling its worker.
    Separated,
    /// One image with all nine binaries; the command picks the worker.
    Unified,
    /// The three heavy workers specialised, the rest on the unified image.
    Specialized,
    /// One multi-stage Dockerfile: shared builder and base, thin final stages.
    Layered,
    /// One multi-call binary for all nine workers.
    Multicall,
}

impl Strategy {
    /// Every strategy, in the order reports list them.
    pub const ALL: [Strategy; 5] = [
        Strategy::Separated,
        Strategy::Unified,
        Strategy::Specialized,
        Strategy::Layered,
        Strategy::Multicall,
    ];

    /// The strategy's name, as the CLI and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Separated => "separated",
            Strategy::Unified => "unified",
            Strategy::Specialized => "specialized",
            Strategy::Layered => "layered",
            Strategy::Multicall => "multicall",
        }
    }
}

/// The runtime base of the images.
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
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Base {
    /// Debian slim, binaries linked dynamically against glibc.
    Debian,
    /// An empty image, binaries linked statically (`+crt-static`).
    Scratch,
}

impl Base {
    /// Both bases.
    pub const ALL: [Base; 2] = [Base::Debian, Base::Scratch];

    /// The base's name, as the CLI and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Base::Debian => "debian",
            Base::Scratch => "scratch",
        }
    }

    /// The `RUSTFLAGS` its binaries are compiled with.
    pub fn rustflags(self) -> &'static str {
        match self {
            Base::Debian => "",
            Base::Scratch => "-C target-feature=+crt-static",
        }
    }
}

/// One image a strategy builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImagePlan {
    /// Short name, unique within the strategy (`kpi-worker`, `unified`).
    pub name: String,
    /// The Dockerfile, relative to the project root.
    pub dockerfile: String,
    /// The stage to build, for multi-stage files with one stage per image.
    pub target: Option<String>,
    /// Binaries a prebuilt context must carry: the image's own, or, for
    /// the layered file, whose shared builder stage installs every worker,
    /// all nine.
    pub binaries: Vec<String>,
}

impl ImagePlan {
    /// The image's tag for `strategy` on `base`.
    pub fn tag(&self, strategy: Strategy, base: Base) -> String {
        format!(
            "fleetbench/{}-{}:{}",
            strategy.name(),
            base.name(),
            self.name
        )
    }
}

/// Which image runs a worker, and with what command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// The worker.
    pub worker: &'static str,
    /// The name of the strategy's image that runs it (see [`ImagePlan::name`]).
    pub image: String,
    /// The container command; empty when the image's entrypoint is the worker.
    pub command: Vec<String>,
}

fn single(name: &str, dockerfile: &str, binary: &str) -> ImagePlan {
    ImagePlan {
        name: name.to_string(),
        dockerfile: format!("dockerfiles/{dockerfile}"),
        target: None,
        binaries: vec![binary.to_string()],
    }
}

/// The nine workers' binaries, for images (or build stages) holding all.
fn all_worker_binaries() -> Vec<String> {
    WORKERS.iter().map(|w| w.to_string()).collect()
}

fn unified_image() -> ImagePlan {
    ImagePlan {
        name: "unified".into(),
        dockerfile: "dockerfiles/Dockerfile.unified".into(),
        target: None,
        binaries: all_worker_binaries(),
    }
}

/// The images `strategy` builds, in build order.
pub fn images(strategy: Strategy) -> Vec<ImagePlan> {
    match strategy {
        Strategy::Separated => WORKERS
            .iter()
            .map(|w| single(w, &format!("Dockerfile.{w}"), w))
            .collect(),
        Strategy::Unified => vec![unified_image()],
        Strategy::Specialized => {
            let mut plans: Vec<ImagePlan> = SPECIALIZED
                .iter()
                .map(|(worker, name)| single(name, &format!("Dockerfile.{name}"), worker))
                .collect();
            plans.push(unified_image());
            plans
        }
        Strategy::Layered => WORKERS
            .iter()
            .map(|w| ImagePlan {
                name: w.to_string(),
                dockerfile: "dockerfiles/Dockerfile.layered".into(),
                target: Some(w.to_string()),
                binaries: all_worker_binaries(),
            })
            .collect(),
        Strategy::Multicall => vec![ImagePlan {
            name: "fleet".into(),
            dockerfile: "dockerfiles/Dockerfile.multicall".into(),
            target: None,
            binaries: vec!["fleet".into()],
        }],
    }
}

/// Which image and command runs each worker under `strategy`.
pub fn assignments(strategy: Strategy) -> Vec<Assignment> {
    WORKERS
        .iter()
        .map(|&worker| {
            let by_name = |image: &str| Assignment {
                worker,
                image: image.to_string(),
                command: vec![worker.to_string()],
            };
            let own = |image: &str| Assignment {
                worker,
                image: image.to_string(),
                command: Vec::new(),
            };
            match strategy {
                Strategy::Separated | Strategy::Layered => own(worker),
                Strategy::Unified => by_name("unified"),
                Strategy::Multicall => by_name("fleet"),
                Strategy::Specialized => match SPECIALIZED.iter().find(|(w, _)| *w == worker) {
                    Some((_, image)) => own(image),
                    None => by_name("unified"),
                },
            }
        })
        .collect()
}

/// The env file of `dockerfiles/compose.yaml` for `strategy` on `base`:
/// one `<WORKER>_IMAGE=<tag>` line per worker.
pub fn compose_env(strategy: Strategy, base: Base) -> String {
    let plans = images(strategy);
    let mut text = format!(
        "# dockerfiles/compose.yaml for strategy {} on base {}; generated from\n\
         # harness/src/strategy.rs (FLEETBENCH_BLESS=1 cargo test writes it again).\n",
        strategy.name(),
        base.name()
    );
    for assignment in assignments(strategy) {
        let plan = plans
            .iter()
            .find(|p| p.name == assignment.image)
            .expect("every assignment names one of the strategy's images");
        let variable = assignment.worker.to_uppercase().replace('-', "_");
        text.push_str(&format!("{variable}_IMAGE={}\n", plan.tag(strategy, base)));
    }
    text
}

/// The per-worker Dockerfiles rendered from
/// `dockerfiles/templates/single-worker.Dockerfile`: the nine of the
/// separated strategy and the three of the specialised one, as
/// (file name, contents).
pub fn render_single_worker_dockerfiles(template: &str) -> Vec<(String, String)> {
    let render = |strategy: &str, worker: &str, purpose: &str, profile: &str| {
        template
            .replace("@STRATEGY@", strategy)
            .replace("@WORKER@", worker)
            .replace("@PACKAGE@", worker)
            .replace("@BINARY@", worker)
            .replace("@PURPOSE@", purpose)
            .replace("@PROFILE@", profile)
    };
    let mut files: Vec<(String, String)> = WORKERS
        .iter()
        .map(|w| {
            (
                format!("Dockerfile.{w}"),
                render(
                    "separated",
                    w,
                    "One of nine such files:\n# every worker image compiles the whole dependency tree again.",
                    "",
                ),
            )
        })
        .collect();
    files.extend(SPECIALIZED.iter().map(|(worker, name)| {
        (
            format!("Dockerfile.{name}"),
            render(
                "specialized",
                worker,
                "Specialised for one of the three\n# hottest workers: fat LTO and one codegen unit, a slower build for a faster binary.",
                "CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 ",
            ),
        )
    }));
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn every_strategy_runs_each_worker_on_one_of_its_own_images() {
        for strategy in Strategy::ALL {
            let names: BTreeSet<String> = images(strategy).into_iter().map(|i| i.name).collect();
            let runs = assignments(strategy);
            assert_eq!(runs.len(), WORKERS.len());
            for run in runs {
                assert!(names.contains(&run.image), "{strategy:?}: {run:?}");
            }
        }
    }

    #[test]
    fn image_counts_follow_the_design() {
        let count = |s| images(s).len();
        assert_eq!(count(Strategy::Separated), 9);
        assert_eq!(count(Strategy::Unified), 1);
        assert_eq!(count(Strategy::Specialized), 4);
        assert_eq!(count(Strategy::Layered), 9);
        assert_eq!(count(Strategy::Multicall), 1);
    }

    #[test]
    fn every_dockerfile_a_strategy_names_exists_and_has_its_stage() {
        for strategy in Strategy::ALL {
            for plan in images(strategy) {
                let text = std::fs::read_to_string(root().join(&plan.dockerfile))
                    .unwrap_or_else(|e| panic!("{}: {e}", plan.dockerfile));
                if let Some(target) = &plan.target {
                    assert!(
                        text.contains(&format!(" AS {target}\n")),
                        "{} lacks stage {target}",
                        plan.dockerfile
                    );
                }
                assert!(text.contains("USER 65532:65532"), "{}", plan.dockerfile);
            }
        }
    }

    #[test]
    fn the_compose_env_files_follow_the_strategy_table() {
        let dir = root().join("dockerfiles/compose");
        let compose = std::fs::read_to_string(root().join("dockerfiles/compose.yaml")).unwrap();
        let bless = std::env::var_os("FLEETBENCH_BLESS").is_some();
        for strategy in Strategy::ALL {
            for base in Base::ALL {
                let name = format!("{}-{}.env", strategy.name(), base.name());
                let text = compose_env(strategy, base);
                if bless {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(dir.join(&name), &text).unwrap();
                }
                let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
                assert!(
                    committed == text,
                    "dockerfiles/compose/{name} differs; run this test with FLEETBENCH_BLESS=1"
                );
            }
        }
        for worker in WORKERS {
            let variable = worker.to_uppercase().replace('-', "_");
            assert!(
                compose.contains(&format!("${{{variable}_IMAGE:?")),
                "{worker}"
            );
            assert!(
                compose.contains(&format!("[\"/usr/local/bin/{worker}\"]")),
                "{worker}"
            );
        }
    }

    #[test]
    fn per_worker_dockerfiles_are_the_template_rendered() {
        let dir = root().join("dockerfiles");
        let template =
            std::fs::read_to_string(dir.join("templates/single-worker.Dockerfile")).unwrap();
        let bless = std::env::var_os("FLEETBENCH_BLESS").is_some();
        for (name, text) in render_single_worker_dockerfiles(&template) {
            assert!(!text.contains("@WORKER@") && !text.contains("@PROFILE@"));
            if bless {
                std::fs::write(dir.join(&name), &text).unwrap();
            }
            let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert!(
                committed == text,
                "dockerfiles/{name} differs from the template; run this test with FLEETBENCH_BLESS=1"
            );
        }
    }
}
