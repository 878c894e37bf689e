//! One receiver for the hub's service-bound inboxes: delivery feedback
//! (`/messages/serviceBound/feedback`) and file-upload notifications
//! (`/messages/serviceBound/filenotifications`).
//!
//! Both hand the service JSON in AMQP messages that stay locked to the receiver until it
//! settles them: accepted completes (the hub forgets them), released abandons (the hub
//! delivers them again), and a link that closes releases what it holds. What differs is
//! described by [`InboxItem`]: the address, how a message body decodes into items, and how
//! many messages the receiver takes at once.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;

use azure_iot_protocol::amqp::Address;
use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp_types::messaging::{AmqpValue, Body};
use fe2o3_amqp_types::primitives::Value;
use futures_util::stream::BoxStream;

use super::connection::{Conn, transport};
use crate::error::{Error, ErrorKind, Result};

mod sealed {
    /// Only this crate's inbox items: the hub has exactly these inboxes.
    pub trait Sealed {}
    impl Sealed for super::super::FeedbackRecord {}
    impl Sealed for super::super::FileNotification {}
}

/// What one service-bound inbox delivers ([`FeedbackRecord`](crate::FeedbackRecord),
/// [`FileNotification`](crate::FileNotification)); sealed.
pub trait InboxItem: sealed::Sealed + Sized + Send + 'static {
    /// The inbox's link address.
    const ADDRESS: Address;
    /// What it holds, for error messages (`feedback`, `file notification`).
    const WHAT: &'static str;
    /// Messages the receiver takes at once (each stays locked to it until settled).
    const CREDIT: u32;

    /// The items of one message body (JSON).
    fn decode(body: &[u8]) -> std::result::Result<Vec<Self>, serde_json::Error>;
}

/// The items of one AMQP message. Settle it with [`InboxReceiver::complete`] or
/// [`InboxReceiver::abandon`].
#[derive(Debug)]
pub struct InboxBatch<T> {
    /// The items, in the hub's order.
    pub records: Vec<T>,
    delivery: DeliveryInfo,
}

/// Receives from one service-bound inbox; see [`FeedbackReceiver`](crate::FeedbackReceiver)
/// and [`FileNotificationReceiver`](crate::FileNotificationReceiver).
pub struct InboxReceiver<T> {
    receiver: Receiver,
    /// Keeps the connection open while the receiver lives.
    _conn: Arc<Conn>,
    _items: PhantomData<fn() -> T>,
}

impl<T: InboxItem> std::fmt::Debug for InboxReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxReceiver")
            .field("inbox", &T::WHAT)
            .finish_non_exhaustive()
    }
}

impl<T: InboxItem> InboxReceiver<T> {
    pub(super) fn new(receiver: Receiver, conn: Arc<Conn>) -> Self {
        Self {
            receiver,
            _conn: conn,
            _items: PhantomData,
        }
    }

    /// The next batch; waits until the hub has one. The batch stays locked to this receiver
    /// until it is completed or abandoned (or the link closes, which releases it).
    pub async fn next_batch(&mut self) -> Result<InboxBatch<T>> {
        let delivery = self
            .receiver
            .recv::<Body<Value>>()
            .await
            .map_err(|e| transport(&format!("the {} link broke", T::WHAT), e))?;
        let info = DeliveryInfo::from(&delivery);
        let body: Vec<u8> = match &delivery.message().body {
            Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
            Body::Value(AmqpValue(Value::String(text))) => text.clone().into_bytes(),
            Body::Value(AmqpValue(Value::Binary(bytes))) => bytes.to_vec(),
            _ => Vec::new(),
        };
        match T::decode(&body) {
            Ok(records) => Ok(InboxBatch {
                records,
                delivery: info,
            }),
            Err(e) => {
                // Unreadable: reject it so it is not redelivered forever.
                let _ = self.receiver.reject(info, None).await;
                Err(Error::with_source(
                    ErrorKind::Protocol,
                    format!("a {} message is not what the hub sends", T::WHAT),
                    e,
                ))
            }
        }
    }

    /// Completes a batch: the hub forgets it.
    pub async fn complete(&self, batch: InboxBatch<T>) -> Result<()> {
        self.receiver
            .accept(batch.delivery)
            .await
            .map_err(|e| transport(&format!("completing a {} batch failed", T::WHAT), e))
    }

    /// Gives a batch back: the hub delivers it again.
    pub async fn abandon(&self, batch: InboxBatch<T>) -> Result<()> {
        self.receiver
            .release(batch.delivery)
            .await
            .map_err(|e| transport(&format!("abandoning a {} batch failed", T::WHAT), e))
    }

    /// Every item, batch after batch. A batch is completed when the caller asks for the item
    /// after its last one: a caller that stops (or fails) before that leaves the batch to be
    /// delivered again, items it already had included. Delivery is at least once; to settle
    /// batches exactly when you choose, use [`next_batch`](Self::next_batch).
    pub fn into_stream(self) -> BoxStream<'static, Result<T>> {
        Box::pin(futures_util::stream::try_unfold(
            (self, VecDeque::<T>::new(), None::<DeliveryInfo>),
            |(mut this, mut buffered, mut handed)| async move {
                loop {
                    if let Some(item) = buffered.pop_front() {
                        return Ok(Some((item, (this, buffered, handed))));
                    }
                    if let Some(done) = handed.take() {
                        this.receiver.accept(done).await.map_err(|e| {
                            transport(&format!("completing a {} batch failed", T::WHAT), e)
                        })?;
                    }
                    let batch = this.next_batch().await?;
                    if batch.records.is_empty() {
                        this.complete(batch).await?;
                        continue;
                    }
                    handed = Some(batch.delivery);
                    buffered.extend(batch.records);
                }
            },
        ))
    }

    /// Detaches the link; a batch not completed is released.
    pub async fn close(self) -> Result<()> {
        self.receiver
            .close()
            .await
            .map_err(|e| transport(&format!("closing the {} link", T::WHAT), e))
    }
}
