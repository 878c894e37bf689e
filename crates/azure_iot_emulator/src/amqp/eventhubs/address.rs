//! The link addresses of the Event Hubs-compatible endpoint, in every form the SDKs send.
//!
//! | form | who |
//! |---|---|
//! | `{eh}/ConsumerGroups/{cg}/Partitions/{p}` | JS (relative) |
//! | `/{eh}/ConsumerGroups/{cg}/Partitions/{p}` | .NET |
//! | `amqps://{host}[:port]/{eh}/ConsumerGroups/{cg}/Partitions/{p}` | Python (pyamqp) |
//! | `$management` (also `/$management`, `{eh}/$management`) | every SDK's management node |
//! | `/messages/events/$management`, `/messages/events/ConsumerGroups/{cg}/Partitions/{p}` | IoT Hub clients that log in with a hub policy and expect a redirect |
//!
//! Words (`ConsumerGroups`, `Partitions`, `messages`, `events`) are matched case-insensitively;
//! the entity, consumer group and partition are kept as written (percent-decoded) and
//! checked by the caller, which knows the hub.

use azure_iot_core::encoding::decode_component;

/// The longest address looked at (longer ones are not Event Hubs addresses).
const MAX_ADDRESS_LEN: usize = 1024;

/// What an Event Hubs-side link address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EhAddress {
    /// A partition of a consumer group of an entity: a consumer link's source.
    Consumer {
        /// The entity (event hub) name as written.
        entity: String,
        /// The consumer group as written.
        consumer_group: String,
        /// The partition id as written.
        partition: String,
    },
    /// The management node (`$management`): READ requests for the entity and its partitions.
    Management,
    /// An IoT Hub address under `/messages/events` (the hub's side of the built-in endpoint):
    /// answered with `amqp:link:redirect` to the Event Hubs address. `Some` consumer group
    /// and partition for a partition address, `None` for `$management`.
    HubEvents(Option<(String, String)>),
}

impl EhAddress {
    /// Parses `address`; `None` when it is not an Event Hubs-side address (the caller goes on
    /// with IoT Hub's addresses).
    pub(crate) fn parse(address: &str) -> Option<Self> {
        if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
            return None;
        }
        // `amqps://host[:port]/path` → `path`; a bare address is its own path.
        let path = match address.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i + 1..]),
            None => address.strip_prefix('/').unwrap_or(address),
        };
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let is = |segment: &str, word: &str| segment.eq_ignore_ascii_case(word);
        let text = |raw: &str| decode_component(raw).into_owned();
        match segments.as_slice() {
            ["$management"] | [_, "$management"]
                if !segments.first().is_some_and(|s| is(s, "messages")) =>
            {
                Some(Self::Management)
            }
            [m, e, "$management"] if is(m, "messages") && is(e, "events") => {
                Some(Self::HubEvents(None))
            }
            [m, e, c, cg, p, partition]
                if is(m, "messages")
                    && is(e, "events")
                    && is(c, "consumergroups")
                    && is(p, "partitions") =>
            {
                Some(Self::HubEvents(Some((text(cg), text(partition)))))
            }
            [entity, c, cg, p, partition]
                if is(c, "consumergroups") && is(p, "partitions") && !entity.is_empty() =>
            {
                Some(Self::Consumer {
                    entity: text(entity),
                    consumer_group: text(cg),
                    partition: text(partition),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn consumer(entity: &str, cg: &str, p: &str) -> Option<EhAddress> {
        Some(EhAddress::Consumer {
            entity: entity.into(),
            consumer_group: cg.into(),
            partition: p.into(),
        })
    }

    #[test]
    fn the_three_consumer_forms_parse_alike() {
        let want = consumer("hub", "$Default", "3");
        assert_eq!(
            EhAddress::parse("hub/ConsumerGroups/$Default/Partitions/3"),
            want
        );
        assert_eq!(
            EhAddress::parse("/hub/ConsumerGroups/$Default/Partitions/3"),
            want
        );
        assert_eq!(
            EhAddress::parse("amqps://localhost:5671/hub/consumergroups/$Default/partitions/3"),
            want
        );
        assert_eq!(
            EhAddress::parse("amqps://localhost/hub/ConsumerGroups/%24Default/Partitions/3"),
            want,
            "percent-encoded names are decoded"
        );
    }

    #[test]
    fn management_and_hub_addresses() {
        for management in [
            "$management",
            "/$management",
            "amqps://h/$management",
            "hub/$management",
        ] {
            assert_eq!(
                EhAddress::parse(management),
                Some(EhAddress::Management),
                "{management}"
            );
        }
        assert_eq!(
            EhAddress::parse("amqps://hub.example/messages/events/$management"),
            Some(EhAddress::HubEvents(None))
        );
        assert_eq!(
            EhAddress::parse("/messages/events/$management"),
            Some(EhAddress::HubEvents(None))
        );
        assert_eq!(
            EhAddress::parse("/messages/events/ConsumerGroups/cg/Partitions/0"),
            Some(EhAddress::HubEvents(Some(("cg".into(), "0".into()))))
        );
    }

    #[test]
    fn iot_hub_addresses_are_not_event_hubs_ones() {
        for address in [
            "$cbs",
            "/messages/devicebound",
            "/messages/serviceBound/feedback",
            "/devices/d1/messages/events",
            "/devices/d1/modules/m1/messages/events",
            "",
            "hub/ConsumerGroups/cg/Partitions",
            "/ConsumerGroups/cg/Partitions/0",
        ] {
            assert_eq!(EhAddress::parse(address), None, "{address}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_not_without_panicking(text in ".{0,120}") {
            let _ = EhAddress::parse(&text);
        }
    }
}
