//! The service client against the in-process emulator over real TLS: registry, modules, bulk,
//! statistics, twins, direct methods (answered by this project's device client), query paging,
//! cloud-to-device with feedback end to end, typed errors, and the retry rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use azure_iot_core::NoRetry;
use azure_iot_core::retry::RetryAttempt;
use azure_iot_device::MethodResponse;
use azure_iot_emulator::EmulatorHandle;
use azure_iot_service::{
    BulkEntry, BulkMode, CloudToDeviceMessage, Device, DeviceStatus, DirectMethodRequest,
    ErrorKind, FeedbackMode, FeedbackStatus, IfMatch, Module, ServiceClient, ServiceClientOptions,
    SharedAccessPolicy, TwinPatch,
};
use azure_iot_test::emulator;
use futures_util::TryStreamExt;
use serde_json::json;

mod common;
use common::{WAIT, connect_device, options, service};

#[tokio::test]
async fn device_identities_create_get_update_delete_with_etags() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");

    let created = api.create_device(&Device::new("dev-1")).await.unwrap();
    assert_eq!(created.device_id, "dev-1");
    assert!(created.primary_key().is_some(), "the hub generated keys");
    assert!(created.etag.is_some() && created.generation_id.is_some());

    let again = api.create_device(&Device::new("dev-1")).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);
    assert_eq!(again.status(), Some(409));
    assert_eq!(again.error_code(), Some("DeviceAlreadyExists"));

    let fetched = api.get_device("dev-1").await.unwrap();
    assert_eq!(fetched.etag, created.etag);

    let disabled = fetched
        .clone()
        .with_status(DeviceStatus::Disabled, Some("maintenance".into()));
    let stale = IfMatch::ETag("not-the-etag".into());
    let refused = api.update_device(&disabled, stale).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PreconditionFailed);
    let updated = api
        .update_device(&disabled, IfMatch::etag_or_any(fetched.etag.as_deref()))
        .await
        .unwrap();
    assert_eq!(updated.status, DeviceStatus::Disabled);
    assert_ne!(updated.etag, fetched.etag);

    let keyed = api
        .create_device(
            &Device::new("dev-2")
                .with_symmetric_key("MDEyMzQ1Njc4OWFiY2RlZg==", "ZmVkY2JhOTg3NjU0MzIxMA=="),
        )
        .await
        .unwrap();
    assert_eq!(keyed.primary_key(), Some("MDEyMzQ1Njc4OWFiY2RlZg=="));
    let edge = api
        .create_device(&Device::new("edge-1").with_iot_edge(true))
        .await
        .unwrap();
    assert!(edge.capabilities.iot_edge);

    let listed = api.list_devices(100).await.unwrap();
    assert_eq!(listed.len(), 3);
    let stats = api.registry_statistics().await.unwrap();
    assert_eq!(
        (stats.total_device_count, stats.disabled_device_count),
        (3, 1)
    );
    assert_eq!(
        api.service_statistics()
            .await
            .unwrap()
            .connected_device_count,
        0
    );

    api.delete_device("dev-1", IfMatch::Any).await.unwrap();
    let gone = api.get_device("dev-1").await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    assert_eq!(gone.error_code(), Some("DeviceNotFound"));
    assert!(!gone.is_transient());
    hub.shutdown().await;
}

#[tokio::test]
async fn bad_input_fails_before_anything_is_sent() {
    // No hub listens on this port: every error below comes from the client itself.
    let api = ServiceClient::new(
        "localhost",
        SharedAccessPolicy::new("iothubowner", "c2VjcmV0").unwrap(),
        ServiceClientOptions::default()
            .https_port(1)
            .retry_policy(NoRetry),
    )
    .unwrap();
    for bad in ["", "has space", "a/b", &"x".repeat(129)] {
        let err = api.get_device(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
    }
    assert_eq!(
        api.bulk(&[]).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let many: Vec<_> = (0..101)
        .map(|i| BulkEntry::new(BulkMode::Create, Device::new(format!("d{i}"))))
        .collect();
    assert_eq!(
        api.bulk(&many).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert!(TwinPatch::new().desired(json!("not an object")).is_err());
    for request in [
        DirectMethodRequest::new("m", json!(null)).with_response_timeout(4),
        DirectMethodRequest::new("m", json!(null)).with_response_timeout(301),
        DirectMethodRequest::new("m", json!(null)).with_connect_timeout(301),
    ] {
        let err = api.invoke_device_method("d", &request).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    let empty_method = DirectMethodRequest::new("", json!(null));
    assert_eq!(
        api.invoke_device_method("d", &empty_method)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    let err = ServiceClient::from_connection_string(
        "HostName=h;SharedAccessKeyName=p;SharedAccessKey=not base64!",
        ServiceClientOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(!err.to_string().contains("not base64!"), "{err}");
    let err = ServiceClient::from_connection_string(
        "HostName=h;SharedAccessKeyName=p",
        ServiceClientOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // A hub that is not there: a transport error, not a hang.
    let err = api.get_device("d").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn wrong_keys_and_missing_rights_are_typed() {
    let hub = emulator().await;
    let wrong = ServiceClient::new(
        hub.hostname(),
        SharedAccessPolicy::new("iothubowner", "d3Jvbmd3cm9uZ3dyb25nd3Jvbmc=").unwrap(),
        options(&hub),
    )
    .unwrap();
    let err = wrong.get_device("x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let err = wrong.messaging().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    let reader = service(&hub, "registryRead");
    let err = reader.create_device(&Device::new("d")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    hub.shutdown().await;
}

#[tokio::test]
async fn modules_and_module_twins() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    api.create_device(&Device::new("gw")).await.unwrap();
    let module = api
        .create_module(&Module::new("gw", "filter"))
        .await
        .unwrap();
    assert!(module.primary_key().is_some());
    assert_eq!(
        api.create_module(&Module::new("gw", "filter"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    api.create_module(&Module::new("gw", "second"))
        .await
        .unwrap();
    let mut ids: Vec<_> = api
        .list_modules("gw")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.module_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["filter", "second"]);
    let fetched = api.get_module("gw", "filter").await.unwrap();
    let updated = api
        .update_module(&fetched, IfMatch::etag_or_any(fetched.etag.as_deref()))
        .await
        .unwrap();
    assert_eq!(updated.module_id, "filter");

    let twin = api
        .update_module_twin(
            "gw",
            "filter",
            &TwinPatch::new().desired(json!({"threshold": 7})).unwrap(),
            IfMatch::Any,
        )
        .await
        .unwrap();
    assert_eq!(twin.module_id.as_deref(), Some("filter"));
    assert_eq!(twin.properties.desired.get("threshold"), Some(&json!(7)));
    let replaced = api
        .replace_module_twin(
            "gw",
            "filter",
            &TwinPatch::new().desired(json!({"other": true})).unwrap(),
            IfMatch::Any,
        )
        .await
        .unwrap();
    assert_eq!(replaced.properties.desired.get("threshold"), None);
    assert_eq!(
        api.get_module_twin("gw", "filter")
            .await
            .unwrap()
            .properties
            .desired
            .get("other"),
        Some(&json!(true))
    );

    api.delete_module("gw", "filter", IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(
        api.get_module("gw", "filter").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn bulk_reports_each_failed_entry() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    api.create_device(&Device::new("exists")).await.unwrap();
    let entries = [
        BulkEntry::new(BulkMode::Create, Device::new("b1")),
        BulkEntry::new(BulkMode::Create, Device::new("exists")),
        BulkEntry::new(BulkMode::Create, Device::new("b2")),
    ];
    let result = api.bulk(&entries).await.unwrap();
    assert!(!result.is_successful);
    assert_eq!(result.errors.len(), 1);
    assert_eq!(result.errors[0].device_id, "exists");
    assert_eq!(result.errors[0].error_code, "DeviceAlreadyExists");
    api.get_device("b2").await.unwrap();

    let deletes = [
        BulkEntry::new(BulkMode::Delete, Device::new("b1")),
        BulkEntry::new(BulkMode::Delete, Device::new("b2")),
    ];
    assert!(api.bulk(&deletes).await.unwrap().is_successful);
    assert_eq!(
        api.registry_statistics().await.unwrap().total_device_count,
        1
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn twins_patch_replace_and_etag_conditions_reach_the_device() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    let device = api.create_device(&Device::new("t1")).await.unwrap();
    let client = connect_device(&hub, &device).await;
    let mut patches = client.desired_property_patches().await.unwrap();

    let twin = api.get_twin("t1").await.unwrap();
    let patch = TwinPatch::new()
        .desired(json!({"interval": 5}))
        .unwrap()
        .tags(json!({"floor": 3}))
        .unwrap();
    let stale = api
        .update_twin("t1", &patch, IfMatch::ETag("stale".into()))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::PreconditionFailed);
    let patched = api
        .update_twin("t1", &patch, IfMatch::etag_or_any(twin.etag.as_deref()))
        .await
        .unwrap();
    assert_eq!(patched.properties.desired.get("interval"), Some(&json!(5)));
    assert_eq!(patched.tags.as_ref().unwrap()["floor"], 3);
    let pushed = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed.patch["interval"], 5);

    client
        .update_reported_properties(&json!({"firmware": "1.2"}))
        .await
        .unwrap();
    let seen = api.get_twin("t1").await.unwrap();
    assert_eq!(
        seen.properties.reported.get("firmware"),
        Some(&json!("1.2"))
    );

    let replaced = api
        .replace_twin(
            "t1",
            &TwinPatch::new().desired(json!({"mode": "eco"})).unwrap(),
            IfMatch::Any,
        )
        .await
        .unwrap();
    assert_eq!(replaced.properties.desired.get("interval"), None);
    assert_eq!(replaced.properties.desired.get("mode"), Some(&json!("eco")));
    assert_eq!(
        api.get_twin("nobody").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    client.close().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn methods_answered_offline_and_timed_out() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    let device = api.create_device(&Device::new("m1")).await.unwrap();

    let offline = api
        .invoke_device_method("m1", &DirectMethodRequest::new("reboot", json!(null)))
        .await
        .unwrap_err();
    assert_eq!(offline.kind(), ErrorKind::DeviceNotOnline, "{offline}");

    let client = connect_device(&hub, &device).await;
    let mut requests = client.method_requests().await.unwrap();
    let responder = {
        let client = client.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                if request.name == "silent" {
                    continue;
                }
                let answer = json!({"echo": request.payload, "method": request.name});
                client
                    .respond_to_method(MethodResponse::new(request.request_id, 201, answer))
                    .await
                    .unwrap();
            }
        })
    };
    let answer = api
        .invoke_device_method(
            "m1",
            &DirectMethodRequest::new("echo", json!({"n": 1})).with_response_timeout(10),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 201);
    assert_eq!(answer.payload, json!({"echo": {"n": 1}, "method": "echo"}));

    // A 504 is not retried: the method may have run.
    let retries = Arc::new(AtomicU32::new(0));
    let counted = {
        let retries = retries.clone();
        move |_: &RetryAttempt| {
            retries.fetch_add(1, Ordering::SeqCst);
            Some(Duration::ZERO)
        }
    };
    let once = ServiceClient::from_connection_string(
        hub.connection_string("iothubowner").unwrap(),
        options(&hub).retry_policy(counted),
    )
    .unwrap();
    let timeout = once
        .invoke_device_method(
            "m1",
            &DirectMethodRequest::new("silent", json!(null)).with_response_timeout(5),
        )
        .await
        .unwrap_err();
    assert_eq!(timeout.kind(), ErrorKind::Timeout, "{timeout}");
    assert_eq!(retries.load(Ordering::SeqCst), 0);

    client.close().await;
    responder.await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_and_method_calls_only_before_they_reach_the_hub() {
    let retries = Arc::new(AtomicU32::new(0));
    let counted = {
        let retries = retries.clone();
        move |attempt: &RetryAttempt| {
            retries.fetch_add(1, Ordering::SeqCst);
            (attempt.attempt < 2).then_some(Duration::from_millis(1))
        }
    };
    let api = ServiceClient::new(
        "localhost",
        SharedAccessPolicy::new("iothubowner", "c2VjcmV0").unwrap(),
        ServiceClientOptions::default()
            .https_port(1)
            .retry_policy(counted),
    )
    .unwrap();
    assert_eq!(
        api.get_twin("d").await.unwrap_err().kind(),
        ErrorKind::Transport
    );
    assert_eq!(
        retries.swap(0, Ordering::SeqCst),
        3,
        "asked 3 times, retried twice"
    );
    // A connect failure proves the hub never saw the call: retried too.
    api.invoke_device_method("d", &DirectMethodRequest::new("m", json!(null)))
        .await
        .unwrap_err();
    assert_eq!(retries.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn queries_page_with_continuation_tokens() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    for i in 0..5 {
        api.create_device(&Device::new(format!("q{i}")))
            .await
            .unwrap();
    }
    api.update_twin(
        "q3",
        &TwinPatch::new().tags(json!({"floor": 3})).unwrap(),
        IfMatch::Any,
    )
    .await
    .unwrap();

    let mut query = api.query_twins("SELECT * FROM devices").page_size(2);
    let mut pages = Vec::new();
    while let Some(page) = query.next_page().await.unwrap() {
        pages.push(page.len());
    }
    assert_eq!(pages, [2, 2, 1]);
    assert_eq!(query.item_type(), Some("twin"));

    let mut all: Vec<_> = api
        .query_twins("SELECT * FROM devices")
        .page_size(2)
        .into_stream()
        .map_ok(|twin| twin.device_id)
        .try_collect()
        .await
        .unwrap();
    all.sort();
    assert_eq!(all, ["q0", "q1", "q2", "q3", "q4"]);

    let listed = api.list_device_twins().page_size(3).all().await.unwrap();
    assert_eq!(listed.len(), 5);

    let floor = api
        .query_twins("SELECT * FROM devices WHERE tags.floor = 3")
        .all()
        .await
        .unwrap();
    assert_eq!(floor.len(), 1);
    assert_eq!(floor[0].device_id, "q3");

    let count = api
        .query("SELECT COUNT() AS n FROM devices")
        .all()
        .await
        .unwrap();
    assert_eq!(count, [json!({"n": 5})]);
    let bad = api.query("SELEKT nonsense").all().await.unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::BadRequest, "{bad}");
    hub.shutdown().await;
}

#[tokio::test]
async fn c2d_end_to_end_with_feedback_purge_and_refusals() {
    let hub = emulator().await;
    let api = service(&hub, "service");
    let owner = service(&hub, "iothubowner");
    let device = owner.create_device(&Device::new("c1")).await.unwrap();
    let messaging = api.messaging().await.unwrap();

    let id = messaging
        .send(
            "c1",
            CloudToDeviceMessage::new("switch on")
                .message_id("cmd-1")
                .correlation_id("corr-1")
                .feedback(FeedbackMode::Full)
                .property("color", "blue")
                .time_to_live(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert_eq!(id, "cmd-1");
    let unknown = messaging
        .send("ghost", CloudToDeviceMessage::new("x"))
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound, "{unknown}");

    // The device receives it with its properties; receiving completes it.
    let client = connect_device(&hub, &device).await;
    let mut inbox = client.cloud_to_device_messages().await.unwrap();
    let received = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.body().as_ref(), b"switch on");
    let system = received.system_properties();
    assert_eq!(system.message_id.as_deref(), Some("cmd-1"));
    assert_eq!(system.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(received.property("color"), Some("blue"));

    let feedback = messaging.feedback().await.unwrap();
    let mut records = feedback.into_stream();
    let record = tokio::time::timeout(WAIT, records.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(record.original_message_id, "cmd-1");
    assert_eq!(record.device_id, "c1");
    assert_eq!(record.status_code, FeedbackStatus::Success);
    drop(records);
    client.close().await;

    // A full queue refuses the 51st message; a purge empties it.
    for i in 0..50 {
        messaging
            .send("c1", CloudToDeviceMessage::new(format!("m{i}")))
            .await
            .unwrap();
    }
    let full = messaging
        .send("c1", CloudToDeviceMessage::new("one too many"))
        .await
        .unwrap_err();
    assert_eq!(full.kind(), ErrorKind::QueueFull, "{full}");
    let purged = api.purge_c2d_queue("c1").await.unwrap();
    assert_eq!(purged.total_messages_purged, 50);
    messaging
        .send("c1", CloudToDeviceMessage::new("fits again"))
        .await
        .unwrap();
    messaging.close().await.unwrap();
    assert_eq!(
        messaging
            .send("c1", CloudToDeviceMessage::new("after close"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
    hub.shutdown().await;
}

/// When the hub ends a connection's CBS grant (here the `ExpireServiceTokens` fault: a token
/// that expired), the send it refuses fails as `Unauthorized` and is not queued; the next
/// send opens a new connection with a fresh token. (When tokens are renewed is tested on the
/// paused clock in `messaging.rs` and `credential.rs`.)
#[tokio::test]
async fn an_expired_cbs_grant_is_replaced_by_the_next_send() {
    let hub = emulator().await;
    let owner = service(&hub, "iothubowner");
    owner.create_device(&Device::new("r1")).await.unwrap();
    let api = service(&hub, "service");
    let messaging = api.messaging().await.unwrap();
    messaging
        .send("r1", CloudToDeviceMessage::new("first"))
        .await
        .unwrap();
    hub.inject(azure_iot_emulator::Fault::ExpireServiceTokens)
        .await
        .unwrap();
    let refused = messaging
        .send("r1", CloudToDeviceMessage::new("refused"))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unauthorized, "{refused}");
    messaging
        .send("r1", CloudToDeviceMessage::new("after a fresh token"))
        .await
        .unwrap();
    assert_eq!(
        api.purge_c2d_queue("r1")
            .await
            .unwrap()
            .total_messages_purged,
        2,
        "the refused message was not queued"
    );
    messaging.close().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn messaging_reopens_its_connection_after_the_hub_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let start = |https: u16, amqp: u16| {
        azure_iot_emulator::Emulator::builder()
            .data_dir(dir.path())
            .https_port(https)
            .mqtt_port(0)
            .amqp_port(amqp)
            .start()
    };
    let first = start(0, 0).await.unwrap();
    let (https, amqp) = (first.https_addr().port(), first.amqp_addr().port());
    let api = service(&first, "iothubowner");
    api.create_device(&Device::new("restart-1")).await.unwrap();
    let messaging = api.messaging().await.unwrap();
    messaging
        .send("restart-1", CloudToDeviceMessage::new("before"))
        .await
        .unwrap();
    first.shutdown().await;

    until_disconnected(&messaging).await;
    let second = start(https, amqp).await.unwrap();
    messaging
        .send("restart-1", CloudToDeviceMessage::new("after"))
        .await
        .unwrap();
    assert_eq!(
        api.get_device("restart-1")
            .await
            .unwrap()
            .cloud_to_device_message_count,
        2,
        "both messages are queued (the emulator keeps its queues across restarts)"
    );
    messaging.feedback().await.unwrap();
    messaging.close().await.unwrap();
    second.shutdown().await;
}

/// Purging a queue produces `Purged` feedback for messages that asked for it; a reader that
/// holds a batch without settling it does not keep the hub from shutting down.
#[tokio::test]
async fn purge_feedback_and_shutdown_with_an_unsettled_batch() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    api.create_device(&Device::new("p1")).await.unwrap();
    let messaging = api.messaging().await.unwrap();
    messaging
        .send(
            "p1",
            CloudToDeviceMessage::new("never read")
                .message_id("purged-1")
                .feedback(FeedbackMode::Negative),
        )
        .await
        .unwrap();
    assert_eq!(
        api.purge_c2d_queue("p1")
            .await
            .unwrap()
            .total_messages_purged,
        1
    );
    let mut feedback = messaging.feedback().await.unwrap();
    let batch = tokio::time::timeout(WAIT, feedback.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.records[0].original_message_id, "purged-1");
    assert_eq!(batch.records[0].status_code, FeedbackStatus::Purged);
    // Neither completed nor abandoned: the hub must still stop promptly.
    tokio::time::timeout(WAIT, hub.shutdown())
        .await
        .expect("the emulator stops while a feedback batch is unsettled");
    drop(batch);
}

/// A feedback receiver keeps its connection open on its own: dropping the `Messaging` it came
/// from does not end it.
#[tokio::test]
async fn a_feedback_receiver_outlives_its_messaging() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    api.create_device(&Device::new("fb1")).await.unwrap();
    let mut feedback = api.messaging().await.unwrap().feedback().await.unwrap();
    let messaging = api.messaging().await.unwrap();
    messaging
        .send(
            "fb1",
            CloudToDeviceMessage::new("x")
                .message_id("outlived")
                .feedback(FeedbackMode::Negative),
        )
        .await
        .unwrap();
    api.purge_c2d_queue("fb1").await.unwrap();
    let batch = tokio::time::timeout(WAIT, feedback.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.records[0].original_message_id, "outlived");
    feedback.complete(batch).await.unwrap();
    hub.shutdown().await;
}

/// A reader that goes away without settling its batch gives it back at once: the next reader
/// gets it, not after the 60 s lock.
#[tokio::test]
async fn an_unsettled_batch_returns_when_its_reader_leaves() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    api.create_device(&Device::new("fb2")).await.unwrap();
    let messaging = api.messaging().await.unwrap();
    messaging
        .send(
            "fb2",
            CloudToDeviceMessage::new("x")
                .message_id("handed-back")
                .feedback(FeedbackMode::Negative),
        )
        .await
        .unwrap();
    api.purge_c2d_queue("fb2").await.unwrap();
    let first = api.messaging().await.unwrap();
    let mut reader = first.feedback().await.unwrap();
    let batch = tokio::time::timeout(WAIT, reader.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.records[0].original_message_id, "handed-back");
    // Gone without settling or closing anything, as a process that exits.
    drop(batch);
    drop(reader);
    drop(first);

    let mut second = messaging.feedback().await.unwrap();
    let again = tokio::time::timeout(WAIT, second.next_batch())
        .await
        .expect("the batch comes back well within the lock time")
        .unwrap();
    assert_eq!(again.records[0].original_message_id, "handed-back");
    second.complete(again).await.unwrap();
    hub.shutdown().await;
}

/// A hub whose certificate is not trusted fails at once with `Tls`, over HTTPS and AMQP,
/// and is not retried: retrying cannot fix trust.
#[tokio::test]
async fn an_untrusted_hub_certificate_is_a_tls_error_not_retried() {
    let hub = emulator().await;
    let other = emulator().await;
    let retries = Arc::new(AtomicU32::new(0));
    let counted = {
        let retries = retries.clone();
        move |attempt: &RetryAttempt| {
            retries.fetch_add(1, Ordering::SeqCst);
            (attempt.attempt < 3).then_some(Duration::ZERO)
        }
    };
    let api = ServiceClient::from_connection_string(
        hub.connection_string("iothubowner").unwrap(),
        options(&hub)
            .trusted_ca_pem(other.ca_pem())
            .retry_policy(counted),
    )
    .unwrap();
    let err = api.get_device("d").await.unwrap_err();
    let mut chain = format!("{err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(" <- {e:?}"));
        source = e.source();
    }
    assert_eq!(err.kind(), ErrorKind::Tls, "{chain}");
    assert!(!err.is_transient());
    assert_eq!(retries.load(Ordering::SeqCst), 0);
    let err = api.messaging().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    hub.shutdown().await;
    other.shutdown().await;
}

/// Many tasks sending through one shared `Messaging` use its several links at once; every
/// message is queued exactly once.
#[tokio::test]
async fn concurrent_sends_share_the_links() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    for device in ["cc1", "cc2"] {
        api.create_device(&Device::new(device)).await.unwrap();
    }
    let messaging = Arc::new(api.messaging().await.unwrap());
    let sends: Vec<_> = (0..40)
        .map(|i| {
            let messaging = messaging.clone();
            tokio::spawn(async move {
                let device = if i % 2 == 0 { "cc1" } else { "cc2" };
                messaging
                    .send(device, CloudToDeviceMessage::new(format!("m{i}")))
                    .await
            })
        })
        .collect();
    for send in sends {
        send.await.unwrap().unwrap();
    }
    for device in ["cc1", "cc2"] {
        assert_eq!(
            api.get_device(device)
                .await
                .unwrap()
                .cloud_to_device_message_count,
            20
        );
    }
    messaging.close().await.unwrap();
    hub.shutdown().await;
}

/// A TCP relay in front of the emulator's AMQP port that counts the connections it accepts,
/// can cut every open one (a lost connection, without restarting the hub), hold new ones
/// before they reach the hub (a reconnect that takes its time) or refuse them (a hub that
/// cannot be reached).
struct Relay {
    port: u16,
    accepted: Arc<AtomicU32>,
    refuse: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    hold: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU32::new(0));
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let (hold, hold_rx) = tokio::sync::watch::channel(false);
        let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = accepted.clone();
        let refusing = refuse.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                if refusing.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection end at once
                }
                let mut cut = cut_rx.clone();
                let mut hold = hold_rx.clone();
                tokio::spawn(async move {
                    cut.borrow_and_update();
                    if hold.wait_for(|held| !held).await.is_err() {
                        return;
                    }
                    let Ok(mut hub) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut hub) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay {
            port,
            accepted,
            refuse,
            cut,
            hold,
        }
    }

    /// Ends every connection relayed so far.
    fn cut(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    fn accepted(&self) -> u32 {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A service client whose AMQP connections go through `relay`.
fn service_via(hub: &EmulatorHandle, relay: &Relay) -> ServiceClient {
    ServiceClient::from_connection_string(
        hub.connection_string("iothubowner").unwrap(),
        options(hub).amqp_port(relay.port),
    )
    .unwrap()
}

/// Waits until `messaging` has noticed that its connection is gone.
async fn until_disconnected(messaging: &azure_iot_service::Messaging) {
    let deadline = std::time::Instant::now() + WAIT;
    while messaging.is_connected().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the lost connection went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Many sends that find the connection lost at once share one reconnect attempt and its
/// result: when the hub cannot be reached they all fail after one attempt (not one attempt
/// each, one after another); when it can, the hub sees one new connection for all of them
/// and every message is queued once.
#[tokio::test]
async fn concurrent_sends_after_a_lost_connection_share_one_reconnect() {
    let hub = emulator().await;
    let relay = Relay::start(hub.amqp_addr()).await;
    let api = service_via(&hub, &relay);
    api.create_device(&Device::new("rc1")).await.unwrap();
    let messaging = Arc::new(api.messaging().await.unwrap());
    messaging
        .send("rc1", CloudToDeviceMessage::new("before"))
        .await
        .unwrap();
    assert_eq!(relay.accepted(), 1);
    relay.cut();
    until_disconnected(&messaging).await;

    relay.refuse.store(true, Ordering::SeqCst);
    let sends: Vec<_> = (0..16)
        .map(|i| {
            let messaging = messaging.clone();
            tokio::spawn(async move {
                messaging
                    .send("rc1", CloudToDeviceMessage::new(format!("refused {i}")))
                    .await
            })
        })
        .collect();
    for send in sends {
        let err = send.await.unwrap().unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
    assert_eq!(relay.accepted(), 2, "one failed attempt for all 16 sends");
    assert!(!messaging.is_connected().await);

    relay.refuse.store(false, Ordering::SeqCst);
    let sends: Vec<_> = (0..16)
        .map(|i| {
            let messaging = messaging.clone();
            tokio::spawn(async move {
                messaging
                    .send("rc1", CloudToDeviceMessage::new(format!("after {i}")))
                    .await
            })
        })
        .collect();
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_eq!(relay.accepted(), 3, "one reconnect for all 16 sends");
    assert!(messaging.is_connected().await);
    assert_eq!(
        api.get_device("rc1")
            .await
            .unwrap()
            .cloud_to_device_message_count,
        17
    );
    messaging.close().await.unwrap();
    hub.shutdown().await;
}

/// `is_connected` answers at once while a send is reconnecting (it holds no lock across the
/// reconnect), and the send completes when the hub can be reached again.
#[tokio::test]
async fn is_connected_answers_while_a_reconnect_is_in_progress() {
    let hub = emulator().await;
    let relay = Relay::start(hub.amqp_addr()).await;
    let api = service_via(&hub, &relay);
    api.create_device(&Device::new("rc2")).await.unwrap();
    let messaging = Arc::new(api.messaging().await.unwrap());
    relay.hold.send_replace(true);
    relay.cut();
    until_disconnected(&messaging).await;

    let pending = {
        let messaging = messaging.clone();
        tokio::spawn(async move {
            messaging
                .send("rc2", CloudToDeviceMessage::new("after the hold"))
                .await
        })
    };
    // The reconnect has reached the relay and is held there.
    let deadline = std::time::Instant::now() + WAIT;
    while relay.accepted() < 2 {
        assert!(std::time::Instant::now() < deadline, "no reconnect started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        let connected = tokio::time::timeout(Duration::from_millis(200), messaging.is_connected())
            .await
            .expect("is_connected does not wait for the reconnect");
        assert!(!connected);
    }
    assert!(!pending.is_finished());

    relay.hold.send_replace(false);
    pending.await.unwrap().unwrap();
    assert!(messaging.is_connected().await);
    assert_eq!(relay.accepted(), 2);
    messaging.close().await.unwrap();
    hub.shutdown().await;
}

/// File-upload notifications through the same receiver as feedback: one per upload, an
/// abandoned one comes back, a completed one is gone, and the stream form completes as it
/// goes.
#[tokio::test]
async fn file_notifications_arrive_one_at_a_time_and_settle() {
    let hub = emulator().await;
    let api = service(&hub, "iothubowner");
    let device = api.create_device(&Device::new("up")).await.unwrap();
    let ep = azure_iot_test::HubEndpoint::of(&hub);
    let uploader = azure_iot_test::DeviceHttp::new(&ep, "up", None, device.primary_key().unwrap());
    uploader.upload_file(&ep, "up", "a.txt", b"aaa").await;
    uploader.upload_file(&ep, "up", "b.txt", b"bbbb").await;

    let messaging = api.messaging().await.unwrap();
    let mut receiver = messaging.file_notifications().await.unwrap();
    let first = tokio::time::timeout(WAIT, receiver.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.records.len(), 1);
    let n = &first.records[0];
    assert_eq!(n.device_id, "up");
    assert_eq!(n.blob_name, "up/a.txt");
    assert_eq!(n.blob_size_in_bytes, 3);
    assert!(
        n.blob_uri.ends_with("/fileuploads/up/a.txt"),
        "{}",
        n.blob_uri
    );
    receiver.abandon(first).await.unwrap();
    let again = tokio::time::timeout(WAIT, receiver.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.records[0].blob_name, "up/a.txt");
    receiver.complete(again).await.unwrap();

    let mut stream = receiver.into_stream();
    let second = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.blob_name, "up/b.txt");
    assert_eq!(second.blob_size_in_bytes, 4);
    drop(stream);
    // The second was not completed (the stream stopped before asking for more): a new
    // receiver gets it again, and nothing else.
    let mut fresh = messaging.file_notifications().await.unwrap();
    let back = tokio::time::timeout(WAIT, fresh.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.records[0].blob_name, "up/b.txt");
    fresh.complete(back).await.unwrap();
    hub.shutdown().await;
}
