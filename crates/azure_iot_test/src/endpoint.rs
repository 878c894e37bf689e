use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use azure_iot_emulator::EmulatorHandle;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Where a hub listens and how to trust and authenticate to it.
#[derive(Debug, Clone)]
pub struct HubEndpoint {
    pub hostname: String,
    pub https_addr: SocketAddr,
    pub mqtt_addr: SocketAddr,
    pub amqp_addr: SocketAddr,
    pub ca_pem: String,
    pub connection_strings: BTreeMap<String, String>,
}

impl HubEndpoint {
    /// The endpoint of an in-process emulator.
    pub fn of(hub: &EmulatorHandle) -> Self {
        let connection_strings = [
            "iothubowner",
            "service",
            "device",
            "registryRead",
            "registryReadWrite",
        ]
        .into_iter()
        .filter_map(|p| {
            hub.connection_string(p)
                .map(|cs| (p.to_owned(), cs.to_owned()))
        })
        .collect();
        Self {
            hostname: hub.hostname().to_owned(),
            https_addr: hub.https_addr(),
            mqtt_addr: hub.mqtt_addr(),
            amqp_addr: hub.amqp_addr(),
            ca_pem: hub.ca_pem().to_owned(),
            connection_strings,
        }
    }

    /// The endpoint `azure-iot hub start` describes in `dir` (`hub.json`, `ca.pem`), on 127.0.0.1.
    pub fn from_data_dir(dir: &Path) -> Self {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("hub.json")).unwrap()).unwrap();
        let port = |name: &str| doc["ports"][name].as_u64().unwrap() as u16;
        Self {
            hostname: doc["hostname"].as_str().unwrap().to_owned(),
            https_addr: ([127, 0, 0, 1], port("https")).into(),
            mqtt_addr: ([127, 0, 0, 1], port("mqtt")).into(),
            amqp_addr: ([127, 0, 0, 1], port("amqp")).into(),
            ca_pem: std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
            connection_strings: serde_json::from_value(doc["connection_strings"].clone()).unwrap(),
        }
    }

    /// A policy's connection string.
    pub fn connection_string(&self, policy: &str) -> &str {
        self.connection_strings.get(policy).expect("policy exists")
    }

    /// [`tls_config`](Self::tls_config) presenting a client certificate.
    pub fn tls_config_with_certificate(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
    ) -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(self.roots())
        .with_client_auth_cert(chain, key)
        .expect("client certificate and key match")
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(cert.expect("CA PEM parses"))
                .expect("CA is acceptable");
        }
        roots
    }

    /// A TLS client configuration trusting the hub's CA (ring provider, as everywhere).
    pub fn tls_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(cert.expect("CA PEM parses"))
                .expect("CA is acceptable");
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}
