//! Import/export devices jobs (`POST /jobs/create`, `GET /jobs`, `GET/DELETE /jobs/{id}`):
//! the `JobProperties` model, shared by the service client and the emulator.
//!
//! An export writes one `ExportImportDevice` JSON object per line (devices, then their
//! modules) into `outputBlobName` (default [`DEFAULT_DEVICES_BLOB`]) of the output container;
//! an import reads such lines from `inputBlobName` of the input container, each with an
//! `importMode` (default `createOrUpdate`), and writes the lines it could not apply into
//! [`IMPORT_ERRORS_BLOB`] of the output container.

use serde::{Deserialize, Serialize};

/// The devices blob when the job names none.
pub const DEFAULT_DEVICES_BLOB: &str = "devices.txt";

/// The configurations blob when the job names none (`includeConfigurations`).
pub const DEFAULT_CONFIGURATIONS_BLOB: &str = "configurations.txt";

/// Where an import writes the lines it could not apply.
pub const IMPORT_ERRORS_BLOB: &str = "importErrors.log";

/// An import/export job (`JobProperties`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportImportJob {
    /// The job id (set by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// `export` or `import`.
    #[serde(rename = "type")]
    pub job_type: String,
    /// `enqueued`, `running`, `completed`, `failed` or `cancelled` (set by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Percent done (set by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u32>,
    /// When the job started (set by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_utc: Option<String>,
    /// When the job ended (set by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time_utc: Option<String>,
    /// Import: the container to read from, a URI with a SAS granting read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_blob_container_uri: Option<String>,
    /// Export: where to write; import: where to write `importErrors.log`. A URI with a SAS
    /// granting write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_blob_container_uri: Option<String>,
    /// Import: the blob to read (default `devices.txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_blob_name: Option<String>,
    /// Export: the blob to write (default `devices.txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_blob_name: Option<String>,
    /// Export: leave the symmetric keys out.
    #[serde(default)]
    pub exclude_keys_in_export: bool,
    /// Also export / import the configurations.
    #[serde(default)]
    pub include_configurations: bool,
    /// The configurations blob (default `configurations.txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configurations_blob_name: Option<String>,
    /// `keyBased` (the SAS in the URIs) or `identityBased`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_authentication_type: Option<String>,
    /// Why the job failed (set by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

impl ExportImportJob {
    /// An export of every identity into the container at `output_container_uri`.
    pub fn export(output_container_uri: impl Into<String>, exclude_keys: bool) -> Self {
        Self {
            job_type: "export".into(),
            output_blob_container_uri: Some(output_container_uri.into()),
            exclude_keys_in_export: exclude_keys,
            ..Self::default()
        }
    }

    /// An import from `input_container_uri`, errors written to `output_container_uri`.
    pub fn import(
        input_container_uri: impl Into<String>,
        output_container_uri: impl Into<String>,
    ) -> Self {
        Self {
            job_type: "import".into(),
            input_blob_container_uri: Some(input_container_uri.into()),
            output_blob_container_uri: Some(output_container_uri.into()),
            ..Self::default()
        }
    }

    /// Whether the job has ended (`completed`, `failed` or `cancelled`).
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("completed" | "failed" | "cancelled")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wire_shape_round_trips() {
        let job = ExportImportJob::export("https://h/c?sig=x", true);
        let text = serde_json::to_value(&job).unwrap();
        assert_eq!(
            text,
            json!({"type": "export", "outputBlobContainerUri": "https://h/c?sig=x",
                   "excludeKeysInExport": true, "includeConfigurations": false})
        );
        let back: ExportImportJob = serde_json::from_value(text).unwrap();
        assert_eq!(back, job);
        assert!(!job.is_finished());
    }
}
