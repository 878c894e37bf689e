//! The built-in blob endpoint file uploads go to: a small Azure Blob REST subset on its own
//! TLS port (ADR 12).
//!
//! ```text
//!  device SDK ──POST /devices/{id}/files──▶ hub (HTTPS port): correlation id, hostName
//!      │                                    "{host}:{blob port}", container, blob, SAS
//!      └──PUT https://{hostName}/{container}/{deviceId}/{name}{sas}──▶ this endpoint
//!           Put Blob · Put Block · Put Block List · Get Blob · Get Blob Properties · Delete Blob
//!           service SAS checked (signature, permissions, start, expiry) ─▶ `store` (disk)
//! ```
//!
//! One account ([`ACCOUNT`]); file uploads go to [`CONTAINER`], import/export jobs to any
//! container a SAS was minted for (`POST /$emulator/blob/containers/{name}/sas`). The SAS key is derived from
//! the hub's `iothubowner` key, so SAS URIs stay valid across restarts of the same data
//! directory and no new secret file is needed. Blob data lives under the data directory
//! (`blob-store/`), or in a temporary directory removed at shutdown.
//!
//! With a storage account configured (`storage.rs`, ADR 25), file uploads go there instead:
//! the hub signs the device's SAS with that account's key and reads the blob's properties
//! from it for the notification; this endpoint still serves import/export jobs.

mod http;
mod sas;
mod storage;
mod store;

use std::sync::Arc;

pub(crate) use http::router;
pub(crate) use sas::{Permission, Signer};
pub use storage::{DEFAULT_STORAGE_CONTAINER, StorageAccount};
pub(crate) use storage::{ExternalStorage, UploadGrant};
pub(crate) use store::{BlobError, BlobFiles, BlobProperties, file_body};

/// The storage account name the endpoint signs for.
pub(crate) const ACCOUNT: &str = "iothubemulator";
/// The container file uploads go to.
pub(crate) const CONTAINER: &str = "fileuploads";

/// Whether `name` is a valid container name: 3–63 lowercase letters, digits and hyphens,
/// starting and ending with a letter or digit, no two hyphens in a row (Azure Storage's rule).
pub(crate) fn valid_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// The blob endpoint: its files, its SAS signer and the host name devices reach it by.
#[derive(Debug)]
pub(crate) struct BlobEndpoint {
    /// The blobs on disk.
    pub(crate) files: BlobFiles,
    /// Signs and checks SAS tokens.
    pub(crate) signer: Signer,
    /// `{hostname}:{port}`: what `POST /devices/{id}/files` answers as `hostName`, so that
    /// every SDK's `https://{hostName}/{container}/{blob}{sas}` reaches this port.
    pub(crate) host: String,
    /// The storage account file uploads go to instead of this endpoint, if one is configured.
    pub(crate) external: Option<ExternalStorage>,
}

impl BlobEndpoint {
    /// The endpoint for `host`, signing with a key derived from the hub's `owner_key`.
    pub(crate) fn new(
        files: BlobFiles,
        owner_key: &azure_iot_core::sas::SharedAccessKey,
        host: String,
        external: Option<ExternalStorage>,
    ) -> Arc<Self> {
        let key = owner_key.sign(b"azure-iot-emulator blob account key");
        Arc::new(Self {
            files,
            signer: Signer::new(ACCOUNT, &key),
            host,
            external,
        })
    }

    /// Where a device uploads `blob` (`{deviceId}/{name}`) and the SAS it does so with, valid
    /// until `expiry`: the storage account when one is configured (create + write), else this
    /// endpoint (read + write, as before ADR 25).
    pub(crate) fn upload_grant(&self, blob: &str, expiry: time::OffsetDateTime) -> UploadGrant {
        match &self.external {
            Some(storage) => storage.grant(blob, expiry),
            None => UploadGrant {
                host: self.host.clone(),
                container: CONTAINER.to_owned(),
                sas: self.signer.sign_blob(CONTAINER, blob, "rw", expiry),
            },
        }
    }

    /// The URI (no SAS) of an uploaded file, where uploads go.
    pub(crate) fn upload_uri(&self, blob: &str) -> String {
        match &self.external {
            Some(storage) => storage.blob_uri(blob),
            None => self.blob_uri(blob),
        }
    }

    /// The size and time of an uploaded file, read where uploads go; `None` when the blob is
    /// not there (or, for a storage account, cannot be read: logged).
    pub(crate) async fn uploaded(&self, blob: &str) -> Option<(u64, time::OffsetDateTime)> {
        match &self.external {
            Some(storage) => match storage.properties(blob).await {
                Ok(p) => Some((p.size, p.last_modified)),
                Err(e) => {
                    tracing::warn!(blob, account = storage.account_name(), error = %e, "Get Blob Properties of an uploaded file failed");
                    None
                }
            },
            None => self
                .files
                .properties(CONTAINER, blob)
                .await
                .ok()
                .map(|p| (p.size, p.last_modified)),
        }
    }

    /// A container URI with a service SAS (`sr=c`) granting `permissions` until `expiry`: what
    /// import/export jobs take as `inputBlobContainerUri` / `outputBlobContainerUri`.
    pub(crate) fn container_sas_uri(
        &self,
        container: &str,
        permissions: &str,
        expiry: time::OffsetDateTime,
    ) -> String {
        format!(
            "https://{}/{container}{}",
            self.host,
            self.signer.sign_container(container, permissions, expiry)
        )
    }

    /// The blob's URI without a SAS (file-upload notifications carry it): each path segment
    /// percent-encoded, so that a name with spaces, `#` or `?` is still one URI.
    pub(crate) fn blob_uri(&self, blob: &str) -> String {
        format!("https://{}/{CONTAINER}/{}", self.host, encoded_path(blob))
    }
}

/// A blob name as a URI path: each `/`-separated segment percent-encoded (RFC 3986's
/// unreserved characters kept).
fn encoded_path(blob: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let path: Vec<String> = blob
        .split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    path.join("/")
}

#[cfg(test)]
mod uri_tests {
    #[test]
    fn a_blob_name_is_one_uri_path() {
        assert_eq!(
            super::encoded_path("dev1/a b#1?.txt"),
            "dev1/a%20b%231%3F.txt"
        );
        assert_eq!(super::encoded_path("dev1/logs/x.bin"), "dev1/logs/x.bin");
    }
}
