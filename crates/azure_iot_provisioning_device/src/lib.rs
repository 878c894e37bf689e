//! Azure IoT Hub Device Provisioning Service (DPS) device client.
//!
//! A device that knows only DPS's id scope and how to attest asks DPS which hub it belongs
//! to; DPS creates its identity there and answers with the hub and the device id. Then
//! [`RegistrationResult::device_client`] connects to that hub in one call.
//!
//! ```no_run
//! # async fn run() -> Result<(), azure_iot_provisioning_device::Error> {
//! use azure_iot_provisioning_device::{Attestation, ProvisioningDeviceClient};
//! let result = ProvisioningDeviceClient::builder("0ne00012345", Attestation::group_key("…")?)
//!     .registration_id("sensor-17")
//!     .build()?
//!     .register()
//!     .await?;
//! println!("assigned to {} as {}", result.assigned_hub(), result.device_id());
//! let client = result.device_client(azure_iot_device::ClientOptions::default()).await?;
//! # drop(client); Ok(()) }
//! ```
//!
//! # Design
//!
//! ```text
//!  ProvisioningDeviceClient::register ─ overall timeout (30 s default) ────────────────┐
//!    flow::run: register → judge → sleep(retry-after) → poll → judge → … → assigned    │
//!       │ Exchange (one request, one Reply {status, JSON body, retry-after})           │
//!       ├─ MqttExchange   CONNECT (DpsUsername, SAS password) · SUB $dps/…/res/# ·     │
//!       │                 PUBLISH register/poll topics ($rid) ← PUBLISH res/{status}   │
//!       ├─ AmqpExchange   SASL PLAIN · sender + receiver on {scope}/registrations/{id} │
//!       │                 correlation id · data-section JSON · rejected = error body   │
//!       └─ HttpsExchange  PUT …/register · GET …/operations/{op} · retry-after header  │
//!    TLS / WebSocket / proxy: azure_iot_device::net (the device client's own dialling) ┘
//! ```
//!
//! * The flow is written once (the private `flow` module): what a reply means (the official
//!   SDKs' rules: < 300 read the operation status, 300–428 a typed error, ≥ 429 send the same
//!   request again after `retry-after`) is a pure function with unit tests; the loop and the
//!   overall timeout are tested on tokio's paused clock. Transports only move one request
//!   and its answer.
//! * Wire text comes from `azure_iot_protocol`: the JSON bodies (`dps::registration`), the
//!   MQTT user name, topics and codec, the AMQP property names — the same code the emulator
//!   parses with.
//! * Dialling (TLS on the ring provider with chosen roots and client certificate, HTTP
//!   proxies, WebSockets at `/$iothub/websocket`, the HTTPS client) is the device client's,
//!   through its public [`azure_iot_device::net`] module, so both clients reach the cloud
//!   the same way.
//! * Attestation ([`Attestation`]): an individual key, a group key (the device key is
//!   derived as `HMAC-SHA256(group key, registration id)`), a ready-made SAS token, or an
//!   X.509 chain (the registration id defaults to the leaf's common name). Tokens are signed
//!   over the URL-encoded `sr` with `skn=registration`. Keys and tokens never appear in
//!   `Debug` output or errors.
//! * Errors ([`Error`]) are typed: unauthorised (with DPS's `errorCode` when it sent one),
//!   not found, disabled and failed registrations with `errorCode` and message, timeout,
//!   transport.
//! * Transports mirror `azure_iot_device`'s features: MQTT always; `mqtt_ws`, `amqp`,
//!   `amqp_ws`, `https` (all on by default). One connection per registration, closed after.
//! * TPM attestation (feature `tpm`, `TpmAttestation`) on `azure_iot_tpm`, a pure-Rust TPM
//!   2.0 command layer (ADR 0022): the EK and SRK go in the register request; DPS's
//!   activation blob (HTTPS: the 401 challenge; AMQP: the SASL `TPM` mechanism, the private
//!   `sasl_tpm` module) is activated in the TPM, which imports the identity key and signs the
//!   token with it; the assignment's `tpm.authenticationKey` is activated the same way and
//!   becomes the hub key, so [`RegistrationResult::device_client`] gets a token provider
//!   (`TpmAttestation::hub_token_provider`) that signs every hub token inside the TPM, each
//!   living `ClientOptions::token_ttl` and renewed at 85 %; registering again activates a new
//!   key, and the hub's key changes with it. MQTT with a TPM is [`Error::Unsupported`] (DPS has
//!   no TPM flow over MQTT).
//! * Not supported: `forceRegistration`.

#[cfg(feature = "amqp")]
mod amqp;
mod attestation;
mod client;
mod error;
mod flow;
#[cfg(feature = "https")]
mod https;
mod mqtt;
mod result;
#[cfg(all(feature = "tpm", feature = "amqp"))]
mod sasl_tpm;
#[cfg(feature = "tpm")]
mod tpm;

pub use attestation::Attestation;
pub use azure_iot_device::{Proxy, Transport};
pub use azure_iot_protocol::dps::registration::{RegistrationStatus, RegistrationSubstatus};
/// Where the TPM keeps the hub key DPS issued (re-exported from `azure_iot_tpm`, feature `tpm`).
#[cfg(feature = "tpm")]
pub use azure_iot_tpm::IDENTITY_KEY_HANDLE as TPM_IDENTITY_KEY_HANDLE;
/// Where a TPM is (re-exported from `azure_iot_tpm`, feature `tpm`).
#[cfg(feature = "tpm")]
pub use azure_iot_tpm::Location as TpmLocation;
pub use client::{
    DEFAULT_TIMEOUT, DEFAULT_TOKEN_TTL, GLOBAL_ENDPOINT, ProvisioningDeviceClient,
    ProvisioningDeviceClientBuilder,
};
pub use error::{Error, Result};
pub use result::{HubCredential, RegistrationResult};
#[cfg(feature = "tpm")]
pub use tpm::TpmAttestation;
