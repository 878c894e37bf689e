use std::time::Duration;

use azure_iot_core::connection_string::ServiceConnectionString;
use azure_iot_core::sas::{ResourceUri, SasToken};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::HubEndpoint;

/// A response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The IoT Hub error name from `Message` (`ErrorCode:{Name};...`).
    pub fn error_name(&self) -> &str {
        self.body["Message"]
            .as_str()
            .and_then(|m| m.strip_prefix("ErrorCode:"))
            .and_then(|m| m.split(';').next())
            .unwrap_or_default()
    }
}

/// A service-side REST client authenticated with one policy.
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    cs: ServiceConnectionString,
    token: Option<String>,
}

impl RestClient {
    /// A client for `hub` using `policy`'s connection string.
    pub fn new(hub: &HubEndpoint, policy: &str) -> Self {
        let cs = ServiceConnectionString::parse(hub.connection_string(policy))
            .expect("valid connection string");
        Self {
            http: http_client(hub),
            base: format!("https://localhost:{}", hub.https_addr.port()),
            cs,
            token: None,
        }
    }

    /// The same client, but sending `token` verbatim as `Authorization`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A fresh token for this client's policy.
    pub fn token(&self) -> String {
        SasToken::generate_with_ttl(
            &ResourceUri::hub(self.cs.host_name()),
            self.cs.key(),
            Some(self.cs.key_name()),
            Duration::from_secs(3600),
        )
        .secret()
        .to_owned()
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{separator}api-version=2021-04-12", self.base);
        let mut request = self.http.request(method, url).header(
            "Authorization",
            self.token.clone().unwrap_or_else(|| self.token()),
        );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json; charset=utf-8")
                .body(body.to_string());
        }
        self.send(request).await
    }

    /// Starts a direct method call on `target` (`/twins/{d}` or `/twins/{d}/modules/{m}`)
    /// in the background, with a 10 s response timeout: the device answers while the call
    /// waits. Await the handle for the hub's reply.
    pub fn invoke_method(
        &self,
        target: &str,
        method: &str,
        payload: Value,
    ) -> tokio::task::JoinHandle<Reply> {
        let client = self.clone();
        let path = format!("{target}/methods");
        let body = serde_json::json!({
            "methodName": method,
            "payload": payload,
            "responseTimeoutInSeconds": 10,
        });
        tokio::spawn(async move { client.request(Method::POST, &path, Some(body), &[]).await })
    }

    pub async fn raw_body(&self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        let url = format!("{}{path}?api-version=2021-04-12", self.base);
        let request = self
            .http
            .request(method, url)
            .header("Authorization", self.token())
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body);
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body is readable");
        if !text.is_empty() {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                content_type.starts_with("application/json"),
                "JSON bodies must say so (the Node SDK only parses those): {content_type}"
            );
        }
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, &[]).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.request(Method::PUT, path, Some(body), &[]).await
    }

    /// Registers a SAS device with generated keys and returns its primary key.
    pub async fn register_device(&self, device_id: &str) -> String {
        let r = self
            .put(&format!("/devices/{device_id}"), serde_json::json!({}))
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "registering {device_id}: {:?}",
            r.body
        );
        r.body["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .expect("a generated key")
            .to_owned()
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, None, &[]).await
    }
}

/// An HTTPS client that trusts the hub's CA and reaches `localhost` at its address.
pub fn http_client(hub: &HubEndpoint) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(hub.tls_config())
        .resolve("localhost", hub.https_addr)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client builds")
}
