//! Images the integration tests build through the engine: tagged with the
//! test run, so parallel tests never collide, and removed when the test
//! ends, also when it fails.

use std::collections::HashMap;

use bollard::query_parameters::RemoveImageOptionsBuilder;
use fleetbench::context::ContextTar;
use fleetbench::docker::{BuildRequest, Engine};

/// Images a test builds, removed on drop.
pub struct TestImages {
    /// The engine they are built on.
    pub engine: Engine,
    /// This run's tag: the process id and the time.
    pub run: String,
    /// Scratch space for contexts, logs and exports.
    pub dir: tempfile::TempDir,
    prefix: String,
    tags: Vec<String>,
}

impl TestImages {
    /// A set for the test binary `prefix` (`analyze`, `gate`).
    pub async fn new(prefix: &str) -> Self {
        let engine = Engine::connect().await.expect("a Docker Engine answers");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self {
            engine,
            run: format!("{}-{nanos}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
            prefix: prefix.to_string(),
            tags: Vec::new(),
        }
    }

    /// Builds `dockerfile` with `files` in the context; returns the tag.
    pub async fn build(&mut self, name: &str, dockerfile: &str, files: &[(&str, &[u8])]) -> String {
        let tag = format!("fleetbench-test/{}-{name}:{}", self.prefix, self.run);
        let context = self.dir.path().join(format!("{name}.tar"));
        let mut tar = ContextTar::create(&context, 1_700_000_000).unwrap();
        tar.add_bytes("Dockerfile", dockerfile.as_bytes(), 0o644)
            .unwrap();
        for (path, bytes) in files {
            tar.add_bytes(path, bytes, 0o644).unwrap();
        }
        tar.finish().unwrap();
        let log = self.dir.path().join(format!("{name}.log"));
        let request = BuildRequest {
            image: &tag,
            dockerfile: "Dockerfile",
            target: None,
            context_tar: &context,
            build_args: HashMap::new(),
            labels: HashMap::new(),
            no_cache: false,
            log_path: &log,
        };
        // The classic builder occasionally fails when several test binaries
        // build at once; one retry, with the first error shown.
        if let Err(first) = self.engine.build(&request, |_| {}).await {
            eprintln!("building {tag} failed once, retrying: {first}");
            self.engine
                .build(&request, |_| {})
                .await
                .unwrap_or_else(|e| panic!("building {tag}: {e}"));
        }
        self.tags.push(tag.clone());
        tag
    }
}

impl Drop for TestImages {
    fn drop(&mut self) {
        let tags = std::mem::take(&mut self.tags);
        let engine = self.engine.clone();
        let removing = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                for tag in tags.iter().rev() {
                    let options = RemoveImageOptionsBuilder::new().force(true).build();
                    if let Err(e) = engine.client.remove_image(tag, Some(options), None).await {
                        eprintln!("removing test image {tag}: {e}");
                    }
                }
            });
        });
        let _ = removing.join();
    }
}
