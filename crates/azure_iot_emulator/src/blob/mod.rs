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

mod http;
mod sas;
mod store;

use std::sync::Arc;

pub(crate) use http::router;
pub(crate) use sas::{Permission, Signer};
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
}

impl BlobEndpoint {
    /// The endpoint for `host`, signing with a key derived from the hub's `owner_key`.
    pub(crate) fn new(
        files: BlobFiles,
        owner_key: &azure_iot_core::sas::SharedAccessKey,
        host: String,
    ) -> Arc<Self> {
        let key = owner_key.sign(b"azure-iot-emulator blob account key");
        Arc::new(Self {
            files,
            signer: Signer::new(ACCOUNT, &key),
            host,
        })
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
