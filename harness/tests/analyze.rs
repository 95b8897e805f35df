//! `fleetbench analyze` against the real engine: images with known contents
//! are built inside each test (from `scratch` or the bootstrapped base), and
//! every number the analysis gives is checked against the tar format rules
//! or against the exported layer bytes themselves.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetbench::analyze::image::{ImageFile, WasteReason};
use fleetbench::analyze::layer::GZIP_BLOCK_BYTES;
use fleetbench::analyze::{
    node_cost, pull_after_change, Analyzer, FleetAnalysis, ImageAnalysis, ImageSpec,
};
use fleetbench::context::ContextTar;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The bootstrapped base, for images that need a shell to delete files.
const BASE_IMAGE: &str = "fleetbench/base:bookworm";

/// Bytes of an uncompressed layer tar holding regular files of these sizes
/// and `directories` directory entries, by the tar format: a 512-byte
/// header per entry, content padded to 512 bytes, two zero blocks at the end.
fn layer_tar_bytes(file_sizes: &[u64], directories: u64) -> u64 {
    let files: u64 = file_sizes
        .iter()
        .map(|size| 512 + size.div_ceil(512) * 512)
        .sum();
    files + directories * 512 + 1024
}

/// Incompressible bytes from a seed (xorshift64*), the same for a seed.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

mod support;

use support::TestImages;

static NEXT_SEED: AtomicU64 = AtomicU64::new(1);

impl TestImages {
    /// Random bytes no other file of this test run has.
    fn unique_bytes(&self, len: usize) -> Vec<u8> {
        let seed = NEXT_SEED.fetch_add(1, Ordering::Relaxed) + self.run.len() as u64;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        random_bytes(seed ^ (nanos << 20), len)
    }

    /// Writes the engine's export of `image` to a file in the test's directory.
    async fn save(&self, image: &str, file_name: &str) -> PathBuf {
        let path = self.dir.path().join(file_name);
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        let mut stream = self.engine.client.export_image(image);
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.unwrap()).await.unwrap();
        }
        file.flush().await.unwrap();
        path
    }

    async fn analyze(&self, argument: &str) -> ImageAnalysis {
        let mut analyzer = Analyzer::with_engine(self.engine.clone(), 1000);
        let mut images = analyzer
            .analyze(argument)
            .await
            .unwrap_or_else(|e| panic!("analysing {argument}: {e}"));
        assert_eq!(images.len(), 1, "{argument} holds one image");
        images.remove(0)
    }
}

/// The layer tars of a docker-archive, bottom first, as exported.
fn layer_tars(archive: &Path) -> Vec<(String, Vec<u8>)> {
    let mut entries: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        entries.insert(path, bytes);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let path = layer.as_str().unwrap().to_string();
            let bytes = entries[&path].clone();
            (path, bytes)
        })
        .collect()
}

/// Length of the gzip stream made of `bytes` deflated in independent blocks
/// of [`GZIP_BLOCK_BYTES`] (each ending in a sync flush, then an empty final
/// block), after checking that the stream is valid gzip of `bytes`.
fn gzip_len(bytes: &[u8]) -> u64 {
    use flate2::{write::DeflateEncoder, Compression};
    let mut stream = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for block in bytes.chunks(GZIP_BLOCK_BYTES) {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(block).unwrap();
        encoder.flush().unwrap();
        stream.extend_from_slice(encoder.get_ref());
    }
    let final_block = DeflateEncoder::new(Vec::new(), Compression::default()).finish();
    stream.extend_from_slice(&final_block.unwrap());
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    stream.extend_from_slice(&crc.sum().to_le_bytes());
    stream.extend_from_slice(&(bytes.len() as u32).to_le_bytes());

    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&stream[..]), &mut decoded)
        .unwrap();
    assert!(
        decoded == bytes,
        "the block gzip stream decodes to the layer"
    );
    stream.len() as u64
}

fn zstd_len(bytes: &[u8]) -> u64 {
    zstd::stream::encode_all(bytes, zstd::DEFAULT_COMPRESSION_LEVEL)
        .unwrap()
        .len() as u64
}

fn fleetbench(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_of_random_bytes_measures_exactly_what_its_tar_holds() {
    const RANDOM_BYTES: usize = 3_000_017;
    let mut images = TestImages::new("analyze").await;
    let random = images.unique_bytes(RANDOM_BYTES);
    let tag = images
        .build(
            "random",
            "FROM scratch\nCOPY random.bin /random.bin\n",
            &[("random.bin", &random)],
        )
        .await;

    let image = images.analyze(&tag).await;
    let exported = layer_tars(&images.save(&tag, "random.tar").await);

    let layer_bytes = &exported[0].1;
    assert_eq!(image.layers.len(), 1);
    let layer = &image.layers[0];
    assert_eq!(layer.size_bytes, layer_tar_bytes(&[RANDOM_BYTES as u64], 0));
    assert_eq!(layer.size_bytes, layer_bytes.len() as u64);
    assert_eq!(
        layer.diff_id,
        format!("sha256:{}", hex::encode(Sha256::digest(layer_bytes)))
    );
    assert_eq!(layer.gzip_bytes, gzip_len(layer_bytes));
    assert_eq!(layer.zstd_bytes, zstd_len(layer_bytes));
    assert!(
        layer.gzip_bytes > RANDOM_BYTES as u64,
        "random data does not compress"
    );
    assert_eq!(layer.file_count, 1);
    assert!(
        layer.created_by.as_deref().unwrap_or("").contains("COPY"),
        "{layer:?}"
    );
    assert_eq!(image.size_bytes, layer.size_bytes);
    assert_eq!(
        (image.gzip_bytes, image.zstd_bytes),
        (layer.gzip_bytes, layer.zstd_bytes)
    );
    assert_eq!(image.wasted_bytes, 0);
    assert!(image.runs_as_root);
    let random_file = ImageFile {
        path: "random.bin".into(),
        size_bytes: RANDOM_BYTES as u64,
        layer: 0,
    };
    assert_eq!(image.largest_files, vec![random_file]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_overwritten_in_a_later_layer_wastes_its_old_size() {
    let mut images = TestImages::new("analyze").await;
    let (old, new) = (images.unique_bytes(3_000), images.unique_bytes(5_000));
    let dockerfile = "FROM scratch\nCOPY old.bin /data.bin\nCOPY new.bin /data.bin\nUSER 1000\n";
    let tag = images
        .build(
            "overwrite",
            dockerfile,
            &[("old.bin", &old), ("new.bin", &new)],
        )
        .await;

    let image = images.analyze(&tag).await;

    assert_eq!(
        image.size_bytes,
        layer_tar_bytes(&[3_000], 0) + layer_tar_bytes(&[5_000], 0)
    );
    assert_eq!(image.wasted_bytes, 3_000);
    assert_eq!(image.wasted_file_count, 1);
    let wasted = &image.wasted_files[0];
    assert_eq!(
        (wasted.path.as_str(), wasted.size_bytes),
        ("data.bin", 3_000)
    );
    assert_eq!((wasted.layer, wasted.hidden_by_layer), (0, 1));
    assert_eq!(wasted.reason, WasteReason::Overwritten);
    assert_eq!(image.largest_files.len(), 1);
    assert_eq!(
        (
            image.largest_files[0].size_bytes,
            image.largest_files[0].layer
        ),
        (5_000, 1)
    );
    assert_eq!(image.user, "1000");
    assert!(!image.runs_as_root);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_file_and_a_deleted_directory_waste_all_their_bytes() {
    let mut images = TestImages::new("analyze").await;
    let victim = images.unique_bytes(7_000);
    let (first, second) = (images.unique_bytes(1_000), images.unique_bytes(2_000));
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY victim.bin /victim.bin\nCOPY first.bin second.bin /gone/\n\
         RUN rm /victim.bin && rm -rf /gone\n"
    );
    let files: [(&str, &[u8]); 3] = [
        ("victim.bin", &victim),
        ("first.bin", &first),
        ("second.bin", &second),
    ];
    let tag = images.build("delete", &dockerfile, &files).await;

    let base = images.analyze(BASE_IMAGE).await;
    let image = images.analyze(&tag).await;

    let base_layers = base.layers.len();
    assert_eq!(image.layers.len(), base_layers + 3);
    assert_eq!(image.wasted_bytes, base.wasted_bytes + 10_000);
    let mut ours: Vec<_> = image
        .wasted_files
        .iter()
        .filter(|w| w.layer >= base_layers)
        .map(|w| {
            (
                w.path.as_str(),
                w.size_bytes,
                w.layer - base_layers,
                w.reason,
            )
        })
        .collect();
    ours.sort();
    let last = image.layers.len() - 1 - base_layers;
    assert_eq!(
        ours,
        vec![
            ("gone/first.bin", 1_000, 1, WasteReason::Deleted),
            ("gone/second.bin", 2_000, 1, WasteReason::Deleted),
            ("victim.bin", 7_000, 0, WasteReason::Deleted),
        ]
    );
    assert!(image
        .wasted_files
        .iter()
        .all(|w| w.layer < base_layers || w.hidden_by_layer == base_layers + last));
    assert_eq!(
        image.layers[base_layers + 2].file_count,
        0,
        "the rm layer holds only whiteouts"
    );
    assert!(image.largest_files.iter().all(|f| f.path != "victim.bin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_emptied_and_refilled_in_one_layer_hides_what_was_below() {
    let mut images = TestImages::new("analyze").await;
    let old = images.unique_bytes(4_000);
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY old.bin /data/old.bin\n\
         RUN rm -rf /data && mkdir /data && printf new > /data/new.txt\n"
    );
    let tag = images
        .build("opaque", &dockerfile, &[("old.bin", &old)])
        .await;

    let base = images.analyze(BASE_IMAGE).await;
    let image = images.analyze(&tag).await;

    assert_eq!(image.wasted_bytes, base.wasted_bytes + 4_000);
    let wasted = image
        .wasted_files
        .iter()
        .find(|w| w.path == "data/old.bin")
        .unwrap();
    assert_eq!(wasted.reason, WasteReason::Deleted);
    assert_eq!(wasted.hidden_by_layer, image.layers.len() - 1);
    let new_file = image
        .largest_files
        .iter()
        .find(|f| f.path == "data/new.txt");
    assert!(new_file.is_none() || new_file.unwrap().size_bytes == 3);
    let top_layer = image.layers.last().unwrap();
    assert_eq!(top_layer.file_count, 1, "only data/new.txt is a file");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_images_on_a_shared_base_store_the_base_once() {
    let mut images = TestImages::new("analyze").await;
    let base_bytes = images.unique_bytes(200_000);
    let base = images
        .build(
            "shared-base",
            "FROM scratch\nCOPY base.bin /base.bin\n",
            &[("base.bin", &base_bytes)],
        )
        .await;
    let (a_bytes, b_bytes) = (images.unique_bytes(30_000), images.unique_bytes(50_000));
    let a = images
        .build(
            "shared-a",
            &format!("FROM {base}\nCOPY a.bin /a.bin\n"),
            &[("a.bin", &a_bytes)],
        )
        .await;
    let b = images
        .build(
            "shared-b",
            &format!("FROM {base}\nCOPY b.bin /b.bin\n"),
            &[("b.bin", &b_bytes)],
        )
        .await;

    let fleet_images = vec![images.analyze(&a).await, images.analyze(&b).await];
    let fleet = FleetAnalysis::new(&fleet_images, 10);

    let (base_size, a_size, b_size) = (
        layer_tar_bytes(&[200_000], 0),
        layer_tar_bytes(&[30_000], 0),
        layer_tar_bytes(&[50_000], 0),
    );
    assert_eq!(fleet.naive_bytes, 2 * base_size + a_size + b_size);
    assert_eq!(fleet.stored_bytes, base_size + a_size + b_size);
    assert!(fleet.stored_bytes < fleet.naive_bytes);
    assert_eq!(fleet.distinct_layers, 3);
    let [base_layer, a_layer] = [&fleet_images[0].layers[0], &fleet_images[0].layers[1]];
    let b_layer = &fleet_images[1].layers[1];
    assert_eq!(base_layer.diff_id, fleet_images[1].layers[0].diff_id);
    assert_eq!(
        fleet.transfer_gzip_bytes,
        base_layer.gzip_bytes + a_layer.gzip_bytes + b_layer.gzip_bytes
    );
    assert_eq!(
        (fleet.sharing[0].shared_bytes, fleet.sharing[0].unique_bytes),
        (base_size, a_size)
    );
    assert_eq!(
        (fleet.sharing[1].shared_bytes, fleet.sharing[1].unique_bytes),
        (base_size, b_size)
    );
    assert_eq!(fleet.duplicate_bytes, 0);

    let node = node_cost([&fleet_images[0]]);
    assert_eq!(
        (node.layer_count, node.stored_bytes),
        (2, base_size + a_size)
    );
    let pull = pull_after_change([&fleet_images[0]], [&fleet_images[1]]);
    assert_eq!(pull.new_layers, vec![b_layer.diff_id.clone()]);
    assert_eq!(
        (pull.size_bytes, pull.gzip_bytes),
        (b_size, b_layer.gzip_bytes)
    );

    let (code, stdout, stderr) = fleetbench(
        &[
            "analyze", "--json", &a, &b, "--subset", &a, "--before", &a, "--after", &b,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["fleet"]["stored_bytes"], base_size + a_size + b_size);
    assert_eq!(
        report["fleet"]["naive_bytes"],
        2 * base_size + a_size + b_size
    );
    assert_eq!(report["subsets"][0]["stored_bytes"], base_size + a_size);
    assert_eq!(report["pull_after_change"]["size_bytes"], b_size);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_file_in_two_images_in_different_layers_is_duplicate_content() {
    let mut images = TestImages::new("analyze").await;
    let (shared, pad) = (images.unique_bytes(40_000), images.unique_bytes(1_000));
    let c = images
        .build(
            "dup-c",
            "FROM scratch\nCOPY shared.bin /one/shared.bin\n",
            &[("shared.bin", &shared)],
        )
        .await;
    let d = images
        .build(
            "dup-d",
            "FROM scratch\nCOPY pad.bin /pad.bin\nCOPY shared.bin /two/shared.bin\n",
            &[("shared.bin", &shared), ("pad.bin", &pad)],
        )
        .await;

    let fleet_images = vec![images.analyze(&c).await, images.analyze(&d).await];
    let fleet = FleetAnalysis::new(&fleet_images, 10);

    assert_eq!(fleet.distinct_layers, 3);
    assert_eq!(fleet.duplicate_bytes, 40_000);
    assert_eq!(fleet.duplicates.len(), 1);
    let duplicate = &fleet.duplicates[0];
    assert_eq!(duplicate.sha256, hex::encode(Sha256::digest(&shared)));
    assert_eq!((duplicate.size_bytes, duplicate.layer_count), (40_000, 2));
    assert_eq!(duplicate.paths, vec!["one/shared.bin", "two/shared.bin"]);
    assert_eq!(duplicate.images, vec![c.clone(), d.clone()]);
    assert_eq!(
        fleet_images[0].layers[0].file_count, 1,
        "a directory is not a file"
    );
    assert_eq!(fleet_images[0].size_bytes, layer_tar_bytes(&[40_000], 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oci_layout_from_skopeo_gives_the_same_numbers_as_the_engine() {
    let mut images = TestImages::new("analyze").await;
    let (one, two) = (images.unique_bytes(300_000), images.unique_bytes(20_000));
    let tag = images
        .build(
            "oci",
            "FROM scratch\nCOPY one.bin /one.bin\nCOPY two.bin /one.bin\n",
            &[("one.bin", &one), ("two.bin", &two)],
        )
        .await;
    let layout = images.dir.path().join("layout");
    let output = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            &format!("docker-daemon:{tag}"),
            &format!("oci:{}", layout.display()),
        ])
        .output()
        .expect("skopeo is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let from_engine = images.analyze(&tag).await;
    let argument = layout.display().to_string();
    assert_eq!(
        ImageSpec::parse(&argument),
        ImageSpec::Directory(layout.clone())
    );
    let from_layout = images.analyze(&argument).await;

    assert_eq!(from_layout.name, argument);
    let summary = |image: &ImageAnalysis| -> Vec<_> {
        image
            .layers
            .iter()
            .map(|l| {
                (
                    l.diff_id.clone(),
                    l.size_bytes,
                    l.gzip_bytes,
                    l.zstd_bytes,
                    l.file_count,
                )
            })
            .collect()
    };
    assert_eq!(summary(&from_layout), summary(&from_engine));
    assert_eq!(from_layout.wasted_bytes, 300_000);
    assert_eq!(from_layout.wasted_files, from_engine.wasted_files);
    assert_eq!(from_layout.largest_files, from_engine.largest_files);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_archive_file_is_analysed_without_a_daemon() {
    let mut images = TestImages::new("analyze").await;
    let data = images.unique_bytes(12_345);
    let tag = images
        .build(
            "archive",
            "FROM scratch\nCOPY data.bin /data.bin\n",
            &[("data.bin", &data)],
        )
        .await;
    let archive = images.save(&tag, "archive.tar").await;
    let exported = layer_tars(&archive);

    let archive_arg = archive.display().to_string();
    let (code, stdout, stderr) = fleetbench(
        &["analyze", "--json", &archive_arg],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );

    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let image = &report["images"][0];
    let layer_bytes = &exported[0].1;
    assert_eq!(image["name"], archive_arg);
    assert_eq!(image["size_bytes"], layer_tar_bytes(&[12_345], 0));
    assert_eq!(
        image["layers"][0]["diff_id"],
        format!("sha256:{}", hex::encode(Sha256::digest(layer_bytes)))
    );
    assert_eq!(image["gzip_bytes"], gzip_len(layer_bytes));
    assert_eq!(image["zstd_bytes"], zstd_len(layer_bytes));
    assert_eq!(report["fleet"]["stored_bytes"], image["size_bytes"]);
}

/// Saves a one-layer image of random data; returns the archive and where
/// its layer's content starts in the file.
async fn saved_random_image(images: &mut TestImages, name: &str) -> (PathBuf, String, u64) {
    let data = images.unique_bytes(600_000);
    let tag = images
        .build(
            name,
            "FROM scratch\nCOPY data.bin /data.bin\n",
            &[("data.bin", &data)],
        )
        .await;
    let archive = images.save(&tag, &format!("{name}.tar")).await;
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    let layer = tar
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|entry| entry.path().unwrap().ends_with("layer.tar"))
        .map(|entry| {
            (
                entry.path().unwrap().display().to_string(),
                entry.raw_file_position(),
            )
        })
        .unwrap();
    (archive, layer.0, layer.1)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_archive_exits_2_naming_the_file_and_the_cut() {
    let mut images = TestImages::new("analyze").await;
    let (archive, layer, layer_start) = saved_random_image(&mut images, "truncated").await;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap();
    file.set_len(layer_start + 300_000).unwrap();

    let (code, _, stderr) = fleetbench(&["analyze", &archive.display().to_string()], &[]);

    assert_eq!(code, 2, "{stderr}");
    let expected = format!(
        "error: reading docker-archive {}: layer {layer}: unexpected end of archive",
        archive.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_archive_exits_2_naming_the_corrupted_layer() {
    let mut images = TestImages::new("analyze").await;
    let (archive, layer, layer_start) = saved_random_image(&mut images, "corrupted").await;
    let mut bytes = std::fs::read(&archive).unwrap();
    let inside_the_data = (layer_start + 512 + 1_000) as usize;
    bytes[inside_the_data] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();

    let (code, _, stderr) = fleetbench(&["analyze", &archive.display().to_string()], &[]);

    assert_eq!(code, 2, "{stderr}");
    let expected = format!(
        "error: reading docker-archive {}: layer {layer}: ",
        archive.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("the layer is corrupted"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_that_is_no_image_exits_2_saying_so() {
    let images = TestImages::new("analyze").await;
    let path = images.dir.path().join("not-an-image.tar");
    let mut tar = ContextTar::create(&path, 0).unwrap();
    tar.add_bytes("hello.txt", b"hello", 0o644).unwrap();
    tar.finish().unwrap();

    let (code, _, stderr) = fleetbench(&["analyze", &path.display().to_string()], &[]);

    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("reading docker-archive {}", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("neither manifest.json"), "{stderr}");
}

#[test]
fn an_image_the_engine_lacks_exits_2_naming_it() {
    let (code, _, stderr) = fleetbench(&["analyze", "fleetbench-test/no-such-image:0"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("exporting image 'fleetbench-test/no-such-image:0'"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn versus_skopeo_times_both_commands_on_the_same_image() {
    let mut images = TestImages::new("analyze").await;
    let data = images.unique_bytes(100_000);
    let tag = images
        .build(
            "versus",
            "FROM scratch\nCOPY data.bin /data.bin\n",
            &[("data.bin", &data)],
        )
        .await;

    let (code, stdout, stderr) = fleetbench(
        &[
            "analyze",
            "--json",
            "--versus-skopeo",
            &tag,
            "--repeat",
            "2",
        ],
        &[],
    );

    assert_eq!(code, 0, "{stderr}");
    let outcome: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(outcome["schema_version"], 1);
    assert_eq!(outcome["size_bytes"], layer_tar_bytes(&[100_000], 0));
    for command in ["analyze", "skopeo"] {
        let runs = outcome[command]["runs_ms"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{outcome}");
        assert!(outcome[command]["min_ms"].as_u64() <= outcome[command]["max_ms"].as_u64());
    }
}
