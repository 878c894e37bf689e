//! The AMQP engine: one device's handle on a (possibly shared) AMQP connection.
//!
//! `connect` takes a seat on a connection of the client's [`AmqpPool`] (its own, unless the
//! application shares one), begins the device's session, puts its SAS token on the
//! connection's `$cbs` node (an X.509 device is authenticated by its TLS certificate
//! instead), and starts the device's unit (`crate::amqp::unit`), the task that owns the
//! session's links. The engine keeps every operation until it is answered: operations are
//! handed to the unit in `next` (never in `connect`, so that the supervisor can withdraw
//! those whose caller left), and those in flight when a connection is lost are handed to the
//! next unit again. `renew` puts a fresh token on the live connection: nothing is
//! interrupted.

use std::collections::{BTreeMap, VecDeque};

use azure_iot_core::sas::SasToken;
use azure_iot_protocol::Identity;
use azure_iot_protocol::amqp::{encode_batch, to_amqp};
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant, sleep_until};

use super::{DeliveryTag, EngineEvent, Feature, OpId, Operation, Outcome};
use crate::amqp::unit::{self, TwinRequest, UnitCommand, UnitConfig, UnitHandle};
use crate::amqp::{AmqpPool, Seat};
use crate::client::DisconnectReason;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::Dial;

/// Settlements the engine keeps while its unit's command queue is full; beyond that a
/// settlement fails (the message stays locked and the hub delivers it again). The hub has at
/// most 50 messages in flight per device, so this is never reached in practice.
const MAX_QUEUED_SETTLEMENTS: usize = 1024;

/// How long closing a device's links and session may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// An operation not answered yet.
struct Pending {
    operation: Operation,
    deadline: Instant,
    /// Whether the current unit has it.
    handed: bool,
}

/// The AMQP engine of one device or module client.
pub(crate) struct AmqpEngine {
    pool: AmqpPool,
    dial: Dial,
    identity: Identity,
    /// The hub's host name: the audience of a token whose `sr` cannot be read.
    host: String,
    client_version: String,
    seat: Option<Seat>,
    unit: Option<UnitHandle>,
    /// Counts units, so that a delivery tag of an earlier connection is recognised.
    generation: u64,
    /// Features wanted so far (attached by every new unit).
    features: Vec<Feature>,
    ops: BTreeMap<OpId, Pending>,
    /// Settlements waiting for room in the unit's command queue, in order.
    settlements: VecDeque<(DeliveryTag, Outcome)>,
    next_op: OpId,
    events: VecDeque<EngineEvent>,
}

impl AmqpEngine {
    /// An engine for `identity` on `host` (the hub's name), dialling as `dial` says, seated
    /// on connections of `pool`.
    pub(crate) fn new(
        pool: AmqpPool,
        dial: Dial,
        identity: Identity,
        host: String,
        client_version: String,
    ) -> Self {
        Self {
            pool,
            dial,
            identity,
            host,
            client_version,
            seat: None,
            unit: None,
            generation: 0,
            features: Vec::new(),
            ops: BTreeMap::new(),
            settlements: VecDeque::new(),
            next_op: 0,
            events: VecDeque::new(),
        }
    }

    /// The CBS audience of `token`: its `sr` exactly as written (as the Node SDK puts it),
    /// or the identity's resource when it cannot be read.
    fn audience(&self, token: &str) -> String {
        match SasToken::parse(token) {
            Ok(token) => token.resource_raw().to_owned(),
            Err(_) => {
                let mut audience = format!("{}/devices/{}", self.host, self.identity.device_id());
                if let Some(module) = self.identity.module_id() {
                    audience.push_str("/modules/");
                    audience.push_str(module);
                }
                audience
            }
        }
    }

    /// The unit is gone: forget it and the seat, and keep what it had for the next one.
    fn lose(&mut self) {
        self.unit = None;
        self.seat = None;
        // Settlements of that connection's messages mean nothing to the next one.
        self.settlements.clear();
        for pending in self.ops.values_mut() {
            pending.handed = false;
        }
    }

    /// Operations whose deadline passed before they were handed to a unit: timed out.
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, p)| !p.handed && p.deadline <= now)
            .map(|(op, _)| *op)
            .collect();
        for op in expired {
            self.ops.remove(&op);
            self.events.push_back(EngineEvent::Done(
                op,
                Err(Error::new(
                    ErrorKind::Timeout,
                    "the operation timed out before it could be sent",
                )),
            ));
        }
    }

    /// Hands the unit what it does not have yet, in order, as far as its queue has room:
    /// settlements first, then operations.
    fn hand_over(&mut self) {
        let Some(unit) = &self.unit else { return };
        while let Some(&(tag, outcome)) = self.settlements.front() {
            // Full: the rest waits (`next` waits for room); closed: `next` sees the unit end.
            let Ok(permit) = unit.commands.try_reserve() else {
                return;
            };
            permit.send(UnitCommand::Settle { tag, outcome });
            self.settlements.pop_front();
        }
        for (op, pending) in self.ops.iter_mut().filter(|(_, p)| !p.handed) {
            let Ok(permit) = unit.commands.try_reserve() else {
                break;
            };
            match command(*op, &pending.operation, pending.deadline) {
                Ok(command) => {
                    permit.send(command);
                    pending.handed = true;
                }
                Err(e) => self.events.push_back(EngineEvent::Done(*op, Err(e))),
            }
        }
        // Operations refused above are answered already.
        for event in &self.events {
            if let EngineEvent::Done(op, _) = event {
                self.ops.remove(op);
            }
        }
    }

    /// Whether something waits for room in the unit's command queue.
    fn backlog(&self) -> bool {
        !self.settlements.is_empty() || self.ops.values().any(|p| !p.handed)
    }

    /// The earliest deadline of an operation no unit has.
    fn next_deadline(&self) -> Option<Instant> {
        self.ops
            .values()
            .filter(|p| !p.handed)
            .map(|p| p.deadline)
            .min()
    }
}

/// The unit's command for an operation.
fn command(op: OpId, operation: &Operation, deadline: Instant) -> Result<UnitCommand> {
    Ok(match operation {
        Operation::SendEvent(message) => UnitCommand::Send {
            op,
            message: Box::new(to_amqp(message)),
            batch: false,
            deadline,
        },
        Operation::SendEventBatch(messages) => {
            let amqp: Vec<_> = messages.iter().map(to_amqp).collect();
            let batch = encode_batch(&amqp).map_err(|e| {
                Error::with_source(ErrorKind::InvalidArgument, "the batch cannot be sent", e)
            })?;
            UnitCommand::Send {
                op,
                message: Box::new(batch),
                batch: true,
                deadline,
            }
        }
        Operation::TwinGet => UnitCommand::Twin {
            op,
            request: TwinRequest::Get,
            deadline,
        },
        Operation::PatchReported(body) => UnitCommand::Twin {
            op,
            request: TwinRequest::PatchReported(body.clone()),
            deadline,
        },
        Operation::RespondToMethod(response) => UnitCommand::MethodAnswer {
            op,
            response: response.clone(),
            deadline,
        },
        Operation::Subscribe(feature) => UnitCommand::Subscribe {
            op,
            feature: *feature,
        },
    })
}

impl super::Engine for AmqpEngine {
    async fn connect(&mut self, password: Option<&str>) -> Result<()> {
        self.lose();
        // An X.509 device has no token: its TLS certificate authenticates the connection,
        // which therefore carries no other device.
        let token = password.filter(|p| !p.is_empty());
        let audience = token.map(|token| self.audience(token));
        let (seat, session) = self
            .pool
            .seat_with_session(&self.dial, audience.as_deref().zip(token))
            .await?;
        self.generation += 1;
        let unit = unit::start(
            session,
            UnitConfig {
                identity: self.identity.clone(),
                client_version: self.client_version.clone(),
                generation: self.generation,
                features: self.features.clone(),
                confirm: token.is_none(),
            },
        )
        .await?;
        self.seat = Some(seat);
        self.unit = Some(unit);
        tracing::debug!(client_id = %self.identity.client_id(), "connected over AMQP");
        Ok(())
    }

    fn submit(&mut self, operation: Operation, deadline: Instant) -> OpId {
        self.next_op += 1;
        let op = self.next_op;
        if let Operation::Subscribe(feature) = &operation
            && !self.features.contains(feature)
        {
            self.features.push(*feature);
        }
        self.ops.insert(
            op,
            Pending {
                operation,
                deadline,
                handed: false,
            },
        );
        op
    }

    fn cancel(&mut self, op: OpId) {
        // One handed to the unit is being sent; its answer is then ignored.
        self.ops.remove(&op);
    }

    fn settle(&mut self, tag: DeliveryTag, outcome: Outcome) -> Result<()> {
        let current = tag.0 >> 40 == self.generation;
        if !current || self.unit.is_none() {
            return Err(gone());
        }
        if self.settlements.len() >= MAX_QUEUED_SETTLEMENTS {
            return Err(Error::new(
                ErrorKind::Refused,
                "too many settlements wait for the connection; the hub delivers the message again",
            ));
        }
        // Sent by `hand_over`, in order with the others, as soon as the unit has room.
        self.settlements.push_back((tag, outcome));
        Ok(())
    }

    async fn next(&mut self, reading: bool) -> EngineEvent {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            self.expire();
            self.hand_over();
            if !self.events.is_empty() {
                continue;
            }
            let wake = self.next_deadline();
            let sleep = async move {
                match wake {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let backlog = self.backlog();
            let Some(unit) = self.unit.as_mut() else {
                sleep.await;
                continue;
            };
            let (commands, events) = (&unit.commands, &mut unit.events);
            tokio::select! {
                // Room in the unit's queue: hand over what waits (on the next turn).
                room = async { commands.reserve().await.is_ok() }, if backlog => {
                    if !room {
                        self.lose();
                        return EngineEvent::Lost(DisconnectReason::Network);
                    }
                }
                event = events.recv(), if reading => match event {
                    Some(EngineEvent::Done(op, result)) => {
                        // An operation withdrawn meanwhile is answered to nobody.
                        if self.ops.remove(&op).is_some() {
                            return EngineEvent::Done(op, result);
                        }
                    }
                    Some(EngineEvent::Lost(reason)) => {
                        self.lose();
                        return EngineEvent::Lost(reason);
                    }
                    Some(event) => return event,
                    None => {
                        self.lose();
                        return EngineEvent::Lost(DisconnectReason::Network);
                    }
                },
                () = sleep => {}
            }
        }
    }

    async fn close(&mut self) {
        if let Some(unit) = self.unit.take() {
            let (done, closed) = oneshot::channel();
            let _ = tokio::time::timeout(CLOSE_LIMIT, async {
                if unit.commands.send(UnitCommand::Close(done)).await.is_ok() {
                    let _ = closed.await;
                }
            })
            .await;
        }
        if let Some(seat) = self.seat.take() {
            seat.leave().await;
        }
        self.lose();
    }

    async fn renew(&mut self, password: Option<&str>) -> Result<bool> {
        let token = password.filter(|p| !p.is_empty());
        match (&self.seat, &self.unit, token) {
            (Some(seat), Some(_), Some(token)) => {
                let audience = self.audience(token);
                seat.connection()
                    .put_token(&audience, token)
                    .await
                    .map(|()| true)
            }
            _ => {
                self.close().await;
                self.connect(password).await.map(|()| false)
            }
        }
    }
}

fn gone() -> Error {
    Error::new(
        ErrorKind::Disconnected,
        "the connection that delivered this message is gone; the hub delivers it again",
    )
}
