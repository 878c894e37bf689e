//! IoT Hub jobs v2 bodies (`/jobs/v2/...`): what a service schedules (a [`JobRequest`]), what the
//! hub answers about a job (a [`JobResponse`]) and the per-device rows of `SELECT * FROM
//! devices.jobs` (a [`DeviceJob`]), shared by the service client and the emulator.
//!
//! Spellings follow the IoT Hub REST specification (`2021-04-12`) and the official service SDKs:
//!
//! * a job's status `cancelled` has two l, a device job's `canceled` one ([`JobStatus`],
//!   [`DeviceJobStatus`]);
//! * job types are written `scheduleUpdateTwin` / `scheduleDeviceMethod` but read in any case
//!   and with the older spellings (`scheduleTwinUpdate`, `scheduleDirectRequest`), because the
//!   C# SDK sends enum names (`ScheduleUpdateTwin`) and old documentation used other names;
//! * timestamps are written in the hub's format (UTC, seven fractional digits) and read in any
//!   ISO 8601 form the SDKs send.
//!
//! Values this module does not know (a job type such as `backup`, a future status) are kept as
//! `Other(text)`, so reading a real hub's answer never fails on them.

use std::fmt;

use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
use azure_iot_core::method::{DirectMethodRequest, DirectMethodResponse};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

/// The longest job id the hub accepts.
pub const MAX_JOB_ID_LEN: usize = 64;

/// The `maxExecutionTimeInSeconds` the Node SDK sends when the caller gives none (one hour);
/// also what the emulator assumes when a request has none.
pub const DEFAULT_MAX_EXECUTION_TIME_SECS: u64 = 3600;

/// Why a job id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobIdError {
    /// The id is empty.
    #[error("the job id is empty")]
    Empty,
    /// The id is longer than [`MAX_JOB_ID_LEN`] characters.
    #[error("the job id is {0} characters long; at most {MAX_JOB_ID_LEN} are allowed")]
    TooLong(usize),
    /// The id has a character other than an ASCII letter, digit or `-`.
    #[error("the job id contains {0:?}; only ASCII letters, digits and '-' are allowed")]
    BadCharacter(char),
}

/// Checks a job id against the hub's rule: 1 to 64 ASCII letters, digits and dashes.
///
/// # Errors
/// The first rule the id breaks.
pub fn validate_job_id(id: &str) -> Result<(), JobIdError> {
    if id.is_empty() {
        return Err(JobIdError::Empty);
    }
    let len = id.chars().count();
    if len > MAX_JOB_ID_LEN {
        return Err(JobIdError::TooLong(len));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        Some(c) => Err(JobIdError::BadCharacter(c)),
        None => Ok(()),
    }
}

/// Defines a string enum written in one spelling and read case-insensitively, with aliases and an
/// `Other` catch-all.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know, as received.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(text) => text,
                }
            }

            /// Reads a value in any case, accepting the known aliases; anything else is
            /// `Other`.
            pub fn parse(text: &str) -> Self {
                $(
                    if text.eq_ignore_ascii_case($text) $(|| text.eq_ignore_ascii_case($alias))* {
                        return Self::$variant;
                    }
                )+
                Self::Other(text.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Ok(Self::parse(&text))
            }
        }
    };
}

wire_enum! {
    /// What a job does.
    JobType {
        /// Updates the tags and desired properties of the selected devices' twins.
        ScheduleUpdateTwin = "scheduleUpdateTwin" | "scheduleTwinUpdate" | "scheduledUpdateTwin",
        /// Invokes a direct method on the selected devices.
        ScheduleDeviceMethod = "scheduleDeviceMethod" | "scheduleDirectRequest" | "scheduledDeviceMethod",
        /// An import/export job exporting the registry.
        Export = "export",
        /// An import/export job importing the registry.
        Import = "import",
        /// The hub does not say.
        Unknown = "unknown",
    }
}

wire_enum! {
    /// A job's status (note `cancelled`, two l).
    JobStatus {
        /// Waiting for its start time.
        Scheduled = "scheduled",
        /// Accepted, not started.
        Queued = "queued",
        /// Accepted, not started (import/export).
        Enqueued = "enqueued",
        /// Working through its devices.
        Running = "running",
        /// Every device processed, or the maximum execution time reached.
        Completed = "completed",
        /// The job itself failed.
        Failed = "failed",
        /// Cancelled by the service.
        Cancelled = "cancelled",
        /// The hub does not say.
        Unknown = "unknown",
    }
}

impl JobStatus {
    /// Whether the job has ended (completed, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

wire_enum! {
    /// One device's part in a job (note `canceled`, one l).
    DeviceJobStatus {
        /// Not processed yet.
        Pending = "pending",
        /// Waiting for the job's start.
        Scheduled = "scheduled",
        /// Being processed.
        Running = "running",
        /// Done.
        Completed = "completed",
        /// Not done: the device was offline, did not answer, or the job ran out of time.
        Failed = "failed",
        /// The job was cancelled before this device was done.
        Canceled = "canceled",
    }
}

/// Serde for optional timestamps in the hub's format (see the module documentation).
mod timestamp {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => serializer.serialize_str(&format_timestamp(*t)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => parse_timestamp(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a timestamp"))),
        }
    }
}

/// A job to schedule (`PUT /jobs/v2/{jobId}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    /// The job id (also in the path).
    #[serde(default)]
    pub job_id: String,
    /// What the job does.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// The method to invoke (`scheduleDeviceMethod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_method: Option<DirectMethodRequest>,
    /// The twin patch to apply: `tags` and/or `properties.desired` (`scheduleUpdateTwin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_twin: Option<Value>,
    /// The devices: a query condition, the part after `WHERE` (`deviceId IN ['a','b']`).
    #[serde(default)]
    pub query_condition: String,
    /// When the job starts; now when absent.
    #[serde(default, with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub start_time: Option<OffsetDateTime>,
    /// How long the job may run, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_execution_time_in_seconds: Option<u64>,
}

impl JobRequest {
    /// A twin-update job over the devices `query_condition` selects, starting now.
    pub fn update_twin(
        job_id: impl Into<String>,
        query_condition: impl Into<String>,
        patch: Value,
    ) -> Self {
        Self {
            job_id: job_id.into(),
            job_type: JobType::ScheduleUpdateTwin,
            cloud_to_device_method: None,
            update_twin: Some(patch),
            query_condition: query_condition.into(),
            start_time: None,
            max_execution_time_in_seconds: None,
        }
    }

    /// A direct-method job over the devices `query_condition` selects, starting now.
    pub fn device_method(
        job_id: impl Into<String>,
        query_condition: impl Into<String>,
        method: DirectMethodRequest,
    ) -> Self {
        Self {
            job_id: job_id.into(),
            job_type: JobType::ScheduleDeviceMethod,
            cloud_to_device_method: Some(method),
            update_twin: None,
            query_condition: query_condition.into(),
            start_time: None,
            max_execution_time_in_seconds: None,
        }
    }

    /// Sets the start time.
    pub fn start_at(mut self, start: OffsetDateTime) -> Self {
        self.start_time = Some(start);
        self
    }

    /// Sets the maximum execution time in seconds.
    pub fn max_execution_time(mut self, seconds: u64) -> Self {
        self.max_execution_time_in_seconds = Some(seconds);
        self
    }
}

/// Counts of a job's device jobs by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceJobStatistics {
    /// Devices the job targets.
    pub device_count: u64,
    /// Devices whose part failed.
    pub failed_count: u64,
    /// Devices whose part completed.
    pub succeeded_count: u64,
    /// Devices being processed now.
    pub running_count: u64,
    /// Devices not processed yet.
    pub pending_count: u64,
}

/// A job as the hub reports it (`GET /jobs/v2/{jobId}`, the answer of create and cancel, the
/// items of `GET /jobs/v2/query`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResponse {
    /// The job id.
    pub job_id: String,
    /// The device selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_condition: Option<String>,
    /// When the hub accepted the job.
    #[serde(default, with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub created_time: Option<OffsetDateTime>,
    /// When the job starts or started.
    #[serde(default, with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub start_time: Option<OffsetDateTime>,
    /// When the job ended (absent while it has not).
    #[serde(default, with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub end_time: Option<OffsetDateTime>,
    /// How long the job may run, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_execution_time_in_seconds: Option<u64>,
    /// What the job does.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// Where the job is in its life.
    pub status: JobStatus,
    /// The method invoked (method jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_method: Option<DirectMethodRequest>,
    /// The twin patch applied (twin jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_twin: Option<Value>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// A status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// Device job counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_job_statistics: Option<DeviceJobStatistics>,
}

/// What a device answered a method job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJobOutcome {
    /// The device's status and payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_method_response: Option<DirectMethodResponse>,
}

/// Why a device's part in a job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJobError {
    /// The hub's error code (`DeviceNotOnline`, `GatewayTimeout`, ...).
    pub code: String,
    /// What went wrong.
    #[serde(default)]
    pub description: String,
}

impl DeviceJobError {
    /// An error with `code` and `description`.
    pub fn new(code: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            description: description.into(),
        }
    }
}

/// One device's part in a job: a row of `SELECT * FROM devices.jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJob {
    /// The device.
    pub device_id: String,
    /// The job.
    pub job_id: String,
    /// What the job does.
    pub job_type: JobType,
    /// This device's progress.
    pub status: DeviceJobStatus,
    /// When this device's part started.
    #[serde(default, with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub start_time_utc: Option<OffsetDateTime>,
    /// When this device's part ended.
    #[serde(default, with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub end_time_utc: Option<OffsetDateTime>,
    /// When the row was created.
    #[serde(default, with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<OffsetDateTime>,
    /// When the row last changed.
    #[serde(default, with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<OffsetDateTime>,
    /// The device's answer (method jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<DeviceJobOutcome>,
    /// Why this device's part failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeviceJobError>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enums_read_any_case_and_aliases_and_write_the_spec_spelling() {
        for text in [
            "scheduleUpdateTwin",
            "ScheduleUpdateTwin",
            "scheduleTwinUpdate",
        ] {
            assert_eq!(JobType::parse(text), JobType::ScheduleUpdateTwin);
        }
        assert_eq!(
            JobType::parse("ScheduleDeviceMethod").as_str(),
            "scheduleDeviceMethod"
        );
        assert_eq!(JobType::parse("backup"), JobType::Other("backup".into()));
        assert_eq!(JobStatus::Cancelled.as_str(), "cancelled");
        assert_eq!(DeviceJobStatus::Canceled.as_str(), "canceled");
        assert_eq!(
            serde_json::to_value(JobStatus::parse("Running")).unwrap(),
            json!("running")
        );
    }

    #[test]
    fn job_ids_follow_the_hub_rule() {
        assert_eq!(validate_job_id("job-1"), Ok(()));
        assert_eq!(validate_job_id(""), Err(JobIdError::Empty));
        assert_eq!(
            validate_job_id(&"a".repeat(65)),
            Err(JobIdError::TooLong(65))
        );
        assert_eq!(validate_job_id("a_b"), Err(JobIdError::BadCharacter('_')));
        assert_eq!(validate_job_id(&"a".repeat(64)), Ok(()));
    }

    #[test]
    fn requests_round_trip_in_the_sdk_shapes() {
        // As the Node SDK sends a method job.
        let node = json!({
            "jobId": "j1", "type": "scheduleDeviceMethod",
            "cloudToDeviceMethod": {"methodName": "reboot", "payload": null, "responseTimeoutInSeconds": 15},
            "queryCondition": "deviceId IN ['d1']",
            "startTime": "2030-01-01T00:00:00.000Z", "maxExecutionTimeInSeconds": 3600
        });
        let request: JobRequest = serde_json::from_value(node).unwrap();
        assert_eq!(request.job_type, JobType::ScheduleDeviceMethod);
        assert_eq!(
            request.cloud_to_device_method.as_ref().unwrap().method_name,
            "reboot"
        );
        assert_eq!(
            request.start_time.map(format_timestamp).as_deref(),
            Some("2030-01-01T00:00:00.0000000Z")
        );
        let back = serde_json::to_value(&request).unwrap();
        assert_eq!(back["startTime"], json!("2030-01-01T00:00:00.0000000Z"));
        // As Python sends a twin job (offset form, no start time key absent handled too).
        let python = json!({"jobId": "j2", "type": "scheduleUpdateTwin",
            "updateTwin": {"tags": {"a": 1}}, "queryCondition": "tags.a = 0",
            "startTime": "2030-01-01T00:00:00+00:00"});
        let request: JobRequest = serde_json::from_value(python).unwrap();
        assert_eq!(request.update_twin, Some(json!({"tags": {"a": 1}})));
        assert!(
            serde_json::from_value::<JobRequest>(
                json!({"jobId": "j", "type": "x", "startTime": "soon"})
            )
            .is_err()
        );
    }

    #[test]
    fn device_jobs_skip_what_they_do_not_have() {
        let row = DeviceJob {
            device_id: "d".into(),
            job_id: "j".into(),
            job_type: JobType::ScheduleDeviceMethod,
            status: DeviceJobStatus::Failed,
            start_time_utc: None,
            end_time_utc: None,
            created_date_time_utc: None,
            last_updated_date_time_utc: None,
            outcome: None,
            error: Some(DeviceJobError::new("DeviceNotOnline", "offline")),
        };
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            json!({"deviceId": "d", "jobId": "j", "jobType": "scheduleDeviceMethod",
                   "status": "failed", "error": {"code": "DeviceNotOnline", "description": "offline"}})
        );
    }
}
