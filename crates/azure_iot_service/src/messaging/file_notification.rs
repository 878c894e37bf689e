//! File-upload notifications: what the hub reports when a device completes an upload
//! (`POST /devices/{id}/files/notifications` with `isSuccess: true`) and the hub's file
//! notifications are on. One notification per AMQP message (content type
//! `application/vnd.microsoft.iothub.filenotification.json`), taken one at a time.

use azure_iot_protocol::amqp::Address;
use serde::Deserialize;

use super::inbox::{InboxBatch, InboxItem, InboxReceiver};

/// One uploaded file, as the hub reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FileNotification {
    /// The device that uploaded it.
    pub device_id: String,
    /// The blob's URI (without a SAS).
    pub blob_uri: String,
    /// The blob's name: `{deviceId}/{name the device asked for}`.
    pub blob_name: String,
    /// When the blob was last written (ISO 8601).
    #[serde(default)]
    pub last_updated_time: String,
    /// The blob's size in bytes.
    #[serde(default)]
    pub blob_size_in_bytes: u64,
    /// When the hub queued the notification (ISO 8601).
    #[serde(default)]
    pub enqueued_time_utc: String,
}

impl InboxItem for FileNotification {
    const ADDRESS: Address = Address::FileNotifications;
    const WHAT: &'static str = "file notification";
    /// One at a time: a receiver never holds notifications it is not working on (the Java
    /// SDK's fix for completing several with one settlement).
    const CREDIT: u32 = 1;

    fn decode(body: &[u8]) -> std::result::Result<Vec<Self>, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(FileNotification),
            Many(Vec<FileNotification>),
        }
        Ok(match serde_json::from_slice(body)? {
            OneOrMany::One(n) => vec![n],
            OneOrMany::Many(all) => all,
        })
    }
}

/// One file notification (a batch of one). Settle it with
/// [`FileNotificationReceiver::complete`] or [`FileNotificationReceiver::abandon`].
pub type FileNotificationBatch = InboxBatch<FileNotification>;

/// Receives file-upload notifications, from
/// [`Messaging::file_notifications`](crate::Messaging::file_notifications).
pub type FileNotificationReceiver = InboxReceiver<FileNotification>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_decode_alone_or_in_an_array() {
        let one = br#"{"deviceId":"d","blobUri":"https://h/c/d/f","blobName":"d/f","lastUpdatedTime":"2016-06-01T21:22:41+00:00","blobSizeInBytes":1234,"enqueuedTimeUtc":"2016-06-01T21:22:43.7996883Z"}"#;
        let decoded = FileNotification::decode(one).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].blob_name, "d/f");
        assert_eq!(decoded[0].blob_size_in_bytes, 1234);
        let many = format!("[{}]", String::from_utf8_lossy(one));
        assert_eq!(FileNotification::decode(many.as_bytes()).unwrap().len(), 1);
        assert!(FileNotification::decode(b"nonsense").is_err());
        // Something that is not a notification is an error, not an empty notification.
        assert!(FileNotification::decode(b"{}").is_err());
        assert!(FileNotification::decode(br#"[{"deviceId":"d"}]"#).is_err());
    }
}
