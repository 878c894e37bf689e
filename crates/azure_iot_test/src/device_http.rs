use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{HubEndpoint, device_token, http_client};

/// A device (or module) on the device HTTPS API, authenticated with a SAS token from its key.
pub struct DeviceHttp {
    pub http: reqwest::Client,
    base: String,
    token: String,
}

impl DeviceHttp {
    /// A client for `device` (or its `module`) signed with `key`, valid for an hour.
    pub fn new(hub: &HubEndpoint, device: &str, module: Option<&str>, key: &str) -> Self {
        Self {
            http: http_client(hub),
            base: format!("https://localhost:{}", hub.https_addr.port()),
            token: device_token(hub, device, module, key, Duration::from_secs(3600)),
        }
    }

    /// A request to `path` on the hub with the token and an `api-version`.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.http
            .request(
                method,
                format!("{}{path}{sep}api-version=2020-09-30", self.base),
            )
            .header("Authorization", &self.token)
    }

    /// `GET /devices/{device}/messages/devicebound`.
    pub async fn receive(&self, device: &str) -> reqwest::Response {
        self.request(
            Method::GET,
            &format!("/devices/{device}/messages/devicebound"),
        )
        .send()
        .await
        .expect("answered")
    }

    /// Step 1 of a file upload: the hub's answer (`correlationId`, `hostName`, ...).
    pub async fn start_upload(&self, device: &str, name: &str) -> Value {
        let r = self
            .request(Method::POST, &format!("/devices/{device}/files"))
            .json(&json!({ "blobName": name }))
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("JSON")
    }

    /// The blob URL every SDK builds from the hub's answer:
    /// `https://{hostName}/{containerName}/{blobName}{sasToken}`.
    pub fn blob_url(info: &Value) -> String {
        format!(
            "https://{}/{}/{}{}",
            info["hostName"].as_str().expect("hostName"),
            info["containerName"].as_str().expect("containerName"),
            info["blobName"].as_str().expect("blobName"),
            info["sasToken"].as_str().expect("sasToken"),
        )
    }

    /// Step 3: `POST /devices/{device}/files/notifications` with the correlation id in the
    /// body; returns the status.
    pub async fn notify_upload(&self, device: &str, info: &Value, success: bool) -> StatusCode {
        self.request(
            Method::POST,
            &format!("/devices/{device}/files/notifications"),
        )
        .json(&json!({
            "correlationId": info["correlationId"],
            "isSuccess": success,
            "statusCode": if success { 200 } else { 500 },
            "statusDescription": "done",
        }))
        .send()
        .await
        .expect("answered")
        .status()
    }

    /// All three steps with a single Put Blob of `content`; returns the hub's step-1 answer.
    pub async fn upload_file(
        &self,
        hub: &HubEndpoint,
        device: &str,
        name: &str,
        content: &[u8],
    ) -> Value {
        let info = self.start_upload(device, name).await;
        let r = http_client(hub)
            .put(Self::blob_url(&info))
            .header("x-ms-blob-type", "BlockBlob")
            .body(content.to_vec())
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(
            self.notify_upload(device, &info, true).await,
            StatusCode::NO_CONTENT
        );
        info
    }
}
