//! `azure-iot device simulate` when sending keeps failing: the real binary against an
//! in-process emulator. A device deleted mid-run, or a hub that never acknowledges, ends the
//! run with a one-line error after `--max-failures` failures in a row (before, it worked
//! through every remaining message: at `--rate 200`, 100,000 messages took over 8 minutes);
//! a dropped connection that the client's retry recovers from costs no message and does not
//! stop it. Every run is bounded by a real-time limit, so a run that does not stop fails the
//! test instead of hanging it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use azure_iot_emulator::{EmulatorHandle, Fault, RefusalReason};
use tokio::process::Child;

/// Far more than any run here needs when it stops as it should.
const RUN_LIMIT: Duration = Duration::from_secs(60);

mod common;
use common::{cli, command, hub};

/// Starts `device simulate` with `args` after `-d dev`.
fn simulate(dir: &Path, args: &[&str]) -> Child {
    let mut all = vec!["device", "simulate", "-d", "dev"];
    all.extend_from_slice(args);
    command(dir, &all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The run's output; fails the test if it has not ended within [`RUN_LIMIT`] (the child is
/// killed when dropped).
async fn finished(child: Child) -> Output {
    tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("`device simulate` did not stop")
        .unwrap()
}

/// Waits (bounded) until the hub has logged at least `n` messages from `dev`.
async fn logged_at_least(hub: &EmulatorHandle, n: usize) {
    let wait = async {
        loop {
            let logged = hub.telemetry(0, 100_000).await.unwrap();
            if logged.iter().filter(|e| e.device_id == "dev").count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(RUN_LIMIT, wait)
        .await
        .expect("the simulated device's messages never arrived");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Exit status 1 and one `error:` line on stderr; returns that line.
fn one_line_error(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let err = text(&output.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// The `acknowledged N` figure of the summary line.
fn acknowledged(summary: &str) -> u64 {
    let after = summary.split("acknowledged ").nth(1).unwrap();
    after.split(',').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_deleted_mid_run_stops_simulate_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    assert!(
        cli(d, &["device", "create", "-d", "dev"])
            .await
            .status
            .success()
    );

    // Default --max-failures and --timeout: what a user gets without asking.
    let run = simulate(d, &["--count", "100000", "--rate", "200"]);
    logged_at_least(&hub, 20).await;
    assert!(
        cli(d, &["device", "delete", "-d", "dev"])
            .await
            .status
            .success()
    );
    let output = finished(run).await;

    let err = one_line_error(&output);
    assert!(
        err.contains("stopped after 3 messages in a row failed (--max-failures 3)"),
        "{err}"
    );
    let summary = text(&output.stdout);
    let acked = acknowledged(&summary);
    assert!(acked >= 20, "{summary}");
    assert!(summary.contains("failed 3 "), "{summary}");
    assert!(
        err.contains(&format!("{acked} of 100000 acknowledged, 3 failed")),
        "what was sent is in the error too: {err}"
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_that_never_acknowledges_stops_simulate_after_max_failures_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    assert!(
        cli(d, &["device", "create", "-d", "dev"])
            .await
            .status
            .success()
    );
    hub.inject(Fault::WithholdPubacks {
        device_id: "dev".into(),
        module_id: None,
    })
    .await
    .unwrap();

    let started = std::time::Instant::now();
    let run = simulate(
        d,
        &["--count", "1000", "--timeout", "1", "--max-failures", "2"],
    );
    let output = finished(run).await;
    let err = one_line_error(&output);
    assert!(
        err.contains("stopped after 2 messages in a row failed (--max-failures 2): 0 of 1000 acknowledged, 2 failed"),
        "{err}"
    );
    assert!(err.contains("the last failure: "), "{err}");
    // Two one-second timeouts, one after the other (one message in flight), plus start-up.
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        text(&output.stdout).contains("sent 2, acknowledged 0, failed 2"),
        "{output:?}"
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_drop_the_client_recovers_from_does_not_stop_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    assert!(
        cli(d, &["device", "create", "-d", "dev"])
            .await
            .status
            .success()
    );

    // The strictest setting: one failed message would stop the run.
    let run = simulate(d, &["--count", "60", "--rate", "20", "--max-failures", "1"]);
    logged_at_least(&hub, 10).await;
    // The connection drops and the next two attempts are refused as "server unavailable":
    // the client reconnects by its retry policy and sends again what was not acknowledged.
    hub.inject(Fault::RefuseConnects {
        device_id: "dev".into(),
        module_id: None,
        count: 2,
        reason: RefusalReason::ServerUnavailable,
    })
    .await
    .unwrap();
    hub.inject(Fault::DropConnection {
        device_id: "dev".into(),
        module_id: None,
    })
    .await
    .unwrap();
    let output = finished(run).await;
    assert!(output.status.success(), "{output:?}");
    let summary = text(&output.stdout);
    assert!(summary.contains("acknowledged 60, failed 0"), "{summary}");
    hub.shutdown().await;
}
