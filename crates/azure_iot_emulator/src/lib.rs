//! A local Azure IoT Hub emulator that speaks the real wire protocols.
//!
//! # Design
//!
//! ```text
//!                  ┌──────────────────────────── Emulator ─────────────────────────────────┐
//!                  │  TLS accept (net) ─▶ classification (route): hub or DPS traffic         │
//!  service SDKs ──▶│ HTTPS :443  hyper ─▶ axum router ─▶ handlers ────────┐                 │
//!  (REST)          │                  (SAS + policy rights)               │ Hub::call       │
//!  devices ───────▶│ MQTT :8883  mqtt::session (codec, flow) ─▶ device ───┤ (bounded queue) │
//!                  │             (also MQTT over WebSockets on :443)  core │                 │
//!                  │    telemetry ─▶ TelemetryLog (telemetry.db, group commit)               │
//!  devices ───────▶│ HTTPS :443  http::device (stateless: telemetry, C2D  │                 │
//!                  │             polling, file upload) ───────────▶ core ─┤                 │
//!  devices ───────▶│ HTTPS :10000 blob (SAS; streamed to blob-store/)     │                 │
//!  services ──────▶│ AMQP :5671  amqp (CBS, C2D sender, feedback, file    │                 │
//!                  │             notifications) ──────────────────────────┤                 │
//!  Event Hubs ────▶│ AMQP :5671  amqp::eventhubs (same listener, + WSS :443): consumers read │
//!  consumers       │             the telemetry log's partitions (read-only pool, live tail) │
//!                  │                                                       ▼                 │
//!                  │                   state thread: HubState ──▶ Store (SQLite, hub.db, WAL) │
//!                  │                   registry, twins, policies, links, locked queues       │
//!                  │                                                       ▲ Hub::call       │
//!  devices ───────▶│ DPS (HTTPS, MQTT, AMQP, + WS) ─▶ dps::Dps: attestation, allocation,     │
//!  DPS service ───▶│   (same ports, told apart by route)  webhook ─▶ DPS thread: DpsState ─▶ │
//!                  │                                       dps.db (enrollments, records, CAs)│
//!                  └──────────────────────────────────────────────────────────────────────────┘
//!   data dir: ca.pem (trust this), ca-key.pem, hub.db, telemetry.db, dps.db, blob-store/
//!             (uploaded files), hub.json (hostname, ports, blob endpoint, connection strings,
//!             DPS id scope, endpoint and connection string, the Event Hubs-compatible
//!             endpoint and its connection strings)
//! ```
//!
//! * **One owner of state.** `HubState` (module `hub`) lives on one thread; front-ends send it
//!   closures and await the results. No locks, no torn reads, and SQLite used from one thread.
//!   Its job queue is bounded: a flood of requests slows the connections that send it.
//! * **Write-through durability.** A mutation is validated, committed to SQLite, and only
//!   then applied in memory and acknowledged: a failed request changes nothing, and an
//!   acknowledged one survives `kill -9`.
//! * **One device core, thin front-ends.** Every IoT Hub rule for devices (authentication,
//!   telemetry stamping, twin answers and errors, method routing, C2D settlement, persistent
//!   sessions) lives in `device`; a device front-end (MQTT today) is a codec and flow adapter
//!   over it and maps its neutral refusals to its wire form. Hub state holds no protocol
//!   detail: no topic filters, no CONNACK codes.
//! * **One locked queue.** Cloud-to-device messages, feedback records and file-upload
//!   notifications are handed out under connection locks (MQTT) or token locks with a deadline
//!   (HTTPS ETags, AMQP deliveries, inbox batches) and settled as complete, abandon or reject
//!   (`hub::queue`; the service-bound inboxes share `hub::inbox`).
//! * **File uploads go to a blob endpoint of its own** (ADR 12): a small Azure Blob REST
//!   subset on its own TLS port, whose `host:port` the hub hands devices as `hostName`. Or,
//!   with a storage account configured (`EmulatorBuilder::storage`, ADR 25), to that account
//!   or Azurite: the hub signs the device's SAS with the account key, creates the container
//!   at start-up and reads the blob's properties for the notification (`blob/storage.rs`).
//! * **Thin service front-ends.** The HTTPS front-end authenticates (SAS against the hub's
//!   shared access policies, with the right each operation needs), decodes, calls the hub,
//!   encodes. Errors use the IoT Hub body the official SDKs parse.
//! * **TLS everywhere.** A CA generated on first start (or the user's certificate) signs the
//!   server certificate for the hostname, `localhost`, `127.0.0.1` and `::1`.
//! * **A Device Provisioning Service beside the hub** (ADR 9, ADR 14): its own state thread and
//!   `dps.db`, its own id scope and `provisioningserviceowner` policy, served on the hub's
//!   ports and by default under the hub's host name (`dps_hostname` sets one of its own, which
//!   the server certificate then covers too). It writes the identities it
//!   assigns through `Hub::call` (the hub first, its own record after), so a registration is
//!   never half-visible. Every DPS rule lives in `dps`; its front-ends (`http::dps`,
//!   `mqtt::dps`, `amqp::dps`, told apart from hub traffic by `route`) only map wire forms to
//!   the core's calls (authenticate, register, operation status), so every DPS rule is the
//!   same on every transport. CA certificates registered with the DPS (which X.509 groups name
//!   in `caReferences`) live in `dps.db` too, managed on the emulator-only
//!   `/$emulator/dps/certificates` route (Azure does this in its management plane), with the
//!   hub's CA parsing and description reused (`dps::certificates`). TPM attestation
//!   (`dps::tpm`, ADR 0023) builds activation blobs (TPM 2.0 MakeCredential to the EK and a
//!   duplicate of a fresh HMAC key to the SRK) from the public areas alone; the HTTPS 401
//!   challenge and the AMQP SASL `TPM` exchange (`amqp::sasl_tpm`) both call
//!   `Dps::tpm_challenge`, and the identity key each challenge issued (`tpm_sessions` in
//!   `dps.db`) verifies the device's SAS token.
//! * **The built-in Event Hubs-compatible endpoint** (ADR 17) is served on the hub's own AMQP
//!   listener and host name, told apart by link address and CBS audience: the entity is the
//!   hub's name, consumers read the telemetry log's partitions from the position their
//!   selector filter asks for and then live, within their credit, each event sent settled as
//!   Event Hubs sends them (a consumer link's own acceptor); `$management`, epochs and
//!   the redirect IoT Hub sends hub-policy logins are served as Event Hubs and IoT Hub do, so
//!   the official Event Hubs SDKs read telemetry unchanged (`hub.json` has their connection
//!   string).
//! * **Hub notifications go through the telemetry log** (ADR 24): when routed
//!   (`EmulatorBuilder::event_routes`, off by default as on a new hub), the state thread emits
//!   twin change, device lifecycle and connection-state events from the one operation that
//!   makes each change (`hub::routed`) into the same bounded queue and durable log as
//!   telemetry, partitioned by device id; the Event Hubs endpoint stamps them with their
//!   `iothub-message-source`.
//! * **Jobs v2 run in tasks of their own** (ADR 18): the rules and the stored job records
//!   and per-device rows live with the hub's state (`hub::jobs`); a scheduler task (`jobs`)
//!   waits for start times, applies twin patches in chunks through the hub's twin code and
//!   calls methods through the same code as `POST /twins/{id}/methods`, stops at the maximum
//!   execution time or a cancel, and resumes unfinished jobs after a restart.
//! * **Configurations apply on the state thread** (ADR 19): after every change that can alter
//!   the outcome (a configuration written, a twin's tags or properties written, an identity
//!   created), `hub::configurations` re-evaluates the twins concerned, per content path by
//!   priority, and writes the changes as service desired patches; metrics are computed on read
//!   with the query engine.
//! * **Loud about gaps.** Known IoT Hub features not implemented here answer 501 or their
//!   protocol's "unavailable" with an explanation; nothing pretends to succeed.
//!
//! # Use from tests
//!
//! ```no_run
//! # async fn demo() -> Result<(), azure_iot_emulator::EmulatorError> {
//! let hub = azure_iot_emulator::Emulator::builder()
//!     .https_port(0)
//!     .mqtt_port(0)
//!     .amqp_port(0)
//!     .start()
//!     .await?;
//! let owner = hub.connection_string("iothubowner");
//! let addr = hub.https_addr();          // 127.0.0.1:<ephemeral port>
//! let ca = hub.ca_pem();                // trust this in the client
//! # let _ = (owner, addr, ca);
//! hub.shutdown().await;
//! # Ok(()) }
//! ```

mod actor;
mod amqp;
mod blob;
pub mod config;
mod data_dir;
mod device;
mod dps;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod hub;
mod jobs;
mod mqtt;
mod net;
mod provisioning;
mod route;
mod store;
mod telemetry;
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_iot_core::connection_string::ServiceConnectionString;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use blob::{DEFAULT_STORAGE_CONTAINER, StorageAccount};
pub use config::{Durability, EmulatorBuilder, EventRoutes, FileUploadOptions, HUB_FILE, Limits};
pub use device::RefusalReason;
pub use error::EmulatorError;
pub use hub::faults::Fault;
pub use telemetry::{EventPosition, MessageSource, PartitionInfo, PropertyValue, TelemetryEvent};
pub use tls::{CA_FILE, TlsSource};

use crate::hub::{Hub, HubState};
use crate::store::Store;

/// The emulator. Start one with [`Emulator::builder`].
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// A builder with the defaults: hostname `localhost`, HTTPS on port 443 and MQTT on 8883 of
    /// 127.0.0.1, state in memory unless a data directory is given.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
}

/// A running emulator. Dropping it stops the servers and closes device sessions without waiting
/// for them; [`shutdown`](Self::shutdown) does the same and waits until everything has ended.
pub struct EmulatorHandle {
    hostname: String,
    https_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    amqp_addr: SocketAddr,
    blob_addr: SocketAddr,
    ca_pem: String,
    hub: Hub,
    dps: dps::Dps,
    telemetry: telemetry::TelemetryLog,
    connection_strings: BTreeMap<String, String>,
    event_hubs: config::EventHubsEntry,
    data_dir: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    hub_thread: Option<std::thread::JoinHandle<()>>,
    dps_thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("hostname", &self.hostname)
            .field("https_addr", &self.https_addr)
            .field("mqtt_addr", &self.mqtt_addr)
            .field("amqp_addr", &self.amqp_addr)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The hub's host name (what connection strings and certificates name).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The address the HTTPS endpoint listens on (the real port when 0 was asked for).
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The address the MQTT-over-TLS endpoint listens on.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The address the AMQP-over-TLS endpoint listens on.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    /// The address the blob endpoint (file uploads) listens on.
    pub fn blob_addr(&self) -> SocketAddr {
        self.blob_addr
    }

    /// Up to `limit` telemetry messages the hub accepted after sequence number `after` (0: from
    /// the start), in order, with the system properties the hub stamps.
    pub async fn telemetry(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TelemetryEvent>, EmulatorError> {
        self.telemetry.read(after, limit, None, None).await
    }

    /// The telemetry log's partition count.
    pub fn telemetry_partitions(&self) -> u32 {
        self.telemetry.partition_count()
    }

    /// Up to `limit` telemetry messages of one partition from `position`, in partition order
    /// (what the Event Hubs-compatible endpoint serves).
    pub async fn telemetry_partition(
        &self,
        partition: u32,
        position: EventPosition,
        limit: usize,
    ) -> Result<Vec<TelemetryEvent>, EmulatorError> {
        self.telemetry
            .read_partition(partition, position, limit)
            .await
    }

    /// A telemetry partition's first and last positions.
    pub async fn telemetry_partition_info(
        &self,
        partition: u32,
    ) -> Result<PartitionInfo, EmulatorError> {
        self.telemetry.partition_info(partition).await
    }

    /// Queues a cloud-to-device message for `device_id`, as a service sending over AMQP
    /// would. Returns the message's sequence number; fails if the device is unknown or its
    /// queue is full (50 messages).
    pub async fn send_cloud_to_device(
        &self,
        device_id: &str,
        message: azure_iot_core::message::Message,
    ) -> Result<u64, EmulatorError> {
        let device = device_id.to_owned();
        self.hub
            .call(move |s| s.enqueue_c2d(&device, message))
            .await?
            .map_err(|e| EmulatorError::Refused(e.to_string()))
    }

    /// Injects a fault (see [`Fault`]).
    pub async fn inject(&self, fault: Fault) -> Result<(), EmulatorError> {
        self.hub
            .call(move |s| s.inject(fault))
            .await?
            .map_err(EmulatorError::Refused)
    }

    /// Clears every injected fault.
    pub async fn clear_faults(&self) -> Result<(), EmulatorError> {
        self.hub.call(|s| s.clear_faults(None)).await
    }

    /// The CA certificate (PEM) that signs the server certificate: what clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The data directory, if the emulator has one.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// The connection string of a shared access policy (`iothubowner`, `service`, `device`,
    /// `registryRead`, `registryReadWrite`), key included. Never log it.
    pub fn connection_string(&self, policy: &str) -> Option<&str> {
        self.connection_strings.get(policy).map(String::as_str)
    }

    /// The Event Hubs-compatible endpoint's connection string for a shared access policy
    /// with ServiceConnect (`iothubowner`, `service`):
    /// `Endpoint=sb://{host}[:{port}]/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath={hub}`,
    /// what `EventHubConsumerClient.from_connection_string` takes. `None` for another policy.
    /// Never log it.
    pub fn event_hubs_connection_string(&self, policy: &str) -> Option<&str> {
        self.event_hubs
            .connection_strings
            .get(policy)
            .map(String::as_str)
    }

    /// The Event Hubs-compatible endpoint's entity name (`EntityPath`): the hub's name.
    pub fn event_hubs_name(&self) -> &str {
        &self.event_hubs.entity_path
    }

    /// The Event Hubs-compatible endpoint's consumer groups, `$Default` first.
    pub fn event_hubs_consumer_groups(&self) -> &[String] {
        &self.event_hubs.consumer_groups
    }

    /// The Device Provisioning Service's id scope (devices name it when they register).
    pub fn dps_id_scope(&self) -> &str {
        self.dps.id_scope()
    }

    /// The Device Provisioning Service's host name (its service API's token audience).
    pub fn dps_hostname(&self) -> &str {
        &self.dps.info().hostname
    }

    /// The DPS service connection string (`provisioningserviceowner` policy), key included.
    /// Never log it.
    pub fn dps_connection_string(&self) -> String {
        self.dps.connection_string()
    }

    /// The `iothubowner` connection string, key included. Never log it.
    pub fn owner_connection_string(&self) -> &str {
        self.connection_string("iothubowner").unwrap_or_default()
    }

    /// Stops accepting connections, closes the open ones and waits for the state thread to
    /// finish its last write.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        let threads = [self.dps_thread.take(), self.hub_thread.take()];
        // The handle's own references to the hub and the DPS must go too, or the state threads
        // never end. The DPS thread ends first (it holds a hub handle).
        drop(self);
        for thread in threads.into_iter().flatten() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl EmulatorBuilder {
    /// Binds every endpoint, loads or creates state and certificates, writes `ca.pem` and
    /// `hub.json` to the data directory (if any) and starts serving.
    pub async fn start(self) -> Result<EmulatorHandle, EmulatorError> {
        let config = self.into_config()?;
        // Files, SQLite (state load, telemetry log open or migration) and key generation block:
        // they run off the async worker threads.
        let (config, tls, state, telemetry, blob_files) = tokio::task::spawn_blocking(move || {
            if let Some(dir) = &config.data_dir {
                data_dir::prepare(dir, !config.in_memory)?;
            }
            let data_dir = config.data_dir.as_deref();
            let tls = tls::TlsMaterial::load(
                &config.tls,
                data_dir,
                &config.hostname,
                &[config.dps_hostname.as_str()],
            )?;
            if let (Some(dir), TlsSource::Files { .. }) = (data_dir, &config.tls) {
                tls::write_private(&dir.join(CA_FILE), tls.ca_pem.as_bytes())?;
            }
            let store = Store::open_with(
                if config.in_memory { None } else { data_dir },
                config.durability,
            )?;
            let mut state = HubState::load(store)?;
            state.configure_file_upload(config.file_upload);
            let blob_files = blob::BlobFiles::open(
                if config.in_memory { None } else { data_dir },
                config.limits.body_timeout,
            )
            .map_err(|e| EmulatorError::Config(format!("the blob store cannot start: {e}")))?;
            // Opening the log may migrate an old one, which takes a while on a big log.
            let telemetry = telemetry::TelemetryLog::open_with(
                if config.in_memory { None } else { data_dir },
                config.telemetry,
            )?;
            state.route_events(
                config.event_routes,
                telemetry.clone(),
                amqp::eventhubs::entity_name(&config.hostname),
            );
            Ok::<_, EmulatorError>((config, tls, state, telemetry, blob_files))
        })
        .await
        .map_err(|e| EmulatorError::Config(format!("start-up did not finish: {e}")))??;
        let data_dir = config.data_dir.as_deref();
        let policies = Arc::new(state.policies().clone());
        let grant_generation = state.grant_generation();
        let (hub, hub_thread) = Hub::start(state)?;
        let dps_options = dps::DpsOptions {
            hostname: config.dps_hostname.clone(),
            hub_hostname: config.hostname.clone(),
            retry_after: config.dps_retry_after,
            webhook_timeout: config.dps_webhook_timeout,
            ca_pem: tls.ca_pem.clone(),
        };
        let (dps_dir, durability, dps_hub) = (
            if config.in_memory {
                None
            } else {
                config.data_dir.clone()
            },
            config.durability,
            hub.clone(),
        );
        let (dps, dps_thread) = tokio::task::spawn_blocking(move || {
            dps::Dps::start(dps_dir.as_deref(), durability, dps_options, dps_hub)
        })
        .await
        .map_err(|e| EmulatorError::Config(format!("the DPS did not start: {e}")))??;

        let bind = |addr: SocketAddr| async move { net::listen(addr) };
        let https_listener = bind(config.https_addr).await?;
        let https_addr = https_listener.local_addr()?;
        let mqtt_listener = bind(config.mqtt_addr).await?;
        let mqtt_addr = mqtt_listener.local_addr()?;
        let amqp_listener = bind(config.amqp_addr).await?;
        let amqp_addr = amqp_listener.local_addr()?;
        let blob_listener = bind(config.blob_addr).await?;
        let blob_addr = blob_listener.local_addr()?;
        let owner_key = policies
            .iter()
            .find(|p| p.name == "iothubowner")
            .map(|p| p.primary.clone())
            .ok_or_else(|| EmulatorError::Config("the iothubowner policy is missing".into()))?;
        let external = match config.storage.clone() {
            Some(account) => Some(blob::ExternalStorage::start(account, &tls.ca_pem).await?),
            None => None,
        };
        let blob_endpoint = blob::BlobEndpoint::new(
            blob_files,
            &owner_key,
            format!("{}:{}", config.hostname, blob_addr.port()),
            external,
        );
        let connection_strings: BTreeMap<String, String> = policies
            .iter()
            .map(|p| {
                let cs = ServiceConnectionString::new(
                    config.hostname.clone(),
                    p.name.clone(),
                    p.primary.clone(),
                );
                (p.name.clone(), cs.to_secret_string())
            })
            .collect();
        let event_hubs_endpoint = Arc::new(amqp::eventhubs::EventHubs::new(
            Arc::from(config.hostname.as_str()),
            amqp_addr.port(),
            &config.consumer_groups,
            telemetry.clone(),
        ));
        let event_hubs = config::EventHubsEntry {
            endpoint: amqp::eventhubs::endpoint(&config.hostname, amqp_addr.port()),
            port: amqp_addr.port(),
            entity_path: event_hubs_endpoint.entity.clone(),
            partitions: telemetry.partition_count(),
            consumer_groups: event_hubs_endpoint.consumer_groups.clone(),
            connection_strings: policies
                .iter()
                .filter(|p| p.rights.contains(hub::policy::Rights::SERVICE_CONNECT))
                .map(|p| {
                    let cs = amqp::eventhubs::connection_string(
                        &config.hostname,
                        amqp_addr.port(),
                        &p.name,
                        &p.primary,
                    );
                    (p.name.clone(), cs)
                })
                .collect(),
            routed_sources: config.event_routes.sources(),
        };
        if let Some(dir) = data_dir {
            let ports = BTreeMap::from([
                ("https", https_addr.port()),
                ("mqtt", mqtt_addr.port()),
                ("amqp", amqp_addr.port()),
                ("blob", blob_addr.port()),
            ]);
            let blob = match &blob_endpoint.external {
                Some(storage) => config::BlobEntry {
                    endpoint: storage.endpoint().to_owned(),
                    container: storage.container().to_owned(),
                    account: Some(storage.account_name().to_owned()),
                },
                None => config::BlobEntry {
                    endpoint: format!("https://{}", blob_endpoint.host),
                    container: blob::CONTAINER.to_owned(),
                    account: None,
                },
            };
            let dps_entry = config::DpsEntry {
                id_scope: dps.id_scope().to_owned(),
                hostname: config.dps_hostname.clone(),
                global_endpoint: format!("{}:{}", config.hostname, https_addr.port()),
                connection_string: dps.connection_string(),
            };
            config::write_hub_file(
                dir,
                &config.hostname,
                &ports,
                &blob,
                &connection_strings,
                &dps_entry,
                &event_hubs,
            )?;
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        let hostname: Arc<str> = Arc::from(config.hostname.as_str());
        let handle_hub = hub.clone();
        let sweeper = tokio::spawn(sweep_expired_c2d(hub.clone(), shutdown_rx.clone()));
        let job_scheduler = jobs::start(hub.clone(), shutdown_rx.clone()).await?;
        let mqtt_context = Arc::new(mqtt::MqttContext {
            device: device::DeviceCore {
                hub: hub.clone(),
                telemetry: telemetry.clone(),
                hostname: hostname.clone(),
            },
            shutdown: shutdown_rx.clone(),
            limits: config.limits,
            dps: dps.clone(),
        });
        let amqp_context = Arc::new(amqp::AmqpContext {
            hub: hub.clone(),
            policies: policies.clone(),
            hostname: hostname.clone(),
            shutdown: shutdown_rx.clone(),
            grant_generation,
            limits: config.limits,
            device: mqtt_context.device.clone(),
            dps: dps.clone(),
            eventhubs: event_hubs_endpoint,
        });
        let app = http::router(http::AppState {
            hub,
            policies,
            hostname,
            mqtt: mqtt_context.clone(),
            amqp: amqp_context.clone(),
            body_timeout: config.limits.body_timeout,
            device: mqtt_context.device.clone(),
            blob: Some(blob_endpoint.clone()),
            dps: Some(dps.clone()),
        });
        let https = tokio::spawn(http::serve(
            https_listener,
            tls.https_config()?,
            app,
            config.limits,
            shutdown_rx.clone(),
        ));
        let blob_server = tokio::spawn(http::serve(
            blob_listener,
            tls.https_config()?,
            blob::router(blob_endpoint),
            config.limits,
            shutdown_rx.clone(),
        ));
        let mqtt = tokio::spawn(mqtt::serve(
            mqtt_listener,
            tls.plain_config()?,
            mqtt_context,
            shutdown_rx.clone(),
        ));
        let amqp = tokio::spawn(amqp::serve(
            amqp_listener,
            tls.plain_config()?,
            amqp_context,
            shutdown_rx,
        ));
        tracing::info!(hostname = %config.hostname, %https_addr, %mqtt_addr, "IoT Hub emulator started");
        Ok(EmulatorHandle {
            hostname: config.hostname,
            https_addr,
            mqtt_addr,
            amqp_addr,
            blob_addr,
            ca_pem: tls.ca_pem,
            hub: handle_hub,
            dps,
            telemetry,
            connection_strings,
            event_hubs,
            data_dir: config.data_dir,
            shutdown,
            tasks: vec![https, blob_server, mqtt, amqp, sweeper, job_scheduler],
            hub_thread: Some(hub_thread),
            dps_thread: Some(dps_thread),
        })
    }
}

/// Expires cloud-to-device messages once a second (feedback `Expired`), until shutdown.
async fn sweep_expired_c2d(hub: Hub, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if hub.call(|s| s.sweep_c2d()).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
