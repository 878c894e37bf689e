//! TCP + TLS to the hub's MQTT port (ring provider, TLS 1.2 and 1.3 as the hub offers).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::auth::X509Certificate;
use crate::error::{Error, ErrorKind, Result};

/// The client's TLS configuration: `trusted_ca_pem` if given, else the operating system's
/// roots (which is what trusts the real Azure IoT Hub); presenting `certificate` if given.
pub(crate) fn tls_config(
    trusted_ca_pem: Option<&str>,
    certificate: Option<&X509Certificate>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match trusted_ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| {
                    Error::with_source(
                        ErrorKind::InvalidArgument,
                        "the trusted CA is not valid PEM",
                        e,
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    Error::with_source(
                        ErrorKind::InvalidArgument,
                        "the trusted CA certificate is not usable as a trust anchor",
                        e,
                    )
                })?;
            }
            if roots.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "the trusted CA PEM holds no certificate",
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(Error::new(
                    ErrorKind::Connect,
                    "no trusted root certificates found in the operating system's store; \
                     install ca-certificates or pass ClientOptions::trusted_ca_pem",
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::with_source(ErrorKind::Connect, "TLS configuration", e))?
    .with_root_certificates(roots);
    let config = match certificate {
        Some(cert) => builder
            .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::InvalidArgument,
                    "the device certificate and private key cannot be used together",
                    e,
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Opens TCP to `host:port` and completes the TLS handshake, verifying `host`.
pub(crate) async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
) -> Result<TlsStream<TcpStream>> {
    let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::with_source(
            ErrorKind::InvalidArgument,
            format!("`{host}` is not a valid host name"),
            e,
        )
    })?;
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| {
        Error::with_source(ErrorKind::Connect, format!("cannot reach {host}:{port}"), e)
    })?;
    // Telemetry is many small packets, each awaited: Nagle would add latency to every one.
    tcp.set_nodelay(true)
        .map_err(|e| Error::with_source(ErrorKind::Connect, "TCP_NODELAY", e))?;
    TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Connect,
                format!("TLS handshake with {host}:{port} failed"),
                e,
            )
        })
}
