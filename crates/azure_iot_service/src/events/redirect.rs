//! From an IoT hub connection string to its built-in endpoint's Event Hubs connection string,
//! the way IoT Hub itself hands it out (next-transports.md §5.1; the official JS sample and
//! the C# SDK do the same):
//!
//! 1. TLS to `{hub host}:5671`, SASL PLAIN with user `{policy}@sas.root.{hub name}` and a
//!    SAS token for the hub (`sr={hub host}`, which covers `{hub host}/messages/events`, the
//!    narrower resource the JS sample signs) with the policy, valid 5 minutes;
//! 2. attach a receiver on `amqps://{hub host}/messages/events/$management`;
//! 3. the hub detaches it with `amqp:link:redirect`, whose `info` carries `hostname` (the
//!    Event Hubs namespace host) and `address`
//!    (`amqps://{namespace host}:5671/{event hub name}/$management`).
//!
//! The same policy name and key then authenticate with the Event Hubs endpoint.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_iot_core::{EventHubConnectionString, ResourceUri, SasToken, ServiceConnectionString};
use fe2o3_amqp::link::{LinkStateError, ReceiverAttachError, RecvError};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::{Receiver, Session};
use fe2o3_amqp_types::definitions::{self, ErrorCondition, LinkError};
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::primitives::Value;

use super::link::{amqp_error, condition_kind};
use crate::error::{Error, ErrorKind, Result};
use crate::messaging::{open_connection, transport};

/// Where a redirect points: the Event Hubs host, its port (if the address names one) and the
/// event hub's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Redirect {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) entity: String,
}

/// Asks the hub of `hub` (reached on `port`) for its built-in endpoint.
pub(crate) async fn resolve(
    hub: &ServiceConnectionString,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<EventHubConnectionString> {
    let host = hub.host_name();
    let token = SasToken::generate(
        &ResourceUri::hub(host),
        hub.key(),
        Some(hub.key_name()),
        SystemTime::now() + Duration::from_secs(300),
    );
    let sasl = SaslProfile::Plain {
        username: format!("{}@sas.root.{}", hub.key_name(), hub.hub_name()),
        password: token.secret().to_owned(),
    };
    let mut connection = open_connection(host, port, tls, Some(sasl)).await?;
    let mut session = Session::begin(&mut connection)
        .await
        .map_err(|e| transport("the AMQP session was refused", e))?;
    let attached = Receiver::builder()
        .name(format!("redirect-{}", uuid::Uuid::new_v4()))
        .source(format!("amqps://{host}/messages/events/$management"))
        .target(format!("amqps://{host}/messages/events"))
        .attach(&mut session)
        .await;
    let error = match attached {
        Err(ReceiverAttachError::RemoteClosedWithError(error)) => error,
        Err(e) => return Err(transport("the hub refused the redirect link", e)),
        Ok(mut receiver) => match receiver.recv::<Body<Value>>().await {
            Err(RecvError::LinkStateError(
                LinkStateError::RemoteDetachedWithError(error)
                | LinkStateError::RemoteClosedWithError(error),
            )) => error,
            Err(e) => return Err(transport("the hub closed the redirect link", e)),
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "{host} sent a message on /messages/events/$management instead of \
                         redirecting to its Event Hubs-compatible endpoint"
                    ),
                ));
            }
        },
    };
    let _ = connection.close().await;
    let redirect = read_redirect(&error, host)?;
    Ok(EventHubConnectionString::new(
        redirect.host,
        redirect.port,
        redirect.entity,
        hub.key_name(),
        hub.key().clone(),
    ))
}

/// The target of an `amqp:link:redirect` error, or the error the detach meant.
pub(crate) fn read_redirect(error: &definitions::Error, host: &str) -> Result<Redirect> {
    if error.condition != ErrorCondition::LinkError(LinkError::Redirect) {
        let kind = condition_kind(&error.condition);
        return Err(amqp_error(
            kind,
            &format!("{host} refused the telemetry endpoint lookup"),
            error,
        ));
    }
    let info = |key: &str| {
        error.info.as_ref().and_then(|info| {
            info.iter()
                .find(|(k, _)| k.as_str() == key)
                .and_then(|(_, v)| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Symbol(s) => Some(s.as_str().to_owned()),
                    _ => None,
                })
        })
    };
    let protocol = |what: &str| {
        Error::new(
            ErrorKind::Protocol,
            format!("{host} redirected to its Event Hubs endpoint, but {what}"),
        )
    };
    let address = info("address").ok_or_else(|| protocol("without an address"))?;
    let rest = address
        .split_once("://")
        .map_or(address.as_str(), |(_, rest)| rest);
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| protocol("its address has no path"))?;
    let entity = path
        .strip_suffix("/$management")
        .ok_or_else(|| protocol("its address does not end in /$management"))?;
    if entity.is_empty() || entity.contains('/') {
        return Err(protocol("its address names no event hub"));
    }
    let (address_host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(
                p.parse::<u16>()
                    .map_err(|_| protocol("its address has a bad port"))?,
            ),
        ),
        None => (authority, None),
    };
    let host = info("hostname").unwrap_or_else(|| address_host.to_owned());
    if host.is_empty() {
        return Err(protocol("it names no host"));
    }
    Ok(Redirect {
        host,
        port,
        entity: entity.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::definitions::{AmqpError, Fields};
    use fe2o3_amqp_types::primitives::Symbol;

    fn redirect(info: &[(&str, &str)]) -> definitions::Error {
        let mut fields = Fields::new();
        for (k, v) in info {
            fields.insert(Symbol::from(*k), Value::String((*v).to_owned()));
        }
        definitions::Error::new(LinkError::Redirect, None, Some(fields))
    }

    #[test]
    fn the_hubs_redirect_is_read() {
        let error = redirect(&[
            ("hostname", "iothub-ns-h-123.servicebus.windows.net"),
            (
                "address",
                "amqps://iothub-ns-h-123.servicebus.windows.net:5671/my-hub/$management",
            ),
        ]);
        assert_eq!(
            read_redirect(&error, "h.azure-devices.net").unwrap(),
            Redirect {
                host: "iothub-ns-h-123.servicebus.windows.net".into(),
                port: Some(5671),
                entity: "my-hub".into(),
            }
        );
        // Without `hostname`, the address's host is used.
        let error = redirect(&[("address", "amqps://localhost:5673/hub/$management")]);
        let read = read_redirect(&error, "localhost").unwrap();
        assert_eq!((read.host.as_str(), read.port), ("localhost", Some(5673)));
    }

    proptest::proptest! {
        /// Any address is read without a panic; one that is read names an event hub that has
        /// no `/` and a host.
        #[test]
        fn any_address_is_read_or_refused(address in ".{0,80}", hostname in proptest::option::of("[a-z.]{0,20}")) {
            let mut info = vec![("address", address.as_str())];
            if let Some(h) = &hostname {
                info.push(("hostname", h.as_str()));
            }
            if let Ok(r) = read_redirect(&redirect(&info), "h") {
                proptest::prop_assert!(!r.entity.is_empty() && !r.entity.contains('/'));
                proptest::prop_assert!(!r.host.is_empty());
            }
        }
    }

    #[test]
    fn bad_redirects_and_other_conditions_are_typed_errors() {
        for info in [
            vec![],
            vec![("address", "amqps://h:5671/hub")],
            vec![("address", "amqps://h:x/hub/$management")],
            vec![("address", "amqps://h/$management")],
        ] {
            let err = read_redirect(&redirect(&info), "h").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Protocol, "{info:?}");
        }
        let refused = definitions::Error::new(AmqpError::UnauthorizedAccess, None, None);
        assert_eq!(
            read_redirect(&refused, "h").unwrap_err().kind(),
            ErrorKind::Unauthorized
        );
    }
}
