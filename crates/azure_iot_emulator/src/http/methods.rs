//! Direct-method invocation: `POST /twins/{id}[/modules/{mid}]/methods`.
//!
//! The hub waits up to `connectTimeoutInSeconds` for the device to be subscribed to methods
//! (0: not at all) and answers 404 `DeviceNotOnline` if it is not; then it waits up to
//! `responseTimeoutInSeconds` for the device's answer and answers 504 `GatewayTimeout` if none
//! comes. The device's status and payload are returned with HTTP 200 whatever the status.
//!
//! Limits follow the current documentation: `responseTimeoutInSeconds` 5–300 (default 30, as
//! Node sends), `connectTimeoutInSeconds` 0–300 (default 0); values outside are 400 before
//! anything is sent to the device. A missing or empty `methodName` is 400. Waiting happens in
//! this handler's task, never on the state thread: the state only hands out the target (or a
//! oneshot that yields it when the device subscribes), so a slow device delays its own caller
//! and nobody else. Unknown identities are 404 `DeviceNotFound` / `ModuleNotFound` at once,
//! without waiting for the connect timeout.

use axum::extract::{Path, State};
use axum::response::Response;
use azure_iot_core::method::DirectMethodRequest;
use http::HeaderMap;

use super::{ApiError, AppState, Body, json_ok};
use crate::hub::methods;
use crate::hub::policy::Rights;

/// `POST /twins/{id}/methods`.
pub(crate) async fn invoke_device(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    invoke(app, headers, id, None, body).await
}

/// `POST /twins/{id}/modules/{mid}/methods`: the same for a module (an Edge module or a
/// module client subscribed to methods).
pub(crate) async fn invoke_module(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    invoke(app, headers, id, Some(mid), body).await
}

/// Validates the call (`hub::methods::validate_request`), then finds or waits for the target,
/// sends the call and waits for the answer (`hub::methods::invoke`), which travels back with
/// HTTP 200 whatever the device's status. A late answer is discarded by the device front-end.
async fn invoke(
    app: AppState,
    headers: HeaderMap,
    device_id: String,
    module_id: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let request: DirectMethodRequest = body.json().await?;
    let timeouts = methods::validate_request(&request)?;
    let response = methods::invoke(
        &app.hub,
        &device_id,
        module_id.as_deref(),
        request,
        timeouts,
    )
    .await?;
    Ok(json_ok(serde_json::json!({
        "status": response.status,
        "payload": response.payload,
    })))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::time::Duration;

    use azure_iot_core::method::DirectMethodResponse;
    use azure_iot_core::sas::{ResourceUri, SasToken};
    use azure_iot_protocol::Identity;
    use http::{HeaderValue, StatusCode, header};
    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use super::*;
    use crate::hub::error::ErrorCode;
    use crate::hub::identity::IdentityBody;
    use crate::hub::{Hub, HubState};
    use crate::store::Store;

    async fn setup() -> (AppState, HeaderMap) {
        let state = HubState::load(Store::open(None).unwrap()).unwrap();
        let policies = Arc::new(state.policies().clone());
        let (hub, _thread) = Hub::start(state).unwrap();
        hub.call(|s| s.put_identity("d1", None, IdentityBody::default(), None))
            .await
            .unwrap()
            .unwrap();
        let owner = policies.get("iothubowner").unwrap();
        let token = SasToken::generate_with_ttl(
            &ResourceUri::hub("h"),
            &owner.primary,
            Some("iothubowner"),
            Duration::from_secs(600),
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(token.secret()).unwrap(),
        );
        let mqtt = Arc::new(crate::mqtt::MqttContext {
            device: crate::device::DeviceCore {
                hub: hub.clone(),
                telemetry: crate::telemetry::TelemetryLog::open(None).unwrap(),
                hostname: Arc::from("h"),
            },
            shutdown: tokio::sync::watch::channel(false).1,
            limits: crate::config::Limits::default(),
            dps: crate::provisioning::in_memory_dps(&hub).unwrap(),
        });
        let amqp = Arc::new(crate::amqp::AmqpContext {
            hub: hub.clone(),
            policies: policies.clone(),
            hostname: Arc::from("h"),
            shutdown: tokio::sync::watch::channel(false).1,
            grant_generation: tokio::sync::watch::channel(0).1,
            limits: crate::config::Limits::default(),
            device: mqtt.device.clone(),
            dps: crate::provisioning::in_memory_dps(&hub).unwrap(),
            eventhubs: Arc::new(crate::amqp::eventhubs::EventHubs::new(
                Arc::from("h"),
                5671,
                &[],
                mqtt.device.telemetry.clone(),
            )),
        });
        let app = AppState {
            blob: None,
            dps: None,
            device: mqtt.device.clone(),
            hub,
            policies,
            hostname: Arc::from("h"),
            mqtt,
            amqp,
            body_timeout: Duration::from_secs(30),
        };
        (app, headers)
    }

    fn body(value: Value) -> Body {
        Body::from_bytes(value.to_string())
    }

    async fn answer(response: Response) -> (StatusCode, Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn waits_for_the_device_to_subscribe_then_returns_its_answer() {
        let (app, headers) = setup().await;
        let call = tokio::spawn(invoke(
            app.clone(),
            headers,
            "d1".into(),
            None,
            body(json!({"methodName": "reboot", "payload": {"delay": 5},
                        "connectTimeoutInSeconds": 60, "responseTimeoutInSeconds": 10})),
        ));
        // Wait until the invocation is parked waiting for the device.
        while !app
            .hub
            .call(|s| s.pending_method_waiters(&Identity::device("d1")))
            .await
            .unwrap()
        {
            tokio::task::yield_now().await;
        }
        let (tx, mut calls) = mpsc::channel(1);
        let (pushes, _pushed) = mpsc::channel(1);
        app.hub
            .call(move |s| {
                s.connect_device(Identity::device("d1"), pushes, true);
                s.subscribe_methods(Identity::device("d1"), tx);
            })
            .await
            .unwrap();
        let request = calls.recv().await.unwrap();
        assert_eq!(request.method_name, "reboot");
        assert_eq!(request.payload, json!({"delay": 5}));
        assert_eq!(request.response_timeout, Duration::from_secs(10));
        request
            .reply
            .send(DirectMethodResponse::new(500, json!("device says no")))
            .unwrap();
        let (status, body) = answer(call.await.unwrap().unwrap()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the device's status travels in the body"
        );
        assert_eq!(body, json!({"status": 500, "payload": "device says no"}));
        let stats = app.hub.call(|s| s.service_statistics()).await.unwrap();
        assert_eq!(stats, json!({"connectedDeviceCount": 1}));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_call_times_out_with_504() {
        let (app, headers) = setup().await;
        let (tx, mut calls) = mpsc::channel(1);
        app.hub
            .call(move |s| s.subscribe_methods(Identity::device("d1"), tx))
            .await
            .unwrap();
        let call = tokio::spawn(invoke(
            app,
            headers,
            "d1".into(),
            None,
            body(json!({"methodName": "slow", "responseTimeoutInSeconds": 5})),
        ));
        // The device takes the call and never answers (but keeps it open).
        let held = calls.recv().await.unwrap();
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.0.code, ErrorCode::GatewayTimeout);
        drop(held);
    }

    #[tokio::test]
    async fn offline_devices_and_bad_requests() {
        let (app, headers) = setup().await;
        let offline = invoke(
            app.clone(),
            headers.clone(),
            "d1".into(),
            None,
            body(json!({"methodName": "m"})),
        )
        .await
        .unwrap_err();
        assert_eq!(offline.0.code, ErrorCode::DeviceNotOnline);
        let unknown = invoke(
            app.clone(),
            headers.clone(),
            "nobody".into(),
            None,
            body(json!({"methodName": "m"})),
        )
        .await
        .unwrap_err();
        assert_eq!(unknown.0.code, ErrorCode::DeviceNotFound);
        for bad in [
            json!({"methodName": ""}),
            json!({"methodName": "m", "responseTimeoutInSeconds": 4}),
            json!({"methodName": "m", "responseTimeoutInSeconds": 301}),
            json!({"methodName": "m", "connectTimeoutInSeconds": 301}),
            json!({"payload": 1}),
        ] {
            let err = invoke(
                app.clone(),
                headers.clone(),
                "d1".into(),
                None,
                body(bad.clone()),
            )
            .await
            .unwrap_err();
            assert_eq!(err.0.code, ErrorCode::ArgumentInvalid, "{bad}");
        }
        // A device that disconnects with the call unanswered: 404 DeviceNotOnline.
        let (tx, mut calls) = mpsc::channel(1);
        app.hub
            .call(move |s| s.subscribe_methods(Identity::device("d1"), tx))
            .await
            .unwrap();
        let call = tokio::spawn(invoke(
            app,
            headers,
            "d1".into(),
            None,
            body(json!({"methodName": "m"})),
        ));
        drop(calls.recv().await.unwrap());
        assert_eq!(
            call.await.unwrap().unwrap_err().0.code,
            ErrorCode::DeviceNotOnline
        );
    }
}
