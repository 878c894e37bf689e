//! DPS's HTTPS device API (`dps.md` §4): `PUT /{idScope}/registrations/{id}/register` and
//! `GET /{idScope}/registrations/{id}/operations/{operationId}`, the SAS token in
//! `Authorization` (none for X.509: the certificate is presented in TLS), `retry-after` read
//! from the response headers (case-insensitive, so both spellings).
//!
//! TPM attestation (`dps.md` §7.5): the first register goes without `Authorization`; DPS
//! answers 401 with `{"authenticationKey": <activation blob>, "keyName": "registration"}`.
//! The blob is activated in the TPM, a token signed there, and the register sent again with
//! it (once: a second 401 is a refusal). Polls carry the same token.

use std::time::Duration;

use azure_iot_device::net::{Dial, http_client};
use azure_iot_protocol::dps::API_VERSION;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use crate::error::{Error, Result};
use crate::flow::{Exchange, Reply, parse_retry_after};

/// The longest body read from a DPS answer; a larger one is a protocol error.
const MAX_BODY: usize = 64 * 1024;

/// Requests to one registration's HTTPS resources.
pub(crate) struct HttpsExchange {
    client: reqwest::Client,
    /// `https://{host}:{port}/{idScope}/registrations/{registrationId}`.
    base: String,
    authorization: Option<HeaderValue>,
    /// The TPM that answers a 401 challenge, until it has answered one.
    #[cfg(feature = "tpm")]
    challenge: Option<TpmChallenge>,
}

/// What answers DPS's TPM challenge: the TPM and the token it signs.
#[cfg(feature = "tpm")]
pub(crate) struct TpmChallenge {
    /// The device's TPM.
    pub(crate) tpm: crate::tpm::TpmAttestation,
    /// `{idScope}/registrations/{registrationId}`.
    pub(crate) resource: azure_iot_core::sas::ResourceUri,
    /// How long the signed token lives.
    pub(crate) ttl: Duration,
}

impl HttpsExchange {
    /// A client on `dial`'s TLS settings; `token` goes into every request.
    pub(crate) fn new(
        dial: &Dial,
        port: u16,
        id_scope: &str,
        registration_id: &str,
        token: Option<String>,
        request_timeout: Duration,
    ) -> Result<Self> {
        let client = http_client(dial, request_timeout)?;
        let authorization = token.as_deref().map(header_value).transpose()?;
        Ok(Self {
            client,
            base: format!(
                "https://{}:{port}/{id_scope}/registrations/{registration_id}",
                dial.host()
            ),
            authorization,
            #[cfg(feature = "tpm")]
            challenge: None,
        })
    }

    /// Answers DPS's 401 TPM challenge with `challenge`.
    #[cfg(feature = "tpm")]
    pub(crate) fn with_tpm_challenge(mut self, challenge: TpmChallenge) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// When `reply` is DPS's TPM challenge and a TPM can answer it: activates the blob, signs
    /// a token and keeps it for the following requests. `true` when the request should be
    /// sent again.
    #[cfg(feature = "tpm")]
    async fn answer_challenge(&mut self, reply: &Reply) -> Result<bool> {
        if reply.status != 401 || self.challenge.is_none() {
            return Ok(false);
        }
        let Some(key) = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("authenticationKey")?.as_str().map(str::to_owned))
        else {
            return Ok(false);
        };
        let Some(challenge) = self.challenge.take() else {
            return Ok(false);
        };
        challenge.tpm.activate(&key).await?;
        let token = challenge
            .tpm
            .token(
                challenge.resource,
                Some(azure_iot_protocol::dps::DEVICE_KEY_NAME),
                challenge.ttl,
            )
            .await?;
        self.authorization = Some(header_value(&token)?);
        Ok(true)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply> {
        let mut request = request
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json; charset=utf-8");
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| Error::transport("the request to DPS failed", e.without_url()))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Error::transport("reading DPS's answer failed", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Error::Protocol(format!(
                    "DPS's answer is larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }
}

/// A SAS token as a sensitive header value.
fn header_value(token: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(token).map_err(|_| {
        Error::InvalidArgument("the SAS token is not a valid header value".to_owned())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl Exchange for HttpsExchange {
    async fn register(&mut self, body: &[u8]) -> Result<Reply> {
        let url = format!("{}/register?api-version={API_VERSION}", self.base);
        let reply = self
            .send(self.client.put(url.clone()).body(body.to_vec()))
            .await?;
        #[cfg(feature = "tpm")]
        if self.answer_challenge(&reply).await? {
            return self.send(self.client.put(url).body(body.to_vec())).await;
        }
        Ok(reply)
    }

    async fn poll(&mut self, operation_id: &str) -> Result<Reply> {
        if !operation_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(Error::Protocol(
                "DPS gave an operation id that cannot go into a URL path".to_owned(),
            ));
        }
        let url = format!(
            "{}/operations/{operation_id}?api-version={API_VERSION}",
            self.base
        );
        self.send(self.client.get(url)).await
    }
}
