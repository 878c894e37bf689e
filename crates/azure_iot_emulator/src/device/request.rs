//! Devices that do not stay connected: each request authenticates on its own and leaves no
//! live connection behind (the device HTTPS API).
//!
//! The rules are the ones connected devices get: the same authentication
//! ([`DeviceCore::authenticate`]), the same telemetry stamping and durable log, the same
//! cloud-to-device queue, only under token locks with a deadline (an HTTP `ETag`) instead of
//! connection locks. A stateless request never registers a connection, so it never replaces
//! (and closes) the MQTT or AMQP connection the same device may have open.

use std::time::Duration;

use azure_iot_core::message::Message;
use azure_iot_protocol::Identity;
use tokio::sync::oneshot;

use super::connection::shutting_down;
use super::{DeviceCore, Grant};
use crate::hub::c2d::C2dDelivery;
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::queue::{Lock, Settle};
use crate::hub::state::now;

impl DeviceCore {
    /// Accepts telemetry messages from `identity` (authenticated by `grant`) and resolves once
    /// all of them are durable in the log, in order. Waits while the log's queue is full.
    pub(crate) async fn send_telemetry_once(
        &self,
        identity: &Identity,
        grant: &Grant,
        messages: Vec<Message>,
    ) -> Result<(), HubError> {
        let mut committed = Vec::with_capacity(messages.len());
        for message in messages {
            let (reply, durable) = oneshot::channel();
            self.telemetry
                .append_with(
                    identity.device_id().to_owned(),
                    identity.module_id().map(str::to_owned),
                    grant.auth_method,
                    now(),
                    message,
                    reply,
                )
                .await;
            committed.push(durable);
        }
        let who = identity.clone();
        self.hub.tell(move |s| s.touch_device(&who));
        for durable in committed {
            match durable.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(HubError::new(
                        ErrorCode::ServerError,
                        format!("the telemetry log could not store the message: {e}"),
                    ));
                }
                Err(_) => return Err(shutting_down()),
            }
        }
        Ok(())
    }

    /// Takes the oldest deliverable cloud-to-device message of `device_id` under a new token
    /// lock that lasts `lock_for`; `None` when nothing is deliverable.
    pub(crate) async fn receive_c2d_locked(
        &self,
        device_id: &str,
        lock_for: Duration,
    ) -> Result<Option<C2dDelivery>, HubError> {
        let device = device_id.to_owned();
        self.hub
            .call(move |s| s.take_c2d_locked(&device, lock_for))
            .await
            .map_err(|_| shutting_down())
    }

    /// Settles the message that `lock_token` holds for `device_id`. A token that holds
    /// nothing (settled already, lock expired, never issued, another device's) is
    /// `DeviceMessageLockLost`, and nothing changes.
    pub(crate) async fn settle_c2d_locked(
        &self,
        device_id: &str,
        lock_token: &str,
        settle: Settle,
    ) -> Result<(), HubError> {
        let device = device_id.to_owned();
        let lock = Lock::Token(lock_token.to_owned());
        self.hub
            .call(move |s| s.settle_c2d(&device, &lock, None, settle))
            .await
            .map_err(|_| shutting_down())?
    }
}
