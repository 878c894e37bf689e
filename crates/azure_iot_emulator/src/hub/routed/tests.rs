use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::hub::identity::IdentityBody;
use crate::store::Store;
use crate::telemetry::TelemetryEvent;

fn state(routes: EventRoutes, dir: Option<&std::path::Path>) -> (HubState, TelemetryLog) {
    let log = TelemetryLog::open(dir).unwrap();
    let mut state = HubState::load(Store::open(dir).unwrap()).unwrap();
    state.route_events(routes, log.clone(), "hub1");
    (state, log)
}

/// Every event once `count` are committed (waits for the log's writer, no fixed sleep; fails
/// after 10 s rather than hanging when fewer come).
async fn events(log: &TelemetryLog, count: u64) -> Vec<TelemetryEvent> {
    let mut newest = log.watch();
    let committed = async {
        while *newest.borrow_and_update() < count {
            newest.changed().await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), committed)
        .await
        .unwrap_or_else(|_| panic!("fewer than {count} events were logged"));
    log.read(0, 1000, None, None).await.unwrap()
}

fn property<'a>(event: &'a TelemetryEvent, name: &str) -> Option<&'a PropertyValue> {
    event
        .properties
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn text(event: &TelemetryEvent, name: &str) -> Option<String> {
    match property(event, name) {
        Some(PropertyValue::String(s)) => Some(s.clone()),
        other => panic!("{name} is {other:?}, not a string"),
    }
}

fn body(event: &TelemetryEvent) -> Value {
    serde_json::from_slice(event.message.body()).unwrap()
}

fn create(state: &mut HubState, device: &str, module: Option<&str>) {
    state
        .put_identity(device, module, IdentityBody::default(), None)
        .unwrap();
}

#[tokio::test]
async fn lifecycle_events_carry_the_twin_and_the_hubs_properties() {
    let (mut s, log) = state(EventRoutes::none().lifecycle(true), None);
    create(&mut s, "d1", None);
    create(&mut s, "d1", Some("m1"));
    s.delete_identity("d1", Some("m1"), None).unwrap();
    s.delete_identity("d1", None, None).unwrap();
    let all = events(&log, 4).await;
    assert_eq!(all.len(), 4, "one event per operation");
    let ops: Vec<_> = all.iter().map(|e| text(e, "opType").unwrap()).collect();
    assert_eq!(
        ops,
        [
            "createDeviceIdentity",
            "createDeviceIdentity",
            "deleteDeviceIdentity",
            "deleteDeviceIdentity"
        ]
    );
    for event in &all {
        assert_eq!(event.source, MessageSource::DeviceLifecycleEvents);
        assert_eq!(event.device_id, "d1");
        assert_eq!(text(event, "hubName").as_deref(), Some("hub1"));
        assert_eq!(text(event, "deviceId").as_deref(), Some("d1"));
        assert_eq!(
            text(event, "iothub-message-schema").as_deref(),
            Some("deviceLifecycleNotification")
        );
        assert!(text(event, "operationTimestamp").is_some());
        let system = event.message.system_properties();
        assert_eq!(system.content_type.as_deref(), Some("application/json"));
        assert_eq!(system.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(system.user_id.as_deref(), Some("hub1"));
        assert!(system.correlation_id.is_some());
    }
    let module = &all[1];
    assert_eq!(module.module_id.as_deref(), Some("m1"));
    assert_eq!(text(module, "moduleId").as_deref(), Some("m1"));
    assert!(property(&all[0], "moduleId").is_none());
    let twin = body(module);
    assert_eq!(twin["deviceId"], "d1");
    assert_eq!(twin["moduleId"], "m1");
    assert_eq!(twin["version"], 1);
    assert!(twin["etag"].is_string());
    assert_eq!(twin["properties"]["desired"]["$version"], 1);
    assert!(twin["properties"]["reported"]["$metadata"]["$lastUpdated"].is_string());
    // Correlation ids are unique.
    let mut ids: Vec<_> = all
        .iter()
        .map(|e| e.message.system_properties().correlation_id.clone())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 4);
}

#[tokio::test]
async fn twin_change_events_carry_the_written_patch() {
    let (mut s, log) = state(EventRoutes::none().twin_change(true), None);
    create(&mut s, "d1", None);
    create(&mut s, "d1", Some("m1"));
    s.update_twin(
        "d1",
        None,
        &json!({"tags": {"site": "a"}, "properties": {"desired": {"speed": 5}}}),
        None,
        false,
    )
    .unwrap();
    // An empty patch changes nothing and is no event.
    s.update_twin("d1", None, &json!({}), None, false).unwrap();
    s.update_twin(
        "d1",
        Some("m1"),
        &json!({"properties": {"desired": {"mode": "x"}}}),
        None,
        true,
    )
    .unwrap();
    s.patch_reported(&Identity::device("d1"), &json!({"temp": 21}))
        .unwrap();
    let all = events(&log, 3).await;
    assert_eq!(
        all.len(),
        3,
        "creates are no twin change; one event per write"
    );
    for event in &all {
        assert_eq!(event.source, MessageSource::TwinChangeEvents);
        assert_eq!(
            text(event, "iothub-message-schema").as_deref(),
            Some("twinChangeNotification")
        );
    }
    let desired = &all[0];
    assert_eq!(text(desired, "opType").as_deref(), Some("updateTwin"));
    let b = body(desired);
    assert_eq!(b["version"], 2);
    assert_eq!(b["tags"], json!({"site": "a"}));
    assert_eq!(b["properties"]["desired"]["speed"], 5);
    assert_eq!(b["properties"]["desired"]["$version"], 2);
    assert_eq!(
        b["properties"]["desired"]["$metadata"]["speed"]["$lastUpdatedVersion"],
        2
    );
    assert!(
        b.get("deviceId").is_none(),
        "an update carries the patch only"
    );

    let replace = &all[1];
    assert_eq!(text(replace, "opType").as_deref(), Some("replaceTwin"));
    assert_eq!(text(replace, "moduleId").as_deref(), Some("m1"));
    assert_eq!(replace.module_id.as_deref(), Some("m1"));
    let b = body(replace);
    assert_eq!(b["deviceId"], "d1");
    assert_eq!(b["moduleId"], "m1");
    assert_eq!(b["properties"]["desired"]["mode"], "x");
    assert!(b["properties"]["reported"].is_object());

    let reported = &all[2];
    assert_eq!(text(reported, "opType").as_deref(), Some("updateTwin"));
    let b = body(reported);
    assert_eq!(b["properties"]["reported"]["temp"], 21);
    assert_eq!(b["properties"]["reported"]["$version"], 2);
    assert!(b["properties"]["reported"]["$metadata"]["temp"]["$lastUpdated"].is_string());
    assert!(b["properties"].get("desired").is_none());
}

#[tokio::test]
async fn connection_state_events_pair_up_with_increasing_sequence_numbers() {
    let (mut s, log) = state(EventRoutes::none().connection_state(true), None);
    create(&mut s, "d1", None);
    let device = Identity::device("d1");
    let (tx, _rx) = mpsc::channel(1);
    let (first, _, _) = s.connect_device(device.clone(), tx.clone(), true);
    // A second connection replaces the first: the first's end is reported before it.
    let (second, _, _) = s.connect_device(device.clone(), tx, true);
    // The replaced connection's own disconnect is not the identity's.
    s.disconnect_device(&device, first, true);
    s.disconnect_device(&device, second, true);
    let all = events(&log, 4).await;
    let ops: Vec<_> = all.iter().map(|e| text(e, "opType").unwrap()).collect();
    assert_eq!(
        ops,
        [
            "deviceConnected",
            "deviceDisconnected",
            "deviceConnected",
            "deviceDisconnected"
        ]
    );
    let mut last = String::new();
    for event in &all {
        assert_eq!(event.source, MessageSource::DeviceConnectionStateEvents);
        assert_eq!(
            text(event, "iothub-message-schema").as_deref(),
            Some("deviceConnectionStateNotification")
        );
        let number = body(event)["sequenceNumber"].as_str().unwrap().to_owned();
        assert_eq!(number.len(), 64);
        assert!(number > last, "{number} after {last}");
        last = number;
    }
}

#[tokio::test]
async fn nothing_is_routed_unless_enabled() {
    let (mut s, log) = state(EventRoutes::none(), None);
    create(&mut s, "d1", None);
    s.update_twin(
        "d1",
        None,
        &json!({"properties": {"desired": {"a": 1}}}),
        None,
        false,
    )
    .unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let (c, _, _) = s.connect_device(Identity::device("d1"), tx, true);
    s.disconnect_device(&Identity::device("d1"), c, true);
    s.delete_identity("d1", None, None).unwrap();
    // A telemetry append after them all: once it is committed, nothing else came before it.
    log.append(
        "d1".into(),
        None,
        "sas",
        now(),
        azure_iot_core::message::Message::builder("x")
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let all = events(&log, 1).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].source, MessageSource::Telemetry);
}

#[tokio::test]
async fn routed_events_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, log) = state(EventRoutes::all(), Some(dir.path()));
        create(&mut s, "d1", None);
        events(&log, 1).await;
    }
    let log = TelemetryLog::open(Some(dir.path())).unwrap();
    let all = log.read(0, 10, None, None).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].source, MessageSource::DeviceLifecycleEvents);
    assert_eq!(
        text(&all[0], "opType").as_deref(),
        Some("createDeviceIdentity")
    );
}

#[test]
fn routes_parse_from_the_command_line_form() {
    let all: EventRoutes = "all".parse().unwrap();
    assert_eq!(all, EventRoutes::all());
    let some: EventRoutes = "twin-change, connection-state".parse().unwrap();
    assert_eq!(
        some.sources(),
        ["twinChangeEvents", "deviceConnectionStateEvents"]
    );
    assert_eq!("none".parse::<EventRoutes>().unwrap(), EventRoutes::none());
    let bad = "twin".parse::<EventRoutes>().unwrap_err().to_string();
    assert!(bad.contains("unknown event route `twin`"), "{bad}");
}
