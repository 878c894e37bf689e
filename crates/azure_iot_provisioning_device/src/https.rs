//! DPS's HTTPS device API (`dps.md` §4): `PUT /{idScope}/registrations/{id}/register` and
//! `GET /{idScope}/registrations/{id}/operations/{operationId}`, the SAS token in
//! `Authorization` (none for X.509: the certificate is presented in TLS), `retry-after` read
//! from the response headers (case-insensitive, so both spellings).

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
        let authorization = token
            .map(|t| {
                let mut value = HeaderValue::from_str(&t).map_err(|_| {
                    Error::InvalidArgument("the SAS token is not a valid header value".to_owned())
                })?;
                value.set_sensitive(true);
                Ok::<_, Error>(value)
            })
            .transpose()?;
        Ok(Self {
            client,
            base: format!(
                "https://{}:{port}/{id_scope}/registrations/{registration_id}",
                dial.host()
            ),
            authorization,
        })
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

impl Exchange for HttpsExchange {
    async fn register(&mut self, body: &[u8]) -> Result<Reply> {
        let url = format!("{}/register?api-version={API_VERSION}", self.base);
        self.send(self.client.put(url).body(body.to_vec())).await
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
