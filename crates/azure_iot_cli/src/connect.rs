//! Talking to a running emulator the way a service application does: the data directory's
//! `hub.json` says where it is and which keys to use, `ca.pem` what to trust. The same
//! connection serves the emulator's DPS routes that no SDK client knows (`dps ca`).

use std::path::Path;
use std::time::Duration;

use azure_iot_core::{ResourceUri, SasToken, ServiceConnectionString};
use azure_iot_protocol::tls::{client_config_builder, root_store};
use serde_json::Value;

/// An authenticated HTTPS connection to the emulator's service API.
pub(crate) struct HubConnection {
    http: reqwest::Client,
    base: String,
    cs: ServiceConnectionString,
}

/// A response: status, one header's value, JSON body (`Null` when empty).
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) latest: Option<u64>,
    pub(crate) etag: Option<String>,
    pub(crate) body: Value,
}

impl HubConnection {
    /// Reads `hub.json` and `ca.pem` in `dir`: the hub's service API as `iothubowner`.
    pub(crate) fn from_data_dir(dir: &Path) -> Result<Self, String> {
        let local = crate::target::read_local(dir)?;
        let cs = ServiceConnectionString::parse(&local.owner)
            .map_err(|e| format!("iothubowner connection string: {e}"))?;
        Self::new(cs, local.https, &local.ca_pem, None)
    }

    /// Reads `hub.json` and `ca.pem` in `dir`: the emulator's DPS as
    /// `provisioningserviceowner` (for its emulator-only routes, which the provisioning
    /// service client does not know). A DPS host name of its own is reached where the hub's
    /// host name resolves.
    pub(crate) fn dps_from_data_dir(dir: &Path) -> Result<Self, String> {
        let data = crate::target::DataDir::read(dir)?;
        let text = data.doc["dps"]["connection_string"]
            .as_str()
            .ok_or_else(|| {
                format!(
                    "{} has no dps.connection_string (an emulator without DPS?)",
                    data.file.display()
                )
            })?;
        let cs = ServiceConnectionString::parse(text)
            .map_err(|e| format!("DPS connection string: {e}"))?;
        let port = data.port("https")?;
        let address = crate::dps::local_address(&data, port);
        Self::new(cs, port, &data.ca_pem, address)
    }

    /// A connection to `cs`'s host on `port`, trusting `ca_pem`; `address`: where to connect
    /// when the host name need not resolve.
    fn new(
        cs: ServiceConnectionString,
        port: u16,
        ca_pem: &str,
        address: Option<std::net::IpAddr>,
    ) -> Result<Self, String> {
        let roots = root_store(Some(ca_pem)).map_err(|e| format!("ca.pem: {e}"))?;
        let tls = client_config_builder(roots)
            .map_err(|e| e.to_string())?
            .with_no_client_auth();
        let host = cs.host_name().to_owned();
        let mut http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(90));
        if let Some(ip) = address {
            http = http.resolve(&host, std::net::SocketAddr::new(ip, port));
        }
        let http = http.build().map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            base: format!("https://{host}:{port}"),
            cs,
        })
    }

    /// Sends a request with a fresh SAS token.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> Result<Reply, String> {
        self.send_json(method, path_and_query, None).await
    }

    /// A request with a fresh SAS token, not sent yet.
    fn request(&self, method: reqwest::Method, path_and_query: &str) -> reqwest::RequestBuilder {
        let token = SasToken::generate_with_ttl(
            &ResourceUri::hub(self.cs.host_name()),
            self.cs.key(),
            Some(self.cs.key_name()),
            Duration::from_secs(3600),
        );
        let separator = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{path_and_query}{separator}api-version=2021-04-12",
            self.base
        );
        self.http
            .request(method, url)
            .header("Authorization", token.secret())
    }

    /// Sends a GET and hands back the response unread (a download streams its body); an
    /// error status is an error with the emulator's message.
    pub(crate) async fn get_stream(&self, path: &str) -> Result<reqwest::Response, String> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| format!("cannot reach the emulator at {}: {e}", self.base))?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let message = body["Message"].as_str().unwrap_or("(no message)");
            return Err(format!("the emulator answered {status}: {message}"));
        }
        Ok(response)
    }

    /// Sends a request with a JSON body and a fresh SAS token.
    pub(crate) async fn send_json(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<Reply, String> {
        let mut request = self.request(method, path_and_query);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json; charset=utf-8")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the emulator at {}: {e}", self.base))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let latest = header("azure-iot-latest-sequence").and_then(|v| v.parse().ok());
        let etag = header("etag").map(|e| e.trim_matches('"').to_owned());
        let text = response.text().await.map_err(|e| e.to_string())?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|e| format!("the emulator answered something that is not JSON: {e}"))?
        };
        if status >= 400 {
            let message = body["Message"]
                .as_str()
                .or_else(|| body["message"].as_str())
                .unwrap_or("(no message)");
            return Err(format!("the emulator answered {status}: {message}"));
        }
        Ok(Reply {
            status,
            latest,
            etag,
            body,
        })
    }
}
