//! Entry points for the fuzz targets in `fuzz/` only: not part of the emulator's API, not
//! covered by semver, and hidden from its documentation.
//!
//! A fuzz target needs the real connection handlers without sockets, TLS or a whole
//! [`Emulator`](crate::Emulator): [`AmqpServer`] is the AMQP endpoint's context over an
//! in-memory hub, and [`AmqpServer::serve`] runs the endpoint's own connection handler
//! (protocol header, frame guard, SASL or plain handshake, sessions, links, CBS, C2D,
//! feedback) on any byte stream, such as one end of a `tokio::io::duplex`.
//!
//! The hub is the one the golden vectors were captured against (`testdata/vectors/`, see its
//! README): host name `localhost`, every policy's keys 32 zero bytes, device `dev-vectors`
//! registered, so a captured exchange (or a mutation of it) can authenticate and reach the
//! links behind CBS, not only the handshake.

use std::sync::Arc;

use azure_iot_core::sas::SharedAccessKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::amqp::{self, AmqpContext};
use crate::error::EmulatorError;
use crate::hub::identity::IdentityBody;
use crate::hub::policy::{DEFAULT_POLICIES, Policy};
use crate::hub::{Hub, HubState};
use crate::store::Store;

/// The golden vectors' host name.
pub const HOSTNAME: &str = "localhost";
/// The golden vectors' device.
pub const DEVICE_ID: &str = "dev-vectors";

/// The AMQP endpoint over an in-memory hub. Build one per process: its hub state thread runs
/// until the process ends.
pub struct AmqpServer {
    context: Arc<AmqpContext>,
    /// Held so that the connections' shutdown signal never fires.
    _shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for AmqpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpServer")
            .field("hostname", &&*self.context.hostname)
            .finish_non_exhaustive()
    }
}

impl AmqpServer {
    /// Starts the in-memory hub (see the module header) and its state thread. Needs no
    /// runtime: [`serve`](Self::serve) may then run on any tokio runtime, one after another
    /// or at once.
    pub fn start() -> Result<Self, EmulatorError> {
        let store = Store::open_with(None, crate::config::Durability::default())?;
        let zero_key = || {
            SharedAccessKey::from_bytes(vec![0; 32])
                .map_err(|e| EmulatorError::Config(format!("the zero key: {e}")))
        };
        for (name, rights) in DEFAULT_POLICIES {
            store.insert_policy(&Policy {
                name: name.to_owned(),
                primary: zero_key()?,
                secondary: zero_key()?,
                rights,
            })?;
        }
        let mut state = HubState::load(store)?;
        state
            .put_identity(DEVICE_ID, None, IdentityBody::default(), None)
            .map_err(|e| EmulatorError::Refused(e.to_string()))?;
        let policies = Arc::new(state.policies().clone());
        let grant_generation = state.grant_generation();
        // The state thread ends when the last hub handle is dropped; the context holds one.
        let (hub, _thread) = Hub::start(state)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let device = crate::device::DeviceCore {
            hub: hub.clone(),
            telemetry: crate::telemetry::TelemetryLog::open_with(None, Default::default())?,
            hostname: Arc::from(HOSTNAME),
        };
        let dps = crate::provisioning::in_memory_dps(&hub)?;
        let eventhubs = Arc::new(crate::amqp::eventhubs::EventHubs::new(
            Arc::from(HOSTNAME),
            crate::config::DEFAULT_AMQP_PORT,
            &[],
            device.telemetry.clone(),
        ));
        Ok(Self {
            context: Arc::new(AmqpContext {
                eventhubs,
                device,
                hub,
                policies,
                hostname: Arc::from(HOSTNAME),
                shutdown: shutdown_rx,
                grant_generation,
                limits: crate::config::Limits::default(),
                dps,
            }),
            _shutdown: shutdown,
        })
    }

    /// Serves one AMQP connection on `stream` with the endpoint's own handler, as if it had
    /// come in on the AMQP port after TLS; returns when the handler does. The handler spawns
    /// its sessions and links on the current runtime, and they may outlive this call.
    pub async fn serve<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
    {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        amqp::run(stream, peer, self.context.clone(), Vec::new()).await;
    }
}

/// The Event Hubs endpoint's parsers of client text, for the `eventhubs_link` fuzz target:
/// a link address and a selector-filter expression. Returns whether each was understood.
pub fn eventhubs_link(text: &str) -> (bool, bool) {
    let address = amqp::eventhubs::address::EhAddress::parse(text).is_some();
    let filter = amqp::eventhubs::filter::parse_expression(text).is_ok();
    (address, filter)
}

/// The padding of a performative the emulator writes (`amqp::full_frames`): `Some` padded
/// frame, or `None` when it goes out unchanged.
pub fn pad_frame(frame: &[u8]) -> Option<Vec<u8>> {
    amqp::full_frames::pad(frame)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The fuzz target's seeds from the Python and Node service captures (tokens re-signed to
    /// expire in 2100) authenticate and send their cloud-to-device message: the target reaches
    /// the links behind CBS, not only the handshake.
    #[tokio::test(start_paused = true)]
    async fn the_service_seeds_reach_cloud_to_device() {
        let server = AmqpServer::start().unwrap();
        for (seed, queued) in [("efe55e7c1c65c57a", 1), ("8b5d2eb613cbb8e5", 2)] {
            let path = format!(
                "{}/../../fuzz/seeds/amqp_frames/{seed}",
                env!("CARGO_MANIFEST_DIR")
            );
            let stream = std::fs::read(path).unwrap();
            let (client, server_side) = tokio::io::duplex(64 * 1024);
            let (mut from_server, mut to_server) = tokio::io::split(client);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let _ = from_server.read_to_end(&mut answers).await;
            });
            let client = async move {
                // Mode byte 2: the stream carries its own protocol headers.
                let mut rest = &stream[1..];
                while !rest.is_empty() {
                    let size = if rest.starts_with(b"AMQP") {
                        8
                    } else {
                        u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize
                    };
                    let (frame, after) = rest.split_at(size);
                    to_server.write_all(frame).await.unwrap();
                    rest = after;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                to_server.shutdown().await.unwrap();
            };
            tokio::join!(server.serve(server_side), client);
            let count = server
                .context
                .hub
                .call(|s| s.c2d_count(DEVICE_ID))
                .await
                .unwrap();
            assert_eq!(count, queued, "after seed {seed}");
        }
    }
}
