//! File uploads as the hub tracks them: a device asks for a blob (`POST /devices/{id}/files`),
//! uploads it to the blob endpoint, and tells the hub how it went
//! (`POST /devices/{id}/files/notifications`). A successful upload puts a notification in the
//! file-notification inbox (`inbox.rs`) when notifications are on.
//!
//! * Uploads in progress are kept in memory under their correlation id until the device
//!   notifies or the SAS lifetime ends; at most [`MAX_ACTIVE_UPLOADS`] per device (403006,
//!   as the hub). A restart forgets them: the device's notification is then refused (400)
//!   and it may upload again.
//! * The blob is named `{deviceId}/{requested name}`, as the hub names it.
//! * Notifications are durable (store first) and token-locked: see `inbox.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::HubState;
use super::error::{ErrorCode, HubError};
use super::inbox::{Inbox, InboxKind, InboxSettings};
use crate::config::FileUploadOptions;
use crate::error::EmulatorError;
use crate::store::Store;

/// Uploads one device may have in progress.
pub(crate) const MAX_ACTIVE_UPLOADS: usize = 10;
/// The longest blob name a device may ask for (Azure's limit for a blob name).
pub(crate) const MAX_BLOB_NAME: usize = 1024;

/// An upload the hub handed a SAS for and has not heard the end of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingUpload {
    /// The device uploading.
    pub(crate) device_id: String,
    /// `{deviceId}/{requested name}`.
    pub(crate) blob_name: String,
    expires: Instant,
}

/// Uploads in progress and the notification inbox.
pub(crate) struct FileUploads {
    pending: HashMap<String, PendingUpload>,
    /// Notifications waiting for (or locked to) a service reader.
    pub(super) notifications: Inbox,
    options: FileUploadOptions,
}

impl FileUploads {
    /// Loads the notification inbox from the store, with the default options.
    pub(crate) fn load(store: &Store) -> Result<Self, EmulatorError> {
        let options = FileUploadOptions::default();
        Ok(Self {
            pending: HashMap::new(),
            notifications: Inbox::load(
                store,
                InboxKind::FileNotifications,
                inbox_settings(&options),
            )?,
            options,
        })
    }
}

fn inbox_settings(options: &FileUploadOptions) -> InboxSettings {
    InboxSettings {
        lock: options.lock_duration,
        batch: 1,
        max_deliveries: options.max_delivery_count,
    }
}

impl HubState {
    /// Applies the hub's file-upload settings (at start-up).
    pub(crate) fn configure_file_upload(&mut self, options: FileUploadOptions) {
        self.files.options = options;
        self.files
            .notifications
            .set_settings(inbox_settings(&options));
    }

    /// Starts an upload of `requested` for `device_id`: returns the correlation id, the blob
    /// name and how long the blob SAS may live.
    pub(crate) fn start_file_upload(
        &mut self,
        device_id: &str,
        requested: &str,
    ) -> Result<(String, String, Duration), HubError> {
        self.record(device_id, None)?;
        let requested = checked_blob_name(requested)?;
        let now = Instant::now();
        self.files.pending.retain(|_, p| p.expires > now);
        let active = self
            .files
            .pending
            .values()
            .filter(|p| p.device_id == device_id)
            .count();
        if active >= MAX_ACTIVE_UPLOADS {
            return Err(HubError::new(
                ErrorCode::DeviceMaximumActiveFileUploadLimitExceeded,
                format!(
                    "device {device_id} already has {MAX_ACTIVE_UPLOADS} file uploads in progress"
                ),
            ));
        }
        let correlation_id = super::queue::new_lock_token();
        let blob_name = format!("{device_id}/{requested}");
        let ttl = self.files.options.sas_ttl;
        self.files.pending.insert(
            correlation_id.clone(),
            PendingUpload {
                device_id: device_id.to_owned(),
                blob_name: blob_name.clone(),
                expires: now + ttl,
            },
        );
        Ok((correlation_id, blob_name, ttl))
    }

    /// Ends `device_id`'s upload `correlation_id` (the device notified): returns it, and
    /// whether the hub sends notifications. An id the hub does not know for this device (never
    /// issued, ended already, expired, another device's) is 400.
    pub(crate) fn end_file_upload(
        &mut self,
        device_id: &str,
        correlation_id: &str,
    ) -> Result<(PendingUpload, bool), HubError> {
        let now = Instant::now();
        match self.files.pending.get(correlation_id) {
            Some(p) if p.device_id == device_id && p.expires > now => {}
            _ => {
                return Err(HubError::invalid(format!(
                    "no file upload of device {device_id} has correlation id {correlation_id} (finished already, expired, or never started)"
                )));
            }
        }
        let pending = self
            .files
            .pending
            .remove(correlation_id)
            .ok_or_else(|| HubError::invalid("the upload ended meanwhile"))?;
        Ok((pending, self.files.options.notifications))
    }

    /// Queues a file-upload notification for service readers.
    pub(crate) fn notify_file_uploaded(&mut self, notification: Value) -> Result<(), HubError> {
        self.push_inbox(InboxKind::FileNotifications, notification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::identity::IdentityBody;

    fn state() -> HubState {
        let mut s = HubState::load(Store::open(None).unwrap()).unwrap();
        s.put_identity("d1", None, IdentityBody::default(), None)
            .unwrap();
        s
    }

    #[test]
    fn uploads_are_named_by_device_limited_and_ended_once() {
        let mut s = state();
        let (corr, blob, ttl) = s.start_file_upload("d1", "a/b.txt").unwrap();
        assert_eq!(blob, "d1/a/b.txt");
        assert_eq!(ttl, Duration::from_secs(3600));
        assert!(s.end_file_upload("d2", &corr).is_err(), "another device's");
        let (pending, notify) = s.end_file_upload("d1", &corr).unwrap();
        assert_eq!(pending.blob_name, "d1/a/b.txt");
        assert!(notify);
        assert!(s.end_file_upload("d1", &corr).is_err(), "ended already");
        for i in 0..MAX_ACTIVE_UPLOADS {
            s.start_file_upload("d1", &format!("f{i}")).unwrap();
        }
        let e = s.start_file_upload("d1", "one more").unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::DeviceMaximumActiveFileUploadLimitExceeded
        );
        assert_eq!(
            s.start_file_upload("nobody", "x").unwrap_err().code,
            ErrorCode::DeviceNotFound
        );
        assert!(s.start_file_upload("d1", "").is_err());
    }
}

/// The blob name a device asked for, without leading `/`, if the hub takes it.
fn checked_blob_name(requested: &str) -> Result<&str, HubError> {
    let requested = requested.trim_start_matches('/');
    if requested.is_empty()
        || requested.len() > MAX_BLOB_NAME
        || requested.chars().any(char::is_control)
    {
        return Err(HubError::invalid(format!(
            "blobName must be 1 to {MAX_BLOB_NAME} characters without control characters"
        )));
    }
    // A `.` or `..` segment would make the blob's URI (which back ends follow) name another
    // blob, possibly another device's; an empty one is a name no client builds.
    if requested
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(HubError::invalid(
            "blobName must not have empty, `.` or `..` path segments",
        ));
    }
    Ok(requested)
}

#[cfg(test)]
mod blob_name_tests {
    use super::checked_blob_name;

    #[test]
    fn dot_and_empty_segments_are_refused() {
        for bad in ["../other/x", "a/./b", "a//b", "a/..", "", "/", "x\u{7}"] {
            assert!(checked_blob_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a.txt", "/logs/today.txt", "a..b/c", "with space #1?.txt"] {
            assert!(checked_blob_name(good).is_ok(), "{good:?}");
        }
        assert_eq!(checked_blob_name("//x/y").ok(), Some("x/y"));
    }
}
