//! [`ProvisioningDeviceClient`] and its builder: where DPS is, who the device is, how it
//! attests, over which transport; [`ProvisioningDeviceClient::register`] runs the flow within
//! the overall timeout.

use std::time::Duration;

use azure_iot_device::net::{Dial, tls_config};
use azure_iot_device::{Proxy, Transport};
use azure_iot_protocol::dps::registration::{RegistrationRequest, TpmRegistration};
use serde_json::Value;

use crate::attestation::Attestation;
use crate::error::{Error, Result};
use crate::flow;
use crate::result::RegistrationResult;

/// DPS's global device endpoint.
pub const GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";

/// How long a registration may take by default, from the call to the assignment (the
/// official SDKs' default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the SAS tokens sent to DPS live by default.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What the client announces itself as (MQTT `ClientVersion`, AMQP client-version link
/// property).
pub(crate) const CLIENT_VERSION: &str =
    concat!("azure-iot-rs-provisioning/", env!("CARGO_PKG_VERSION"));

/// The longest registration id DPS takes.
const MAX_REGISTRATION_ID: usize = 128;

/// Registers one device with DPS. Build it with [`ProvisioningDeviceClient::builder`].
///
/// `Debug` shows no key, token or certificate.
#[derive(Debug, Clone)]
pub struct ProvisioningDeviceClient {
    endpoint: String,
    port: u16,
    id_scope: String,
    registration_id: String,
    attestation: Attestation,
    transport: Transport,
    trusted_ca_pem: Option<String>,
    proxy: Option<Proxy>,
    payload: Option<Value>,
    timeout: Duration,
    token_ttl: Duration,
}

/// Settings for a [`ProvisioningDeviceClient`]; every one but the id scope and the attestation
/// has a default.
#[derive(Debug, Clone)]
pub struct ProvisioningDeviceClientBuilder {
    endpoint: String,
    port: Option<u16>,
    id_scope: String,
    registration_id: Option<String>,
    attestation: Attestation,
    transport: Transport,
    trusted_ca_pem: Option<String>,
    proxy: Option<Proxy>,
    payload: Option<Value>,
    timeout: Duration,
    token_ttl: Duration,
}

impl ProvisioningDeviceClient {
    /// A builder for the DPS instance `id_scope`, attesting with `attestation`.
    pub fn builder(
        id_scope: impl Into<String>,
        attestation: Attestation,
    ) -> ProvisioningDeviceClientBuilder {
        ProvisioningDeviceClientBuilder {
            endpoint: GLOBAL_ENDPOINT.to_owned(),
            port: None,
            id_scope: id_scope.into(),
            registration_id: None,
            attestation,
            transport: Transport::default(),
            trusted_ca_pem: None,
            proxy: None,
            payload: None,
            timeout: DEFAULT_TIMEOUT,
            token_ttl: DEFAULT_TOKEN_TTL,
        }
    }

    /// The registration id this client registers.
    pub fn registration_id(&self) -> &str {
        &self.registration_id
    }

    /// Registers the device: connects, sends the register request, polls until DPS assigns
    /// it (honouring `retry-after`, and sending a throttled request again), all within the
    /// overall timeout.
    ///
    /// Errors: [`Error::Unauthorized`] (wrong key, unknown registration or id scope),
    /// [`Error::Disabled`] / [`Error::Failed`] with DPS's error code, [`Error::NotFound`],
    /// [`Error::Timeout`], [`Error::Transport`].
    pub async fn register(&self) -> Result<RegistrationResult> {
        let tls = tls_config(
            self.trusted_ca_pem.as_deref(),
            self.attestation.certificate(),
        )?;
        let dial = Dial::new(
            tls,
            self.endpoint.clone(),
            self.port,
            self.transport,
            self.proxy.clone(),
        );
        let token = self
            .attestation
            .token(&self.id_scope, &self.registration_id, self.token_ttl);
        let body = serde_json::to_vec(&RegistrationRequest {
            registration_id: Some(self.registration_id.clone()),
            payload: self.payload.clone(),
            tpm: self.tpm_registration(),
        })
        .map_err(|e| Error::InvalidArgument(format!("the payload cannot be serialised: {e}")))?;
        let registration = async {
            let assignment = self.run(&dial, token, &body).await?;
            self.activate_hub_key(&assignment).await?;
            Ok::<_, Error>(assignment)
        };
        let assignment = tokio::time::timeout(self.timeout, registration)
            .await
            .map_err(|_| Error::Timeout(self.timeout))??;
        RegistrationResult::new(assignment.operation_id, assignment.state, &self.attestation)
    }

    /// The TPM of a TPM attestation.
    #[cfg(feature = "tpm")]
    fn tpm(&self) -> Option<&crate::tpm::TpmAttestation> {
        match &self.attestation {
            Attestation::Tpm(tpm) => Some(tpm),
            _ => None,
        }
    }

    /// The register request's `tpm` member: the EK and SRK, for TPM attestation.
    fn tpm_registration(&self) -> Option<TpmRegistration> {
        #[cfg(feature = "tpm")]
        if let Some(tpm) = self.tpm() {
            return Some(TpmRegistration {
                endorsement_key: tpm.endorsement_key_base64(),
                storage_root_key: Some(tpm.storage_root_key_base64()),
            });
        }
        None
    }

    /// TPM attestation: activates the hub key DPS sent with the assignment
    /// (`registrationState.tpm.authenticationKey`), which the hub identity was given.
    #[cfg_attr(not(feature = "tpm"), allow(clippy::unused_async))]
    async fn activate_hub_key(&self, _assignment: &flow::Assignment) -> Result<()> {
        #[cfg(feature = "tpm")]
        if let Some(tpm) = self.tpm() {
            let key = _assignment
                .state
                .tpm
                .as_ref()
                .map(|t| t.authentication_key.as_str())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    Error::Protocol(
                        "a TPM registration was assigned without tpm.authenticationKey".to_owned(),
                    )
                })?;
            tpm.activate(key).await?;
        }
        Ok(())
    }

    /// The flow over the configured transport.
    async fn run(
        &self,
        dial: &Dial,
        token: Option<String>,
        body: &[u8],
    ) -> Result<flow::Assignment> {
        match self.transport {
            #[cfg(feature = "amqp")]
            Transport::Amqp => self.run_amqp(dial, token, body).await,
            #[cfg(feature = "amqp_ws")]
            Transport::AmqpWebSockets => self.run_amqp(dial, token, body).await,
            #[cfg(feature = "https")]
            Transport::Https => {
                let exchange = crate::https::HttpsExchange::new(
                    dial,
                    self.port,
                    &self.id_scope,
                    &self.registration_id,
                    token,
                    self.timeout,
                )?;
                #[cfg(feature = "tpm")]
                let exchange = match self.tpm() {
                    Some(tpm) => exchange.with_tpm_challenge(crate::https::TpmChallenge {
                        tpm: tpm.clone(),
                        resource: azure_iot_core::sas::ResourceUri::dps_registration(
                            &self.id_scope,
                            &self.registration_id,
                        ),
                        ttl: self.token_ttl,
                    }),
                    None => exchange,
                };
                let mut exchange = exchange;
                flow::run(&mut exchange, body).await
            }
            _ => {
                #[cfg(feature = "tpm")]
                if self.tpm().is_some() {
                    return Err(Error::Unsupported(
                        "TPM attestation works over HTTPS, AMQP and AMQP over WebSockets, not MQTT"
                            .to_owned(),
                    ));
                }
                let mut exchange = crate::mqtt::MqttExchange::connect(
                    dial,
                    &self.id_scope,
                    &self.registration_id,
                    CLIENT_VERSION,
                    token,
                )
                .await?;
                let result = flow::run(&mut exchange, body).await;
                exchange.close().await;
                result
            }
        }
    }

    #[cfg(feature = "amqp")]
    async fn run_amqp(
        &self,
        dial: &Dial,
        token: Option<String>,
        body: &[u8],
    ) -> Result<flow::Assignment> {
        let login = match token {
            Some(token) => crate::amqp::Login::Plain(token),
            None => crate::amqp::Login::None,
        };
        #[cfg(feature = "tpm")]
        let login = match self.tpm() {
            Some(tpm) => crate::amqp::Login::Tpm(tpm.clone(), self.token_ttl),
            None => login,
        };
        let mut exchange = crate::amqp::AmqpExchange::connect(
            dial,
            &self.id_scope,
            &self.registration_id,
            CLIENT_VERSION,
            login,
        )
        .await?;
        let result = flow::run(&mut exchange, body).await;
        exchange.close().await;
        result
    }
}

impl ProvisioningDeviceClientBuilder {
    /// The DPS host to dial instead of [`GLOBAL_ENDPOINT`] (an emulator, a private endpoint).
    pub fn global_endpoint(mut self, host: impl Into<String>) -> Self {
        self.endpoint = host.into();
        self
    }

    /// The port to dial instead of the transport's (8883 for MQTT, 5671 for AMQP, 443 for
    /// the WebSocket transports and HTTPS), for an emulator that listens elsewhere.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The registration id. Required for key attestations; for X.509 it defaults to the
    /// device certificate's subject common name (which DPS requires it to equal).
    pub fn registration_id(mut self, registration_id: impl Into<String>) -> Self {
        self.registration_id = Some(registration_id.into());
        self
    }

    /// The transport (MQTT over TLS by default).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Trust these PEM certificates instead of the operating system's roots (an emulator).
    pub fn trusted_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.trusted_ca_pem = Some(pem.into());
        self
    }

    /// Reach DPS through an HTTP `CONNECT` proxy.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Custom data for a custom allocation webhook (the register request's `payload`).
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }

    /// How long [`register`](ProvisioningDeviceClient::register) may take in all
    /// (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the SAS token sent to DPS lives (default [`DEFAULT_TOKEN_TTL`]); a key
    /// attestation signs a new one for each registration. Zero is refused by
    /// [`build`](Self::build).
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// Checks the settings: an id scope, a registration id DPS accepts (≤ 128 characters,
    /// letters, digits and `- . _ :`), a host name.
    pub fn build(self) -> Result<ProvisioningDeviceClient> {
        if self.id_scope.is_empty() || !self.id_scope.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::InvalidArgument(
                "the id scope must be letters and digits (like 0ne00012345)".to_owned(),
            ));
        }
        let registration_id = match self.registration_id {
            Some(id) => id,
            None => self.attestation.default_registration_id().ok_or_else(|| {
                Error::InvalidArgument(
                    "a registration id is required (X.509: the certificate has no common name)"
                        .to_owned(),
                )
            })?,
        };
        check_registration_id(&registration_id)?;
        if self.endpoint.is_empty() {
            return Err(Error::InvalidArgument("the DPS host is empty".to_owned()));
        }
        if self.token_ttl.is_zero() {
            return Err(Error::InvalidArgument(
                "the token lifetime must be positive".to_owned(),
            ));
        }
        let port = self.port.unwrap_or(default_port(self.transport));
        Ok(ProvisioningDeviceClient {
            endpoint: self.endpoint,
            port,
            id_scope: self.id_scope,
            registration_id,
            attestation: self.attestation,
            transport: self.transport,
            trusted_ca_pem: self.trusted_ca_pem,
            proxy: self.proxy,
            payload: self.payload,
            timeout: self.timeout,
            token_ttl: self.token_ttl,
        })
    }
}

/// The transport's standard port.
fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Mqtt => 8883,
        #[cfg(feature = "amqp")]
        Transport::Amqp => 5671,
        _ => 443,
    }
}

/// DPS's rule for registration ids.
fn check_registration_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_REGISTRATION_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "the registration id `{}` is not 1 to 128 letters, digits and - . _ :",
            id.chars()
                .take(MAX_REGISTRATION_ID + 1)
                .collect::<String>()
                .escape_debug()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn builder_checks_and_defaults() {
        let key = Attestation::symmetric_key(KEY).unwrap();
        let client = ProvisioningDeviceClient::builder("0ne0001", key.clone())
            .registration_id("dev-1")
            .build()
            .unwrap();
        assert_eq!(client.port, 8883);
        assert_eq!(client.endpoint, GLOBAL_ENDPOINT);
        assert_eq!(client.timeout, DEFAULT_TIMEOUT);
        assert_eq!(client.token_ttl, DEFAULT_TOKEN_TTL);
        assert!(!format!("{client:?}").contains(KEY));
        for bad in ["", "has space", "slash/", &"x".repeat(129)] {
            let err = ProvisioningDeviceClient::builder("0ne0001", key.clone())
                .registration_id(bad)
                .build()
                .unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}");
        }
        assert!(
            ProvisioningDeviceClient::builder("0ne0001", key.clone())
                .build()
                .is_err(),
            "a key needs a registration id"
        );
        assert!(
            ProvisioningDeviceClient::builder("0ne0001", key.clone())
                .registration_id("d")
                .token_ttl(Duration::ZERO)
                .build()
                .is_err(),
            "a token must live"
        );
        assert!(
            ProvisioningDeviceClient::builder("0ne/1", key)
                .registration_id("d")
                .build()
                .is_err()
        );
    }

    #[cfg(feature = "https")]
    #[test]
    fn ports_follow_the_transport() {
        assert_eq!(default_port(Transport::Https), 443);
        assert_eq!(default_port(Transport::Amqp), 5671);
        assert_eq!(default_port(Transport::MqttWebSockets), 443);
    }
}
