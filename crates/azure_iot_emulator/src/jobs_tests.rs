//! The jobs scheduler and state against an in-process hub (no sockets): twin jobs reach
//! connected devices, method jobs record answers and the hub's errors, cancel, the maximum
//! execution time on the paused clock, restart survival, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_core::method::{DirectMethodRequest, DirectMethodResponse};
use azure_iot_protocol::Identity;
use azure_iot_protocol::jobs::{DeviceJobStatus, JobRequest, JobResponse, JobStatus};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use crate::hub::devices::Push;
use crate::hub::error::ErrorCode;
use crate::hub::identity::IdentityBody;
use crate::hub::jobs::{MAX_ACTIVE_JOBS, TIMED_OUT_CODE};
use crate::hub::methods::MethodCall;
use crate::hub::{Hub, HubState};
use crate::store::Store;

struct Setup {
    hub: Hub,
    shutdown: watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
}

async fn start(dir: Option<&std::path::Path>, devices: &[(&str, i64)]) -> Setup {
    let state = HubState::load(Store::open(dir).unwrap()).unwrap();
    let (hub, _thread) = Hub::start(state).unwrap();
    for (id, floor) in devices {
        let (id, floor) = (id.to_string(), *floor);
        hub.call(move |s| {
            s.put_identity(&id, None, IdentityBody::default(), None)?;
            s.update_twin(&id, None, &json!({"tags": {"floor": floor}}), None, false)
        })
        .await
        .unwrap()
        .unwrap();
    }
    let (shutdown, rx) = watch::channel(false);
    let scheduler = super::start(hub.clone(), rx).await.unwrap();
    Setup {
        hub,
        shutdown,
        scheduler,
    }
}

async fn job(hub: &Hub, id: &str) -> JobResponse {
    let id = id.to_owned();
    hub.call(move |s| s.get_job(&id)).await.unwrap().unwrap()
}

/// Waits (without sleeping) until the job reaches `status`.
async fn wait_for(hub: &Hub, id: &str, status: JobStatus) -> JobResponse {
    for _ in 0..1_000_000 {
        let current = job(hub, id).await;
        if current.status == status {
            return current;
        }
        tokio::task::yield_now().await;
    }
    panic!("job {id} never became {status}");
}

async fn rows(hub: &Hub) -> Vec<Value> {
    hub.call(|s| s.device_job_documents()).await.unwrap()
}

/// Connects `device` and subscribes it to methods; returns its method calls.
async fn method_device(hub: &Hub, device: &str) -> mpsc::Receiver<MethodCall> {
    let (tx, calls) = mpsc::channel(8);
    let (pushes, _) = mpsc::channel(8);
    let id = Identity::device(device);
    hub.call(move |s| {
        s.connect_device(id.clone(), pushes, true);
        s.subscribe_methods(id, tx);
    })
    .await
    .unwrap();
    calls
}

#[tokio::test]
async fn a_twin_job_updates_the_selected_twins_and_pushes_desired_patches() {
    let setup = start(None, &[("d1", 1), ("d2", 1), ("d3", 2)]).await;
    let hub = &setup.hub;
    // d1 is connected and subscribed to desired properties.
    let (pushes, mut pushed) = mpsc::channel(8);
    let (connection, _, _) = hub
        .call(|s| s.connect_device(Identity::device("d1"), pushes, true))
        .await
        .unwrap();
    hub.call(move |s| s.subscribe_desired(&Identity::device("d1"), connection, true))
        .await
        .unwrap();
    let request = JobRequest::update_twin(
        "twin-1",
        "tags.floor = 1",
        json!({"etag": "*", "deviceId": "ignored", "tags": {"done": true},
               "properties": {"desired": {"interval": 5}, "reported": {}}}),
    );
    let created = hub
        .call(|s| s.create_job("twin-1", request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.status, JobStatus::Scheduled);
    let done = wait_for(hub, "twin-1", JobStatus::Completed).await;
    let stats = done.device_job_statistics.unwrap();
    assert_eq!((stats.device_count, stats.succeeded_count), (2, 2));
    assert!(done.end_time.is_some());
    for (device, changed) in [("d1", true), ("d2", true), ("d3", false)] {
        let twin = hub
            .call(move |s| s.get_twin(device, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            twin["properties"]["desired"]["interval"] == 5,
            changed,
            "{device}"
        );
        assert_eq!(twin["tags"]["done"] == true, changed, "{device}");
    }
    match pushed.recv().await.unwrap() {
        Push::DesiredPatch(patch) => assert_eq!(patch["interval"], 5),
        _ => panic!("expected a desired patch"),
    }
    let rows = rows(hub).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["deviceId"], "d1");
    assert_eq!(rows[0]["status"], "completed");
    assert_eq!(rows[0]["jobType"], "scheduleUpdateTwin");
    let _ = setup.shutdown.send(true);
    setup.scheduler.await.unwrap();
}

#[tokio::test]
async fn a_method_job_records_answers_and_the_hubs_errors() {
    let setup = start(None, &[("on", 1), ("off", 1)]).await;
    let hub = &setup.hub;
    let mut calls = method_device(hub, "on").await;
    let answering = tokio::spawn(async move {
        let call = calls.recv().await.unwrap();
        assert_eq!(call.method_name, "reboot");
        assert_eq!(call.payload, json!({"delay": 1}));
        call.reply
            .send(DirectMethodResponse::new(201, json!("rebooting")))
            .unwrap();
    });
    let request = JobRequest::device_method(
        "method-1",
        "deviceId IN ['on', 'off']",
        DirectMethodRequest::new("reboot", json!({"delay": 1})).with_response_timeout(10),
    );
    hub.call(|s| s.create_job("method-1", request))
        .await
        .unwrap()
        .unwrap();
    let done = wait_for(hub, "method-1", JobStatus::Completed).await;
    answering.await.unwrap();
    let stats = done.device_job_statistics.unwrap();
    assert_eq!(
        (
            stats.device_count,
            stats.succeeded_count,
            stats.failed_count
        ),
        (2, 1, 1)
    );
    let rows = rows(hub).await;
    let off = rows.iter().find(|r| r["deviceId"] == "off").unwrap();
    assert_eq!(off["status"], "failed");
    assert_eq!(off["error"]["code"], "DeviceNotOnline");
    let on = rows.iter().find(|r| r["deviceId"] == "on").unwrap();
    assert_eq!(on["status"], "completed");
    assert_eq!(
        on["outcome"]["deviceMethodResponse"],
        json!({"status": 201, "payload": "rebooting"})
    );
}

#[tokio::test(start_paused = true)]
async fn the_maximum_execution_time_fails_what_is_left() {
    let setup = start(None, &[("silent", 1)]).await;
    let hub = &setup.hub;
    // The device takes the call and never answers (response timeout 300 s > 10 s).
    let _calls = method_device(hub, "silent").await;
    let began = tokio::time::Instant::now();
    let request = JobRequest::device_method(
        "slow",
        "IS_DEFINED(deviceId)",
        DirectMethodRequest::new("m", Value::Null).with_response_timeout(300),
    )
    .max_execution_time(10);
    hub.call(|s| s.create_job("slow", request))
        .await
        .unwrap()
        .unwrap();
    let done = wait_for(hub, "slow", JobStatus::Completed).await;
    // Ended by the 10 s limit (counted from the creation on the wall clock, so a little
    // less on the paused one), not by the 300 s response timeout.
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(300),
        "{took:?}"
    );
    let rows = rows(hub).await;
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(rows[0]["error"]["code"], TIMED_OUT_CODE);
    assert_eq!(done.device_job_statistics.unwrap().failed_count, 1);
}

#[tokio::test]
async fn cancel_stops_a_job_and_marks_its_rows() {
    let setup = start(None, &[("d1", 1)]).await;
    let hub = &setup.hub;
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let request = JobRequest::update_twin("later", "tags.floor = 1", json!({"tags": {"x": 1}}))
        .start_at(later);
    hub.call(|s| s.create_job("later", request))
        .await
        .unwrap()
        .unwrap();
    let cancelled = hub.call(|s| s.cancel_job("later")).await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    // Idempotent on a finished job; the twin never changed.
    let again = hub.call(|s| s.cancel_job("later")).await.unwrap().unwrap();
    assert_eq!(again, cancelled);
    let twin = hub.call(|s| s.get_twin("d1", None)).await.unwrap().unwrap();
    assert!(twin["tags"].get("x").is_none());

    // A running method job: the held call's row becomes `canceled`.
    let mut calls = method_device(hub, "d1").await;
    let request = JobRequest::device_method(
        "running",
        "deviceId = 'd1'",
        DirectMethodRequest::new("m", Value::Null),
    );
    hub.call(|s| s.create_job("running", request))
        .await
        .unwrap()
        .unwrap();
    let held = calls.recv().await.unwrap();
    let cancelled = hub
        .call(|s| s.cancel_job("running"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let rows = rows(hub).await;
    let row = rows.iter().find(|r| r["jobId"] == "running").unwrap();
    assert_eq!(row["status"], DeviceJobStatus::Canceled.as_str());
    // A late answer changes nothing.
    let _ = held.reply.send(DirectMethodResponse::new(200, Value::Null));
    assert_eq!(job(hub, "running").await.status, JobStatus::Cancelled);
    let unknown = hub
        .call(|s| s.cancel_job("nope"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(unknown.code, ErrorCode::JobNotFound);
}

#[tokio::test]
async fn jobs_survive_a_restart_and_running_ones_resume() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(Some(dir.path()), &[("d1", 1)]).await;
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let scheduled = JobRequest::update_twin("later", "tags.floor = 1", json!({"tags": {"x": 1}}))
        .start_at(later);
    first
        .hub
        .call(|s| s.create_job("later", scheduled))
        .await
        .unwrap()
        .unwrap();
    // A method job whose call is in flight when the emulator stops.
    let mut calls = method_device(&first.hub, "d1").await;
    let request = JobRequest::device_method(
        "inflight",
        "deviceId = 'd1'",
        DirectMethodRequest::new("m", Value::Null),
    );
    first
        .hub
        .call(|s| s.create_job("inflight", request))
        .await
        .unwrap()
        .unwrap();
    let held = calls.recv().await.unwrap();
    let _ = first.shutdown.send(true);
    first.scheduler.await.unwrap();
    drop(held);
    drop(first.hub);

    let state = HubState::load(Store::open(Some(dir.path())).unwrap()).unwrap();
    let (hub, _thread) = Hub::start(state).unwrap();
    assert_eq!(job(&hub, "later").await.status, JobStatus::Scheduled);
    assert_eq!(job(&hub, "inflight").await.status, JobStatus::Running);
    let mut calls = method_device(&hub, "d1").await;
    let (_shutdown, rx) = watch::channel(false);
    let _scheduler = super::start(hub.clone(), rx).await.unwrap();
    // The running job resumes: the call is made again and its answer recorded.
    let call = calls.recv().await.unwrap();
    call.reply
        .send(DirectMethodResponse::new(200, json!("again")))
        .unwrap();
    let done = wait_for(&hub, "inflight", JobStatus::Completed).await;
    assert_eq!(done.device_job_statistics.unwrap().succeeded_count, 1);
    assert_eq!(job(&hub, "later").await.status, JobStatus::Scheduled);
}

#[tokio::test]
async fn bad_jobs_are_refused_and_change_nothing() {
    let setup = start(None, &[("d1", 1)]).await;
    let hub = &setup.hub;
    let twin =
        |id: &str, condition: &str, patch: Value| JobRequest::update_twin(id, condition, patch);
    let method = |timeout: u32| {
        JobRequest::device_method(
            "m1",
            "deviceId = 'd1'",
            DirectMethodRequest::new("m", Value::Null).with_response_timeout(timeout),
        )
    };
    let cases = [
        (
            "bad_id",
            twin("bad_id", "tags.floor = 1", json!({"tags": {"a": 1}})),
        ),
        (
            "j1",
            twin("j1", "tags.floor = = 1", json!({"tags": {"a": 1}})),
        ),
        ("j1", twin("j1", "", json!({"tags": {"a": 1}}))),
        ("j1", twin("j1", "tags.floor = 1", json!({}))),
        (
            "j1",
            twin(
                "j1",
                "tags.floor = 1",
                json!({"properties": {"desired": 3}}),
            ),
        ),
        (
            "j1",
            twin("other", "tags.floor = 1", json!({"tags": {"a": 1}})),
        ),
        (
            "j1",
            twin("j1", "tags.floor = 1", json!({"tags": {"a": 1}})).max_execution_time(0),
        ),
        ("m1", method(4)),
        ("m1", method(301)),
    ];
    for (id, request) in cases {
        let err = hub
            .call(move |s| s.create_job(id, request))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ArgumentInvalid, "{id}: {err}");
    }
    assert!(
        hub.call(|s| s.query_jobs(None, None))
            .await
            .unwrap()
            .is_empty()
    );

    // Duplicate ids and the active-job quota.
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    for n in 0..MAX_ACTIVE_JOBS {
        let id = format!("j{n}");
        let request = twin(&id, "tags.floor = 1", json!({"tags": {"a": 1}})).start_at(later);
        hub.call(move |s| s.create_job(&id, request))
            .await
            .unwrap()
            .unwrap();
    }
    let again = twin("j0", "tags.floor = 1", json!({"tags": {"a": 1}})).start_at(later);
    let err = hub
        .call(|s| s.create_job("j0", again))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::JobAlreadyExists);
    let one_more = twin("jx", "tags.floor = 1", json!({"tags": {"a": 1}})).start_at(later);
    let err = hub
        .call(|s| s.create_job("jx", one_more))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::JobQuotaExceeded);
    let unknown = hub.call(|s| s.get_job("nope")).await.unwrap().unwrap_err();
    assert_eq!(unknown.code, ErrorCode::JobNotFound);
    // Filters compare case-insensitively.
    let found = hub
        .call(|s| {
            s.query_jobs(
                Some(&azure_iot_protocol::jobs::JobType::parse(
                    "ScheduleUpdateTwin",
                )),
                Some(&JobStatus::parse("Scheduled")),
            )
        })
        .await
        .unwrap();
    assert_eq!(found.len(), MAX_ACTIVE_JOBS);
}
