//! IoT Hub's redirect of Event Hubs clients from its `/messages/events` addresses to the
//! built-in endpoint.

/// A receiver on the hub's `/messages/events/…` addresses (a client that logged in with a
/// hub policy, as IoT Hub service SDKs and the docs' converters do): detached with
/// `amqp:link:redirect` whose info names this endpoint (`hostname`, `network-host`, `port`,
/// `address`), as IoT Hub does; without a hub grant, `amqp:unauthorized-access`.
pub(in crate::amqp) async fn redirect(
    sender: fe2o3_amqp::link::Sender,
    partition: Option<(String, String)>,
    state: &super::super::ConnectionState,
    context: &super::super::AmqpContext,
) {
    use fe2o3_amqp_types::definitions::{AmqpError, Fields, LinkError};
    use fe2o3_amqp_types::primitives::{Symbol, Value};

    let hub = super::super::hub_audience(context);
    let events = super::super::events_audience(context);
    if !state.authorized(&hub) && !state.authorized(&events) {
        let why = if state.expired(&hub) || state.expired(&events) {
            "the service token expired: put a fresh one on $cbs"
        } else {
            "log in with a hub policy (SASL PLAIN {policy}@sas.root.{hub}) or put a service token on $cbs first"
        };
        let _ = sender
            .close_with_error(super::super::error(AmqpError::UnauthorizedAccess, why))
            .await;
        return;
    }
    let eh = &context.eventhubs;
    let rest = match &partition {
        Some((group, p)) => format!("ConsumerGroups/{group}/Partitions/{p}"),
        None => "$management".to_owned(),
    };
    let address = eh.address(&rest);
    let mut info = Fields::default();
    info.insert(
        Symbol::from("hostname"),
        Value::String(eh.hostname.to_string()),
    );
    info.insert(
        Symbol::from("network-host"),
        Value::String(eh.hostname.to_string()),
    );
    info.insert(Symbol::from("port"), Value::Int(i32::from(eh.port)));
    info.insert(Symbol::from("address"), Value::String(address.clone()));
    let redirect = fe2o3_amqp_types::definitions::Error::new(
        LinkError::Redirect,
        Some(format!("the Event Hubs-compatible endpoint is {address}")),
        Some(info),
    );
    let _ = sender.close_with_error(redirect).await;
}
