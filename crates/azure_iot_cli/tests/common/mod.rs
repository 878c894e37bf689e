//! What the CLI's integration tests share: an in-process emulator whose `hub.json` is in a
//! directory, the real binary run against it (its environment cleared of hub settings), and
//! the checks of its output.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use azure_iot_emulator::{Emulator, EmulatorHandle};
use serde_json::Value;
use tokio::process::Command;

/// An in-memory emulator on free ports, its `hub.json` and CA in `dir`.
pub(crate) async fn hub(dir: &Path) -> EmulatorHandle {
    Emulator::builder()
        .data_dir(dir)
        .in_memory(true)
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .start()
        .await
        .unwrap()
}

/// `azure-iot args…` against the emulator of `dir` (killed if the test drops it).
pub(crate) fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_azure-iot"));
    command
        .args(args)
        .env_remove("IOTHUB_CONNECTION_STRING")
        .env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
        .env_remove("PROVISIONING_CONNECTION_STRING")
        .env("AZURE_IOT_HUB_DATA_DIR", dir)
        .kill_on_drop(true);
    command
}

/// Runs [`command`] to its end.
pub(crate) async fn cli(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().await.unwrap()
}

/// The standard output of a command that must have succeeded.
pub(crate) fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The standard output of a command that must have succeeded, as JSON.
pub(crate) fn json_out(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap()
}

/// A failure is exit status 1 and one line on stderr, never a panic or a backtrace.
pub(crate) fn one_line_error(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let err = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}
