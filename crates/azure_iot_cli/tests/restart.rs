//! `azure-iot hub start` as a user runs it: a real process, files in the data directory, and
//! state that survives `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use azure_iot_core::{ResourceUri, SasToken, ServiceConnectionString};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Starts the emulator on a free port and waits until `hub.json` names its port.
async fn start(dir: &Path) -> (Child, Value) {
    let _ = std::fs::remove_file(dir.join("hub.json"));
    let child = Command::new(env!("CARGO_BIN_EXE_azure-iot"))
        .args([
            "hub",
            "start",
            "--https-port",
            "0",
            "--mqtt-port",
            "0",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("azure-iot starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("hub.json"))
            && let Ok(doc) = serde_json::from_str::<Value>(&text)
        {
            return (child, doc);
        }
        assert!(Instant::now() < deadline, "hub.json did not appear");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    cs: ServiceConnectionString,
}

impl Api {
    fn new(dir: &Path, hub: &Value) -> Self {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let ca = std::fs::read(dir.join("ca.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let port = hub["ports"]["https"].as_u64().unwrap() as u16;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .build()
            .unwrap();
        let cs = ServiceConnectionString::parse(
            hub["connection_strings"]["iothubowner"].as_str().unwrap(),
        )
        .unwrap();
        Self {
            http,
            base: format!("https://localhost:{port}"),
            cs,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let token = SasToken::generate_with_ttl(
            &ResourceUri::hub(self.cs.host_name()),
            self.cs.key(),
            Some(self.cs.key_name()),
            Duration::from_secs(600),
        );
        let mut request = self
            .http
            .request(
                method,
                format!("{}{path}?api-version=2021-04-12", self.base),
            )
            .header("Authorization", token.secret());
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn state_survives_kill_9_and_files_keep_their_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, hub) = start(dir.path()).await;

    // The contract other tools rely on.
    assert_eq!(hub["hostname"], "localhost");
    for policy in [
        "iothubowner",
        "service",
        "registryRead",
        "registryReadWrite",
        "device",
    ] {
        let cs = hub["connection_strings"][policy].as_str().unwrap();
        assert!(
            cs.starts_with("HostName=localhost;SharedAccessKeyName="),
            "{policy}"
        );
    }
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    let api = Api::new(dir.path(), &hub);
    let (status, device) = api
        .call(reqwest::Method::PUT, "/devices/keeper", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    api.call(
        reqwest::Method::PUT,
        "/devices/keeper/modules/m",
        Some(json!({})),
    )
    .await;
    let (status, _) = api
        .call(
            reqwest::Method::PATCH,
            "/twins/keeper",
            Some(json!({"tags": {"t": 1}, "properties": {"desired": {"d": 2}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // kill -9: no shutdown path runs.
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    let (mut second, hub_again) = start(dir.path()).await;
    assert_eq!(
        hub_again["connection_strings"], hub["connection_strings"],
        "policies and their keys survive"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
        ca,
        "the CA is reused"
    );
    let api = Api::new(dir.path(), &hub_again);
    let (status, again) = api
        .call(reqwest::Method::GET, "/devices/keeper", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        again["authentication"], device["authentication"],
        "keys survive"
    );
    assert_eq!(again["etag"], device["etag"]);
    let (_, twin) = api.call(reqwest::Method::GET, "/twins/keeper", None).await;
    assert_eq!(twin["tags"], json!({"t": 1}));
    assert_eq!(twin["properties"]["desired"]["d"], 2);
    assert_eq!(twin["properties"]["desired"]["$version"], 2);
    let (status, _) = api
        .call(reqwest::Method::GET, "/devices/keeper/modules/m", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    second.start_kill().unwrap();
    second.wait().await.unwrap();
}

#[tokio::test]
async fn in_memory_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_azure-iot"))
            .args([
                "hub",
                "start",
                "--in-memory",
                "--https-port",
                "0",
                "--data-dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut child = run(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path().join("hub.json").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(
        !dir.path().join("hub.db").exists(),
        "no database file in memory mode"
    );
    assert!(dir.path().join("ca.pem").exists());
}

#[test]
fn bad_flags_are_clear_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-iot"))
        .args([
            "hub",
            "start",
            "--hostname",
            "bad host",
            "--https-port",
            "0",
            "--in-memory",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a valid host name"), "{stderr}");
}
