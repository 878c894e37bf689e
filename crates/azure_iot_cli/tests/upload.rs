//! `azure-iot device upload`: the real binary uploads a file as a device against an
//! in-process emulator; `hub files download` reads it back byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use azure_iot_emulator::Emulator;

mod common;
use common::cli;

#[tokio::test(flavor = "multi_thread")]
async fn a_device_uploads_a_file_and_the_hub_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Emulator::builder()
        .data_dir(dir.path())
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .blob_port(0)
        .start()
        .await
        .unwrap();
    let d = dir.path();
    assert!(
        cli(d, &["device", "create", "-d", "cam"])
            .await
            .status
            .success()
    );
    let source = d.join("photo.raw");
    // Three blocks and a bit: the streamed path.
    let data: Vec<u8> = (0..(9 * 1024 * 1024 + 7))
        .map(|i| (i % 253) as u8)
        .collect();
    std::fs::write(&source, &data).unwrap();
    let out = cli(
        d,
        &[
            "device",
            "upload",
            "-d",
            "cam",
            "-f",
            source.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.starts_with(&format!("uploaded {} bytes as cam/photo.raw", data.len())),
        "{said}"
    );

    let back = d.join("back.raw");
    let download = cli(
        d,
        &[
            "hub",
            "files",
            "download",
            "--name",
            "cam/photo.raw",
            "--file",
            back.to_str().unwrap(),
        ],
    )
    .await;
    assert!(download.status.success(), "{download:?}");
    assert!(std::fs::read(&back).unwrap() == data);

    // A file that is not there: one line, exit 1, nothing uploaded.
    let missing = cli(
        d,
        &["device", "upload", "-d", "cam", "-f", "/nonexistent/x"],
    )
    .await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8(missing.stderr)
            .unwrap()
            .contains("cannot open /nonexistent/x")
    );
    hub.shutdown().await;
}
