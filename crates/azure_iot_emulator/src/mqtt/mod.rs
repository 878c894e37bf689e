//! The MQTT front-end: devices and modules over MQTT 3.1.1 on TLS (port 8883).
//!
//! Each connection is a [`session`]: a codec and flow adapter over the device core
//! (`crate::device`), which authenticates, stores telemetry, answers twin requests, routes
//! method answers and settles cloud-to-device messages. The session turns packets into core
//! calls and core events into packets. Topic and property-bag grammar, usernames and the
//! packet codec come from `azure_iot_protocol`, the same code the device client uses.
//!
//! A CONNECT whose user name is a DPS one (`{idScope}/registrations/{regId}/…`, see
//! `crate::route`) is served by [`dps`] instead: a device registering with the Device
//! Provisioning Service on the same port, over TLS or WebSockets alike.
//!
//! Both kinds of connection read, write and keep their keep-alive through one [`wire`]: the
//! loop that waits for the next packet (or the connection's own work) is written once.

mod dps;
mod session;
mod wire;

#[cfg(test)]
mod client_tests;

pub(crate) use session::run as run_session;

use std::sync::Arc;

use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Limits;
use crate::device::DeviceCore;
use crate::net::serve_tls;

/// What every MQTT session can reach.
pub(crate) struct MqttContext {
    /// The device core MQTT sessions are adapters over (hub, telemetry log, host name).
    pub(crate) device: DeviceCore,
    /// Turns true when the emulator shuts down; every session then closes, including those
    /// that arrived as WebSocket upgrades (which the accept loops do not own).
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Connection limits and timeouts (the CONNECT deadline is `connect_timeout`).
    pub(crate) limits: Limits,
    /// The Device Provisioning Service, for connections whose CONNECT names it ([`dps`]).
    pub(crate) dps: crate::dps::Dps,
}

/// Serves MQTT over TLS on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    context: Arc<MqttContext>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = context.limits;
    serve_tls(
        listener,
        tls,
        limits,
        shutdown,
        move |stream, peer, _slot| {
            let context = context.clone();
            let certificate = client_certificate(&stream);
            session::run(stream, peer, context, certificate)
        },
    )
    .await;
}

/// The certificate chain the client presented in the TLS handshake (leaf first; empty if none).
pub(crate) fn client_certificate<S>(
    stream: &tokio_rustls::server::TlsStream<S>,
) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default()
}
