//! Where images come from: the Docker Engine (streamed through its export,
//! never written to disk), a docker-archive tarball, or an OCI image layout
//! directory; the last two need no daemon.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::archive::{self, FoundImage};
use super::AnalyzeError;
use crate::docker::Engine;

/// Export chunks queued between the engine and the archive reader.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 64;

/// An image to analyse, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSpec {
    /// An image of the Docker Engine, by reference or id.
    Engine(String),
    /// A tarball written by `docker save` (or an OCI layout in a tar).
    Archive(PathBuf),
    /// An OCI image layout directory.
    Directory(PathBuf),
}

impl ImageSpec {
    /// Reads `docker-daemon:REF`, `docker-archive:PATH`, `oci:DIR`, or a bare
    /// argument: an existing directory or file by path, else an engine image.
    pub fn parse(argument: &str) -> Self {
        if let Some(reference) = argument.strip_prefix("docker-daemon:") {
            return Self::Engine(reference.to_string());
        }
        if let Some(path) = argument.strip_prefix("docker-archive:") {
            return Self::Archive(PathBuf::from(path));
        }
        if let Some(path) = argument.strip_prefix("oci:") {
            return Self::Directory(PathBuf::from(path));
        }
        let path = Path::new(argument);
        if path.is_dir() {
            Self::Directory(path.to_path_buf())
        } else if path.is_file() {
            Self::Archive(path.to_path_buf())
        } else {
            Self::Engine(argument.to_string())
        }
    }

    /// How messages name the source (`docker-archive /x/y.tar`).
    pub fn origin(&self) -> String {
        match self {
            Self::Engine(reference) => format!("image '{reference}' exported by the Docker Engine"),
            Self::Archive(path) => format!("docker-archive {}", path.display()),
            Self::Directory(path) => format!("OCI layout {}", path.display()),
        }
    }

    /// Whether reading it needs the Docker Engine.
    pub fn needs_engine(&self) -> bool {
        matches!(self, Self::Engine(_))
    }

    /// Reads the images it holds; `engine` must be given for engine images.
    pub async fn load(&self, engine: Option<&Engine>) -> Result<Vec<FoundImage>, AnalyzeError> {
        let origin = self.origin();
        match self {
            Self::Engine(reference) => {
                let engine = engine.ok_or_else(|| AnalyzeError::NoEngine {
                    image: reference.clone(),
                })?;
                export(engine, &[reference.as_str()], origin).await
            }
            Self::Archive(path) => {
                let file = std::fs::File::open(path).map_err(|source| AnalyzeError::Io {
                    operation: "opening docker-archive",
                    path: path.clone(),
                    source,
                })?;
                let reader = io::BufReader::with_capacity(1 << 20, file);
                blocking(move || archive::read_tar_stream(reader, &origin)).await
            }
            Self::Directory(path) => {
                let path = path.clone();
                blocking(move || archive::read_directory(&path, &origin)).await
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AnalyzeError> + Send + 'static,
) -> Result<T, AnalyzeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AnalyzeError::Internal(format!("the archive reader stopped: {e}")))?
}

/// Streams the engine's export of `image` into the archive reader.
/// Streams the engine's export of `images` (one docker-archive holding them
/// all, so layers they share are read once) through the archive reader.
pub async fn export(
    engine: &Engine,
    images: &[&str],
    origin: String,
) -> Result<Vec<FoundImage>, AnalyzeError> {
    let image = images.join(", ");
    tracing::debug!(image, endpoint = %engine.endpoint, "exporting images");
    let (chunks, receiver) = mpsc::channel(EXPORT_CHUNKS_IN_FLIGHT);
    let reader = ChunkReader {
        receiver,
        current: Bytes::new(),
    };
    let reading = tokio::task::spawn_blocking(move || archive::read_tar_stream(reader, &origin));

    let mut stream = engine.client.export_images(images);
    let mut export_error = None;
    while let Some(item) = stream.next().await {
        let failed = item.is_err();
        let item = item.map_err(|e| {
            let message = e.to_string();
            export_error = Some(e);
            io::Error::other(message)
        });
        if chunks.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(chunks);

    let found = reading
        .await
        .map_err(|e| AnalyzeError::Internal(format!("the archive reader stopped: {e}")))?;
    match export_error {
        Some(source) => Err(AnalyzeError::Export {
            image,
            endpoint: engine.endpoint.clone(),
            source,
        }),
        None => found,
    }
}

/// A blocking reader over the chunks an async task sends.
struct ChunkReader {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
