//! The Docker Engine, through its API: connecting with an error a user can
//! act on, building an image from a context tarball, and reading labels back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

/// Errors talking to the Docker Engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No engine answered at the configured endpoint.
    #[error(
        "no Docker Engine answers at {endpoint}: {source}\n\
         start one (`systemctl start docker` or `dockerd &`), or point DOCKER_HOST at a running engine"
    )]
    Unavailable {
        /// The endpoint that was tried.
        endpoint: String,
        /// The client's error.
        source: bollard::errors::Error,
    },
    /// An image build failed; the log file holds the whole output.
    #[error("building image '{image}' from {dockerfile}: {message} (full log: {log})")]
    Build {
        /// The tag being built.
        image: String,
        /// The Dockerfile, as named in the context.
        dockerfile: String,
        /// The engine's error message.
        message: String,
        /// Where the build output was written.
        log: PathBuf,
    },
    /// Reading an image's metadata failed.
    #[error("inspecting image '{image}': {source}")]
    Inspect {
        /// The image reference.
        image: String,
        /// The client's error.
        source: bollard::errors::Error,
    },
    /// A local file needed by the operation could not be used.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A connected engine, with the endpoint kept for messages.
#[derive(Clone)]
pub struct Engine {
    /// The bollard client.
    pub client: Docker,
    /// Where the engine was reached (`DOCKER_HOST` or the local socket).
    pub endpoint: String,
}

/// What the engine reports about an existing image.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    /// Content-addressed id (`sha256:...`).
    pub id: String,
    /// Uncompressed size in bytes, as `docker image inspect` reports it.
    pub size_bytes: u64,
    /// The image's labels.
    pub labels: HashMap<String, String>,
    /// Diff ids of its layers, bottom first.
    pub layers: Vec<String>,
}

/// One finished build.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The tag that was built.
    pub image: String,
    /// Wall time of the build request, context upload included.
    pub elapsed: Duration,
    /// Number of steps the engine reported as taken from its cache.
    pub cached_steps: usize,
    /// Number of steps the engine reported in all.
    pub total_steps: usize,
}

/// Everything one image build needs.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// Tag of the resulting image.
    pub image: &'a str,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: &'a str,
    /// The stage to build, for multi-stage files (the last one otherwise).
    pub target: Option<&'a str>,
    /// The build context, as an uncompressed tar file.
    pub context_tar: &'a Path,
    /// `--build-arg` values.
    pub build_args: HashMap<String, String>,
    /// Labels added to the image.
    pub labels: HashMap<String, String>,
    /// Build without the engine's cache.
    pub no_cache: bool,
    /// Where the build output is written.
    pub log_path: &'a Path,
}

impl Engine {
    /// Connects to the engine named by `DOCKER_HOST`, or the local socket,
    /// and checks that it answers.
    pub async fn connect() -> Result<Self, DockerError> {
        let endpoint =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let client =
            Docker::connect_with_defaults().map_err(|source| DockerError::Unavailable {
                endpoint: endpoint.clone(),
                source,
            })?;
        client
            .ping()
            .await
            .map_err(|source| DockerError::Unavailable {
                endpoint: endpoint.clone(),
                source,
            })?;
        Ok(Self { client, endpoint })
    }

    /// The engine's version string (`20.10.24+dfsg1`).
    pub async fn server_version(&self) -> Result<String, DockerError> {
        let version = self
            .client
            .version()
            .await
            .map_err(|source| DockerError::Unavailable {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        Ok(version.version.unwrap_or_else(|| "unknown".into()))
    }

    /// Facts about `image`, or `None` when the engine does not have it.
    pub async fn image_facts(&self, image: &str) -> Result<Option<ImageFacts>, DockerError> {
        match self.client.inspect_image(image).await {
            Ok(inspect) => Ok(Some(ImageFacts {
                id: inspect.id.unwrap_or_default(),
                size_bytes: inspect.size.unwrap_or(0).max(0) as u64,
                layers: inspect
                    .root_fs
                    .and_then(|root| root.layers)
                    .unwrap_or_default(),
                labels: inspect
                    .config
                    .and_then(|config| config.labels)
                    .unwrap_or_default(),
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(source) => Err(DockerError::Inspect {
                image: image.to_string(),
                source,
            }),
        }
    }

    /// Builds an image with the classic builder, streaming the context from
    /// disk and the output into `log_path`; `on_step` sees each step line.
    pub async fn build(
        &self,
        request: &BuildRequest<'_>,
        mut on_step: impl FnMut(&str),
    ) -> Result<BuiltImage, DockerError> {
        let started = Instant::now();
        let io = |operation, path: &Path| {
            let path = path.to_path_buf();
            move |source| DockerError::Io {
                operation,
                path,
                source,
            }
        };
        let context = tokio::fs::File::open(request.context_tar)
            .await
            .map_err(io("opening build context", request.context_tar))?;
        let mut log = tokio::fs::File::create(request.log_path)
            .await
            .map_err(io("creating build log", request.log_path))?;
        let mut options = BuildImageOptionsBuilder::default();
        if let Some(target) = request.target {
            options = options.target(target);
        }
        let options = options
            .dockerfile(request.dockerfile)
            .t(request.image)
            .rm(true)
            .forcerm(true)
            .nocache(request.no_cache)
            .buildargs(&request.build_args)
            .labels(&request.labels)
            .build();
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(context));
        let mut stream = self.client.build_image(options, None, Some(body));

        let fail = |message: String| DockerError::Build {
            image: request.image.to_string(),
            dockerfile: request.dockerfile.to_string(),
            message,
            log: request.log_path.to_path_buf(),
        };
        let (mut total_steps, mut cached_steps) = (0, 0);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| fail(e.to_string()))?;
            if let Some(text) = info.stream.as_deref() {
                log.write_all(text.as_bytes())
                    .await
                    .map_err(io("writing build log", request.log_path))?;
                let line = text.trim();
                if line.starts_with("Step ") {
                    total_steps += 1;
                    on_step(line);
                } else if line.contains("Using cache") {
                    cached_steps += 1;
                }
            }
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_else(|| "unknown error".into());
                let _ = log
                    .write_all(format!("ERROR: {message}\n").as_bytes())
                    .await;
                return Err(fail(message));
            }
        }
        log.flush()
            .await
            .map_err(io("writing build log", request.log_path))?;
        Ok(BuiltImage {
            image: request.image.to_string(),
            elapsed: started.elapsed(),
            cached_steps,
            total_steps,
        })
    }
}
