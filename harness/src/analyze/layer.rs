//! One layer, read once: the tar stream is hashed (its sha256 is the diff
//! id), compressed with gzip and zstd on their own threads to measure what a
//! registry stores, and parsed for its files, their content hashes and its
//! whiteouts, all while the bytes stream past.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use flate2::{bufread::MultiGzDecoder, write::DeflateEncoder, Compression};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes read from the layer per step (and the size of the chunks handed to
/// the compressors).
const CHUNK_BYTES: usize = 1 << 20;
/// Bytes waiting in all compressor queues together (each chunk counts once
/// per compressor) before the reader waits: enough for reading to run ahead
/// into the next layer while gzip finishes this one, bounded so a big image
/// is never held in memory.
const QUEUED_BYTES: u64 = 1 << 30;
/// Layer bytes per gzip block: as pgzip (which skopeo and podman push with)
/// does, blocks are deflated independently, each ending in a sync flush, so
/// one layer's gzip runs on every core and the blocks still form one valid
/// gzip stream.
pub const GZIP_BLOCK_BYTES: usize = 1 << 20;
/// Bytes of a gzip header without name or comment, and of its trailer.
const GZIP_HEADER_AND_TRAILER_BYTES: u64 = 10 + 8;
/// The zstd level used to measure zstd sizes (zstd's own default).
pub const ZSTD_LEVEL: i32 = zstd::DEFAULT_COMPRESSION_LEVEL;
/// Prefix of a whiteout entry, which deletes the named path of lower layers.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the entry that makes its directory opaque: lower layers' contents
/// of the directory are hidden.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What one layer holds and what it costs, stored and compressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerScan {
    /// `sha256:` and the hex sha256 of the uncompressed layer tar.
    pub diff_id: String,
    /// Bytes of the uncompressed layer tar.
    pub size_bytes: u64,
    /// Bytes of the layer tar gzip-compressed at the default level, in
    /// blocks of [`GZIP_BLOCK_BYTES`].
    pub gzip_bytes: u64,
    /// Bytes of the layer tar zstd-compressed at [`ZSTD_LEVEL`].
    pub zstd_bytes: u64,
    /// Entries that are neither directories nor whiteouts.
    pub file_count: u64,
    /// Every entry but whiteouts, in archive order.
    pub entries: Vec<LayerEntry>,
    /// The deletions this layer applies to the layers below it.
    pub whiteouts: Vec<Whiteout>,
}

/// One path a layer adds or replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntry {
    /// Path without a leading `/` or `./` and without a trailing `/`.
    pub path: String,
    /// What the path is.
    pub kind: EntryKind,
}

/// The kinds of entry that matter to size, waste and duplicate accounting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file with its content size and sha256.
    File {
        /// Content bytes.
        size_bytes: u64,
        /// sha256 of the content.
        sha256: [u8; 32],
    },
    /// A directory.
    Directory,
    /// A symbolic or hard link, a device or a fifo: no content bytes.
    Other,
}

/// A deletion recorded in a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Whiteout {
    /// `dir/.wh.name`: `dir/name` (and all below it) is deleted.
    Path(String),
    /// `dir/.wh..wh..opq`: everything lower layers put below `dir` is hidden.
    Opaque(String),
}

/// Reads a layer blob (plain, gzip or zstd tar) to its end and measures it.
pub fn scan_layer(blob: impl Read) -> io::Result<LayerScan> {
    start_scan(blob)?.finish()
}

/// A layer read to its end whose compressed sizes may still be computing.
pub struct PendingScan {
    scan: LayerScan,
    gzip: JoinHandle<io::Result<u64>>,
    zstd: JoinHandle<io::Result<u64>>,
}

impl PendingScan {
    /// Waits for the compressors and returns the complete scan.
    pub fn finish(self) -> io::Result<LayerScan> {
        let Self {
            mut scan,
            gzip,
            zstd,
        } = self;
        scan.gzip_bytes = join_spawned(gzip)?;
        scan.zstd_bytes = join_spawned(zstd)?;
        Ok(scan)
    }
}

/// Reads a layer blob to its end, hashing and parsing it, and returns while
/// gzip and zstd may still be working through its bytes on their threads.
pub fn start_scan(blob: impl Read) -> io::Result<PendingScan> {
    let decoded = decode(blob)?;
    let (gzip_chunks, gzip_rx) = channel();
    let (zstd_chunks, zstd_rx) = channel();
    let gzip = std::thread::spawn(move || gzip_bytes(gzip_rx));
    let zstd = std::thread::spawn(move || zstd_bytes(zstd_rx));

    let tee = Tee {
        inner: decoded,
        hasher: Sha256::new(),
        size_bytes: 0,
        sinks: vec![gzip_chunks, zstd_chunks],
    };
    let mut archive = tar::Archive::new(BufReader::with_capacity(CHUNK_BYTES, tee));
    let (entries, whiteouts) = read_entries(&mut archive)?;
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    let Tee {
        hasher,
        size_bytes,
        sinks,
        ..
    } = rest.into_inner();
    // The compressors finish once their channels close.
    drop(sinks);

    let scan = LayerScan {
        diff_id: format!("sha256:{}", hex::encode(hasher.finalize())),
        size_bytes,
        gzip_bytes: 0,
        zstd_bytes: 0,
        file_count: entries
            .iter()
            .filter(|e| e.kind != EntryKind::Directory)
            .count() as u64,
        entries,
        whiteouts,
    };
    Ok(PendingScan { scan, gzip, zstd })
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, io::Result<T>>) -> io::Result<T> {
    handle
        .join()
        .map_err(|_| io::Error::other("a compressor thread panicked"))?
}

fn join_spawned(handle: JoinHandle<io::Result<u64>>) -> io::Result<u64> {
    handle
        .join()
        .map_err(|_| io::Error::other("a compressor thread panicked"))?
}

/// The room left in the compressor queues, shared by every layer.
struct QueueBudget {
    free_bytes: Mutex<u64>,
    freed: Condvar,
}

static QUEUE_BUDGET: QueueBudget = QueueBudget {
    free_bytes: Mutex::new(QUEUED_BYTES),
    freed: Condvar::new(),
};

impl QueueBudget {
    /// Waits until `chunk` fits, then books it until it is dropped.
    fn reserve(&'static self, chunk: Arc<[u8]>) -> Queued {
        let bytes = chunk.len() as u64;
        let mut free = self
            .free_bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *free < bytes {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= bytes;
        Queued { chunk }
    }
}

/// A chunk waiting for (or being fed to) a compressor; gives its room back
/// when dropped, however the compressor ends.
struct Queued {
    chunk: Arc<[u8]>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        let mut free = QUEUE_BUDGET
            .free_bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *free += self.chunk.len() as u64;
        QUEUE_BUDGET.freed.notify_all();
    }
}

/// Wraps the blob in a decompressor when its first bytes say it is one.
fn decode<'a>(blob: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(CHUNK_BYTES, blob);
    let magic = buffered.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(buffered)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(
            buffered,
        )?))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Passes bytes through while hashing, counting and copying them to the
/// compressor threads.
struct Tee<R> {
    inner: R,
    hasher: Sha256,
    size_bytes: u64,
    sinks: Vec<Sender<Queued>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let chunk: Arc<[u8]> = Arc::from(&buf[..n]);
            self.hasher.update(&chunk);
            self.size_bytes += n as u64;
            for sink in &self.sinks {
                sink.send(QUEUE_BUDGET.reserve(Arc::clone(&chunk)))
                    .map_err(|_| io::Error::other("a compressor stopped early"))?;
            }
        }
        Ok(n)
    }
}

/// Deflates the stream in blocks on every core; returns the length of the
/// gzip stream they make.
fn gzip_bytes(chunks: Receiver<Queued>) -> io::Result<u64> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (blocks, block_rx) = sync_channel::<Vec<u8>>(workers * 2);
    let block_rx = Mutex::new(block_rx);
    let deflated_bytes = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let deflaters: Vec<_> = (0..workers)
            .map(|_| scope.spawn(|| deflate_blocks(&block_rx, &deflated_bytes)))
            .collect();
        let mut block = Vec::with_capacity(GZIP_BLOCK_BYTES);
        for queued in chunks {
            let mut rest = &queued.chunk[..];
            while !rest.is_empty() {
                let take = (GZIP_BLOCK_BYTES - block.len()).min(rest.len());
                block.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if block.len() == GZIP_BLOCK_BYTES {
                    let full = std::mem::replace(&mut block, Vec::with_capacity(GZIP_BLOCK_BYTES));
                    send_block(&blocks, full)?;
                }
            }
        }
        if !block.is_empty() {
            send_block(&blocks, block)?;
        }
        drop(blocks);
        deflaters.into_iter().try_for_each(join)
    })?;
    let final_block = DeflateEncoder::new(ByteCounter(0), Compression::default()).finish()?;
    Ok(GZIP_HEADER_AND_TRAILER_BYTES + deflated_bytes.into_inner() + final_block.0)
}

fn send_block(blocks: &std::sync::mpsc::SyncSender<Vec<u8>>, block: Vec<u8>) -> io::Result<()> {
    blocks
        .send(block)
        .map_err(|_| io::Error::other("the gzip workers stopped early"))
}

/// Deflates blocks until there are no more, adding up their lengths.
fn deflate_blocks(blocks: &Mutex<Receiver<Vec<u8>>>, deflated_bytes: &AtomicU64) -> io::Result<()> {
    loop {
        let next = blocks.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(block) = next else {
            return Ok(());
        };
        let mut encoder = DeflateEncoder::new(ByteCounter(0), Compression::default());
        encoder.write_all(&block)?;
        encoder.flush()?;
        deflated_bytes.fetch_add(encoder.get_ref().0, Ordering::Relaxed);
    }
}

/// Compresses the stream with zstd; returns the compressed length.
fn zstd_bytes(chunks: Receiver<Queued>) -> io::Result<u64> {
    let mut counter = ByteCounter(0);
    let mut encoder = zstd::stream::write::Encoder::new(&mut counter, ZSTD_LEVEL)?;
    for queued in chunks {
        encoder.write_all(&queued.chunk)?;
    }
    encoder.finish()?;
    Ok(counter.0)
}

/// A writer that only counts.
struct ByteCounter(u64);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn read_entries(
    archive: &mut tar::Archive<impl Read>,
) -> io::Result<(Vec<LayerEntry>, Vec<Whiteout>)> {
    let (mut entries, mut whiteouts) = (Vec::new(), Vec::new());
    let mut buffer = vec![0; CHUNK_BYTES / 4];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = normalize_path(&entry.path()?.to_string_lossy());
        if let Some(whiteout) = whiteout(&path) {
            whiteouts.push(whiteout);
            continue;
        }
        if is_aufs_metadata(&path) {
            continue;
        }
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                hash_content(&mut entry, &path, &mut buffer)?
            }
            tar::EntryType::Directory => EntryKind::Directory,
            _ => EntryKind::Other,
        };
        entries.push(LayerEntry { path, kind });
    }
    Ok((entries, whiteouts))
}

/// Hashes a regular file's content, failing when the archive ends early.
fn hash_content<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &str,
    buffer: &mut [u8],
) -> io::Result<EntryKind> {
    let expected_bytes = entry.size();
    let mut hasher = Sha256::new();
    let mut size_bytes = 0u64;
    loop {
        let n = entry.read(buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size_bytes += n as u64;
    }
    if size_bytes < expected_bytes {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "unexpected end of archive: entry '{path}' has {size_bytes} of \
                 {expected_bytes} bytes"
            ),
        ));
    }
    Ok(EntryKind::File {
        size_bytes,
        sha256: hasher.finalize().into(),
    })
}

/// A path as layers are compared: no leading `/` or `./`, no trailing `/`.
pub fn normalize_path(raw: &str) -> String {
    let mut path = raw;
    loop {
        if let Some(rest) = path.strip_prefix("./") {
            path = rest;
        } else if let Some(rest) = path.strip_prefix('/') {
            path = rest;
        } else {
            break;
        }
    }
    let path = path.trim_end_matches('/');
    if path == "." {
        String::new()
    } else {
        path.to_string()
    }
}

/// The deletion a whiteout entry stands for, or `None` for other entries.
pub fn whiteout(path: &str) -> Option<Whiteout> {
    let (parent, name) = match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    };
    if name == OPAQUE_MARKER {
        return Some(Whiteout::Opaque(parent.to_string()));
    }
    let deleted = name.strip_prefix(WHITEOUT_PREFIX)?;
    if deleted.starts_with(WHITEOUT_PREFIX) {
        return None;
    }
    Some(Whiteout::Path(join_path(parent, deleted)))
}

/// AUFS bookkeeping entries (`.wh..wh.plnk`, `.wh..wh.aufs`), not content.
fn is_aufs_metadata(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with(".wh..wh.")
}

/// `parent/name`, or `name` at the root.
pub fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whiteout_names_the_deleted_sibling() {
        assert_eq!(
            whiteout("etc/apt/.wh.sources.list"),
            Some(Whiteout::Path("etc/apt/sources.list".into()))
        );
        assert_eq!(whiteout(".wh.tmp"), Some(Whiteout::Path("tmp".into())));
    }

    #[test]
    fn an_opaque_marker_names_its_directory() {
        assert_eq!(
            whiteout("var/cache/.wh..wh..opq"),
            Some(Whiteout::Opaque("var/cache".into()))
        );
        assert_eq!(
            whiteout(".wh..wh..opq"),
            Some(Whiteout::Opaque(String::new()))
        );
    }

    #[test]
    fn ordinary_names_and_aufs_metadata_are_not_whiteouts() {
        assert_eq!(whiteout("usr/bin/wh.x"), None);
        assert_eq!(whiteout("a/.wh..wh.plnk"), None);
        assert!(is_aufs_metadata("a/.wh..wh.plnk"));
        assert!(!is_aufs_metadata("a/.wh.b"));
    }

    #[test]
    fn paths_lose_leading_dots_and_slashes() {
        assert_eq!(normalize_path("./usr/bin/"), "usr/bin");
        assert_eq!(normalize_path("/etc/passwd"), "etc/passwd");
        assert_eq!(normalize_path("./"), "");
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_scan_measures_the_tar_it_reads() {
        let tar = tar_of(&[("a/one", b"hello"), ("a/.wh.gone", b"")]);
        let scan = scan_layer(&tar[..]).unwrap();

        assert_eq!(scan.size_bytes, tar.len() as u64);
        assert_eq!(
            scan.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
        );
        let mut deflate = DeflateEncoder::new(Vec::new(), Compression::default());
        deflate.write_all(&tar).unwrap();
        deflate.flush().unwrap();
        let final_block = DeflateEncoder::new(Vec::new(), Compression::default()).finish();
        let expected = 18 + deflate.get_ref().len() + final_block.unwrap().len();
        assert_eq!(scan.gzip_bytes, expected as u64);
        let zstd = zstd::encode_all(&tar[..], ZSTD_LEVEL).unwrap();
        assert_eq!(scan.zstd_bytes, zstd.len() as u64);
        assert_eq!(scan.file_count, 1);
        assert_eq!(scan.whiteouts, vec![Whiteout::Path("a/gone".into())]);
        let expected: [u8; 32] = Sha256::digest(b"hello").into();
        assert_eq!(
            scan.entries[0].kind,
            EntryKind::File {
                size_bytes: 5,
                sha256: expected
            }
        );
    }

    #[test]
    fn a_gzip_compressed_blob_is_measured_uncompressed() {
        let tar = tar_of(&[("x", &[7u8; 3000])]);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        gzip.write_all(&tar).unwrap();
        let scan = scan_layer(&gzip.finish().unwrap()[..]).unwrap();
        assert_eq!(scan.size_bytes, tar.len() as u64);
    }

    #[test]
    fn a_truncated_layer_is_an_unexpected_end_of_archive() {
        let tar = tar_of(&[("big", &[1u8; 5000])]);
        let error = scan_layer(&tar[..2000]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unexpected end of archive: entry 'big' has 1488 of 5000"),
            "{error}"
        );
    }
}
