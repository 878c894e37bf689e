//! What the CLI's integration tests share: an in-process emulator whose `hub.json` is in a
//! directory, and the real binary run against it (its environment cleared of hub settings).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use azure_iot_emulator::{Emulator, EmulatorHandle};
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
        .env("AZURE_IOT_HUB_DATA_DIR", dir)
        .kill_on_drop(true);
    command
}

/// Runs [`command`] to its end.
pub(crate) async fn cli(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().await.unwrap()
}
