//! One connection to an Event Hubs endpoint: TLS, a session authenticated by a CBS token for
//! `sb://{host}/{event hub}` (token type `servicebus.windows.net:sastoken`, the Python SDK's
//! audience; renewed like the hub connection's, `messaging/connection.rs`), `$management`
//! on demand, and partition receivers.
//!
//! A partition receiver's source is
//! `amqps://{host}/{event hub}/ConsumerGroups/{group}/Partitions/{id}` with the selector
//! filter of its [`EventPosition`]; it asks for settle-on-send (`snd-settle-mode` settled) and
//! grants `prefetch` credit, refilled as events are taken (so at most `prefetch` events per
//! partition wait in memory). An owner level becomes the `com.microsoft:epoch` link property.

use std::sync::Arc;
use std::time::Duration;

use azure_iot_core::ResourceUri;
use fe2o3_amqp::Receiver;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::{ReceiverAttachError, RecvError};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp_types::definitions::{
    self, AmqpError, ConnectionError, ErrorCondition, Fields, LinkError, SenderSettleMode,
};
use fe2o3_amqp_types::messaging::Source;
use fe2o3_amqp_types::primitives::{Symbol, Value};
use tokio::task::JoinHandle;

use super::management::{EventHubProperties, Management, PartitionProperties};
use super::position::EventPosition;
use crate::credential::{SharedAccessPolicy, TokenSource};
use crate::error::{Error, ErrorKind, Result};
use crate::messaging::{CbsSession, open_cbs_session, transport, within};

/// The `com.microsoft:epoch` link property (owner level).
const EPOCH: &str = "com.microsoft:epoch";

/// Where an event hub is and how to reach it.
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) entity: String,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) tokens: Arc<TokenSource>,
    pub(crate) timeout: Duration,
}

impl Target {
    pub(crate) fn new(
        host: &str,
        port: u16,
        entity: &str,
        policy: SharedAccessPolicy,
        tls: Arc<rustls::ClientConfig>,
        token_ttl: Duration,
        timeout: Duration,
    ) -> Self {
        let audience = audience(host, entity);
        Self {
            host: host.to_owned(),
            port,
            entity: entity.to_owned(),
            tls,
            tokens: Arc::new(TokenSource::for_resource(
                ResourceUri::custom(audience),
                policy,
                token_ttl,
            )),
            timeout,
        }
    }

    /// Opens a connection (bounded by the timeout).
    pub(crate) async fn open(&self) -> Result<EventHubConnection> {
        within(self.timeout, "opening the Event Hubs connection", async {
            let CbsSession {
                connection,
                session,
                renewal,
            } = open_cbs_session(
                &self.host,
                self.port,
                &self.tls,
                self.tokens.clone(),
                &audience(&self.host, &self.entity),
                self.timeout,
            )
            .await?;
            Ok(EventHubConnection {
                connection,
                session,
                renewal,
                management: None,
            })
        })
        .await
    }

    /// The source address of a partition.
    pub(crate) fn partition_address(&self, group: &str, partition: &str) -> String {
        format!(
            "amqps://{}/{}/ConsumerGroups/{group}/Partitions/{partition}",
            self.host, self.entity
        )
    }
}

/// The CBS audience and token resource: `sb://{host}/{event hub}`.
fn audience(host: &str, entity: &str) -> String {
    format!("sb://{host}/{entity}")
}

/// An open connection.
pub(crate) struct EventHubConnection {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    renewal: JoinHandle<()>,
    management: Option<Management>,
}

/// How to attach a partition receiver.
pub(crate) struct ReceiverSpec<'a> {
    pub(crate) group: &'a str,
    pub(crate) partition: &'a str,
    pub(crate) position: &'a EventPosition,
    pub(crate) prefetch: u32,
    pub(crate) owner_level: Option<i64>,
}

impl EventHubConnection {
    async fn management(&mut self) -> Result<&mut Management> {
        match &mut self.management {
            Some(m) => Ok(m),
            slot => {
                let m = Management::attach(&mut self.session).await?;
                Ok(slot.insert(m))
            }
        }
    }

    /// The event hub's properties.
    pub(crate) async fn event_hub_properties(
        &mut self,
        target: &Target,
    ) -> Result<EventHubProperties> {
        let token = target.tokens.token().0;
        within(target.timeout, "the $management request", async {
            self.management()
                .await?
                .event_hub(&target.entity, token.secret())
                .await
        })
        .await
    }

    /// A partition's properties.
    pub(crate) async fn partition_properties(
        &mut self,
        target: &Target,
        partition: &str,
    ) -> Result<PartitionProperties> {
        let token = target.tokens.token().0;
        within(target.timeout, "the $management request", async {
            self.management()
                .await?
                .partition(&target.entity, partition, token.secret())
                .await
        })
        .await
    }

    /// Attaches a receiver for one partition.
    pub(crate) async fn attach(
        &mut self,
        target: &Target,
        spec: ReceiverSpec<'_>,
    ) -> Result<Receiver> {
        let source = Source::builder()
            .address(target.partition_address(spec.group, spec.partition))
            .filter(spec.position.filter_set())
            .build();
        let mut builder = Receiver::builder()
            .name(format!(
                "eh-{}-{}-{}",
                spec.group,
                spec.partition,
                uuid::Uuid::new_v4()
            ))
            .source(source)
            .target(format!("eh-receiver-{}", uuid::Uuid::new_v4()))
            .sender_settle_mode(SenderSettleMode::Settled)
            .credit_mode(CreditMode::Auto(spec.prefetch.max(1)))
            .verify_incoming_source(false);
        if let Some(epoch) = spec.owner_level {
            let mut properties = Fields::new();
            properties.insert(Symbol::from(EPOCH), Value::Long(epoch));
            builder = builder.properties(properties);
        }
        let what = format!(
            "attaching to partition {} of {} (consumer group {})",
            spec.partition, target.entity, spec.group
        );
        within(target.timeout, &what, async {
            builder
                .attach(&mut self.session)
                .await
                .map_err(|e| attach_error(&what, e))
        })
        .await
    }

    /// Closes the connection (best effort).
    pub(crate) async fn close(mut self) {
        self.renewal.abort();
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

impl Drop for EventHubConnection {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// What an attach failure means.
fn attach_error(what: &str, e: ReceiverAttachError) -> Error {
    match e {
        ReceiverAttachError::RemoteClosedWithError(error) => {
            amqp_error(condition_kind(&error.condition), what, &error)
        }
        e => transport(&format!("{what} failed"), e),
    }
}

/// What a receive failure means.
pub(crate) fn recv_error(what: &str, e: RecvError) -> Error {
    use fe2o3_amqp::link::LinkStateError;
    match e {
        RecvError::LinkStateError(
            LinkStateError::RemoteDetachedWithError(error)
            | LinkStateError::RemoteClosedWithError(error),
        ) => amqp_error(condition_kind(&error.condition), what, &error),
        e => transport(&format!("{what}: the link broke"), e),
    }
}

/// The error kind an AMQP error condition maps to (Event Hubs' conditions included).
pub(crate) fn condition_kind(condition: &ErrorCondition) -> ErrorKind {
    match condition {
        ErrorCondition::AmqpError(AmqpError::NotFound) => ErrorKind::NotFound,
        ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess) => ErrorKind::Unauthorized,
        ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded) => ErrorKind::Throttled,
        ErrorCondition::AmqpError(
            AmqpError::InvalidField | AmqpError::NotAllowed | AmqpError::DecodeError,
        ) => ErrorKind::BadRequest,
        ErrorCondition::AmqpError(AmqpError::NotImplemented) => ErrorKind::BadRequest,
        ErrorCondition::AmqpError(AmqpError::InternalError) => ErrorKind::ServiceError,
        ErrorCondition::LinkError(LinkError::Stolen) => ErrorKind::Closed,
        ErrorCondition::LinkError(LinkError::DetachForced)
        | ErrorCondition::ConnectionError(ConnectionError::ConnectionForced) => {
            ErrorKind::Transport
        }
        ErrorCondition::Custom(symbol) => match symbol.as_str() {
            "com.microsoft:server-busy" => ErrorKind::Throttled,
            "com.microsoft:timeout" | "com.microsoft:operation-cancelled" => ErrorKind::Timeout,
            "com.microsoft:argument-out-of-range" | "com.microsoft:argument-error" => {
                ErrorKind::BadRequest
            }
            "com.microsoft:receiver-disconnected" => ErrorKind::Closed,
            "com.microsoft:entity-disabled" | "com.microsoft:no-matching-subscription" => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::ServiceError,
        },
        _ => ErrorKind::ServiceError,
    }
}

/// The condition's symbol (`amqp:not-found`, …).
fn condition_name(condition: &ErrorCondition) -> String {
    let symbol = match condition {
        ErrorCondition::AmqpError(e) => Symbol::from(e),
        ErrorCondition::ConnectionError(e) => Symbol::from(e),
        ErrorCondition::SessionError(e) => Symbol::from(e),
        ErrorCondition::LinkError(e) => Symbol::from(e),
        ErrorCondition::Custom(s) => s.clone(),
        #[allow(unreachable_patterns)]
        other => return format!("{other:?}"),
    };
    symbol.as_str().to_owned()
}

/// An error naming `what` failed, with the endpoint's condition and description.
pub(crate) fn amqp_error(kind: ErrorKind, what: &str, error: &definitions::Error) -> Error {
    let mut message = format!("{what}: {}", condition_name(&error.condition));
    if let Some(description) = &error.description {
        message.push_str(": ");
        message.push_str(description);
    }
    Error::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_map_to_kinds_and_messages_name_the_condition() {
        for (condition, kind) in [
            (
                ErrorCondition::AmqpError(AmqpError::NotFound),
                ErrorKind::NotFound,
            ),
            (
                ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess),
                ErrorKind::Unauthorized,
            ),
            (
                ErrorCondition::Custom(Symbol::from("com.microsoft:argument-out-of-range")),
                ErrorKind::BadRequest,
            ),
            (
                ErrorCondition::Custom(Symbol::from("com.microsoft:server-busy")),
                ErrorKind::Throttled,
            ),
            (
                ErrorCondition::LinkError(LinkError::Stolen),
                ErrorKind::Closed,
            ),
            (
                ErrorCondition::LinkError(LinkError::DetachForced),
                ErrorKind::Transport,
            ),
        ] {
            assert_eq!(condition_kind(&condition), kind, "{condition:?}");
        }
        let error = definitions::Error::new(
            AmqpError::NotFound,
            Some("partition 9 does not exist".to_owned()),
            None,
        );
        let e = amqp_error(ErrorKind::NotFound, "attaching", &error);
        assert_eq!(
            e.to_string(),
            "attaching: amqp:not-found: partition 9 does not exist"
        );
    }

    #[test]
    fn addresses_and_audience_are_the_event_hubs_forms() {
        assert_eq!(audience("ns.example", "hub"), "sb://ns.example/hub");
    }
}
