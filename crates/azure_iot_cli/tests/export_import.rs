//! `azure-iot device export|import` and `hub container-sas` as the real binary against an
//! in-process emulator: an export, a deleted device brought back by an import, a failed import
//! reported as a one-line error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{cli, hub, json_out, one_line_error, stdout};

#[tokio::test(flavor = "multi_thread")]
async fn export_then_import_brings_a_deleted_device_back() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    let created = json_out(&cli(d, &["device", "create", "-d", "keep-1"]).await);
    json_out(
        &cli(
            d,
            &[
                "twin",
                "update",
                "-d",
                "keep-1",
                "--tags",
                r#"{"site":"north"}"#,
            ],
        )
        .await,
    );
    let uri = stdout(&cli(d, &["hub", "container-sas", "--name", "backup"]).await);
    let uri = uri.trim();
    assert!(
        uri.starts_with("https://") && uri.contains("/backup?") && uri.contains("sr=c"),
        "{uri}"
    );

    let job = json_out(
        &cli(
            d,
            &["device", "export", "--blob-container-uri", uri, "--wait"],
        )
        .await,
    );
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["type"], "export");

    stdout(&cli(d, &["device", "delete", "-d", "keep-1"]).await);
    let job = json_out(
        &cli(
            d,
            &[
                "device",
                "import",
                "--input-blob-container-uri",
                uri,
                "--output-blob-container-uri",
                uri,
                "--wait",
            ],
        )
        .await,
    );
    assert_eq!(job["status"], "completed", "{job}");
    let back = json_out(&cli(d, &["device", "show", "-d", "keep-1"]).await);
    assert_eq!(
        back["authentication"]["symmetricKey"]["primaryKey"],
        created["authentication"]["symmetricKey"]["primaryKey"]
    );
    let twin = json_out(&cli(d, &["twin", "show", "-d", "keep-1"]).await);
    assert_eq!(twin["tags"]["site"], "north");

    // Importing again with `create` lines would fail; the default mode is createOrUpdate, so
    // a second import succeeds. An input container without devices.txt fails the job.
    let empty = stdout(&cli(d, &["hub", "container-sas", "--name", "empty"]).await);
    let err = one_line_error(
        &cli(
            d,
            &[
                "device",
                "import",
                "--input-blob-container-uri",
                empty.trim(),
                "--output-blob-container-uri",
                empty.trim(),
                "--wait",
            ],
        )
        .await,
    );
    assert!(err.contains("devices.txt"), "{err}");
    let err = one_line_error(
        &cli(
            d,
            &[
                "device",
                "export",
                "--blob-container-uri",
                "https://example.com/c?sig=x",
            ],
        )
        .await,
    );
    assert!(err.contains("400"), "{err}");
    hub.shutdown().await;
}
