//! The module client against the in-process emulator: output messages, the module twin and
//! direct methods to the module; a device connection string is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{ClientOptions, ErrorKind, Message, MethodResponse, ModuleClient};
use azure_iot_test::{HubEndpoint, RestClient, emulator};
use reqwest::{Method, StatusCode};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_module_sends_outputs_reports_and_answers_methods() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    service.register_device("edge").await;
    let r = service.put("/devices/edge/modules/filter", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let key = r.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let options = ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .port(hub.mqtt_addr().port())
        .operation_timeout(WAIT);
    let cs = format!(
        "HostName={};DeviceId=edge;ModuleId=filter;SharedAccessKey={key}",
        hub.hostname()
    );
    let module = ModuleClient::from_connection_string(&cs, options.clone())
        .await
        .unwrap();
    assert_eq!(module.identity().module_id(), Some("filter"));

    module
        .send_output("alerts", Message::new("hot").unwrap())
        .await
        .unwrap();
    let logged = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(logged[0].module_id.as_deref(), Some("filter"));
    assert_eq!(
        logged[0].message.system_properties().output_name.as_deref(),
        Some("alerts")
    );
    let e = module
        .send_output("", Message::new("x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);

    let version = module
        .update_reported_properties(&json!({"threshold": 30}))
        .await
        .unwrap();
    assert_eq!(version, 2);
    let twin = service.get("/twins/edge/modules/filter").await;
    assert_eq!(twin.body["properties"]["reported"]["threshold"], 30);

    let mut calls = module.method_requests().await.unwrap();
    let invoke = tokio::spawn(async move {
        service
            .request(
                Method::POST,
                "/twins/edge/modules/filter/methods",
                Some(json!({"methodName": "reset", "responseTimeoutInSeconds": 10})),
                &[],
            )
            .await
    });
    let call = tokio::time::timeout(WAIT, calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.name, "reset");
    module
        .respond_to_method(MethodResponse::new(call.request_id, 200, json!("done")))
        .await
        .unwrap();
    let result = invoke.await.unwrap();
    assert_eq!(result.body["status"], 200);
    assert_eq!(result.body["payload"], "done");

    let device_cs = format!(
        "HostName={};DeviceId=edge;SharedAccessKey={key}",
        hub.hostname()
    );
    let e = ModuleClient::from_connection_string(&device_cs, options)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    module.close().await;
}
