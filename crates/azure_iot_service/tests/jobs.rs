//! Jobs v2 with the service client against the in-process emulator over real TLS, with this
//! project's device client connected: a twin job reaches the device's desired properties, a
//! method job invokes the device and records its answer, an offline device fails, cancel,
//! paging, the hub's refusals, and a job surviving an emulator restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{ClientOptions, DeviceClient, MethodResponse};
use azure_iot_emulator::EmulatorHandle;
use azure_iot_service::{
    Device, DeviceJobStatus, DirectMethodRequest, ErrorKind, JobRequest, JobResponse, JobSchedule,
    JobStatus, JobType, ServiceClient, ServiceClientOptions, TwinPatch,
};
use azure_iot_test::emulator;
use futures_util::TryStreamExt;
use serde_json::json;
use time::OffsetDateTime;

const WAIT: Duration = Duration::from_secs(20);

fn service(hub: &EmulatorHandle) -> ServiceClient {
    ServiceClient::from_connection_string(
        hub.connection_string("iothubowner").unwrap(),
        ServiceClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .https_port(hub.https_addr().port())
            .amqp_port(hub.amqp_addr().port())
            .request_timeout(WAIT),
    )
    .unwrap()
}

async fn connect_device(hub: &EmulatorHandle, device: &Device) -> DeviceClient {
    let cs = format!(
        "HostName={};DeviceId={};SharedAccessKey={}",
        hub.hostname(),
        device.device_id,
        device.primary_key().unwrap()
    );
    DeviceClient::from_connection_string(
        &cs,
        ClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .port(hub.mqtt_addr().port())
            .operation_timeout(WAIT),
    )
    .await
    .unwrap()
}

/// Reads the job until it has finished (each read is a round trip; no sleeping).
async fn finished(api: &ServiceClient, id: &str) -> JobResponse {
    tokio::time::timeout(WAIT, async {
        loop {
            let job = api.get_job(id).await.unwrap();
            if job.status.is_finished() {
                return job;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the job finishes")
}

#[tokio::test]
async fn a_twin_job_reaches_the_devices_desired_properties() {
    let hub = emulator().await;
    let api = service(&hub);
    let device = api.create_device(&Device::new("j1")).await.unwrap();
    api.create_device(&Device::new("j2")).await.unwrap();
    api.create_device(&Device::new("other")).await.unwrap();
    let client = connect_device(&hub, &device).await;
    let mut patches = client.desired_property_patches().await.unwrap();

    let patch = TwinPatch::new()
        .desired(json!({"interval": 7}))
        .unwrap()
        .tags(json!({"batch": "b1"}))
        .unwrap();
    let created = api
        .schedule_twin_update(
            "twin-job",
            "deviceId IN ['j1', 'j2']",
            &patch,
            JobSchedule::now(),
        )
        .await
        .unwrap();
    assert_eq!(created.job_type, JobType::ScheduleUpdateTwin);
    let done = finished(&api, "twin-job").await;
    assert_eq!(done.status, JobStatus::Completed);
    let stats = done.device_job_statistics.unwrap();
    assert_eq!((stats.device_count, stats.succeeded_count), (2, 2));

    let desired = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(desired.patch["interval"], json!(7));
    let untouched = api.get_twin("other").await.unwrap();
    assert_eq!(untouched.properties.desired.get("interval"), None);

    let rows = api
        .query_device_jobs("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'twin-job'")
        .all()
        .await
        .unwrap();
    let mut devices: Vec<_> = rows.iter().map(|r| r.device_id.as_str()).collect();
    devices.sort_unstable();
    assert_eq!(devices, ["j1", "j2"]);
    assert!(rows.iter().all(|r| r.status == DeviceJobStatus::Completed));
    let mut query = api.query_jobs(
        Some(JobType::ScheduleUpdateTwin),
        Some(JobStatus::Completed),
    );
    let page = query.next_page().await.unwrap().unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(query.item_type(), Some("JobResponse"));
    assert!(
        api.query_jobs(Some(JobType::ScheduleDeviceMethod), None)
            .all()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_method_job_invokes_the_device_and_an_offline_one_fails() {
    let hub = emulator().await;
    let api = service(&hub);
    let device = api.create_device(&Device::new("m-on")).await.unwrap();
    api.create_device(&Device::new("m-off")).await.unwrap();
    let client = connect_device(&hub, &device).await;
    let mut requests = client.method_requests().await.unwrap();
    let responder = {
        let client = client.clone();
        tokio::spawn(async move {
            let request = requests.recv().await.unwrap();
            client
                .respond_to_method(MethodResponse::new(
                    request.request_id,
                    200,
                    json!({"echo": request.payload, "method": request.name}),
                ))
                .await
                .unwrap();
        })
    };
    let method = DirectMethodRequest::new("reboot", json!({"delay": 2})).with_response_timeout(10);
    api.schedule_device_method(
        "method-job",
        "deviceId IN ['m-on', 'm-off']",
        &method,
        JobSchedule::now().max_execution_time(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let done = finished(&api, "method-job").await;
    responder.await.unwrap();
    let stats = done.device_job_statistics.unwrap();
    assert_eq!((stats.succeeded_count, stats.failed_count), (1, 1));
    let rows = api
        .query_device_jobs("SELECT * FROM devices.jobs")
        .all()
        .await
        .unwrap();
    let on = rows.iter().find(|r| r.device_id == "m-on").unwrap();
    let answer = on
        .outcome
        .as_ref()
        .unwrap()
        .device_method_response
        .as_ref()
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.payload,
        json!({"echo": {"delay": 2}, "method": "reboot"})
    );
    let off = rows.iter().find(|r| r.device_id == "m-off").unwrap();
    assert_eq!(off.status, DeviceJobStatus::Failed);
    assert_eq!(off.error.as_ref().unwrap().code, "DeviceNotOnline");
}

#[tokio::test]
async fn cancel_paging_and_refusals() {
    let hub = emulator().await;
    let api = service(&hub);
    api.create_device(&Device::new("c1")).await.unwrap();
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let patch = TwinPatch::new().tags(json!({"x": 1})).unwrap();
    for id in ["later-1", "later-2", "later-3"] {
        let job = api
            .schedule_twin_update(id, "deviceId = 'c1'", &patch, JobSchedule::at(later))
            .await
            .unwrap();
        assert_eq!(job.status, JobStatus::Scheduled);
    }
    let cancelled = api.cancel_job("later-2").await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        api.get_job("later-2").await.unwrap().status,
        JobStatus::Cancelled
    );

    let mut pages = api.query_jobs(None, None).page_size(2);
    assert_eq!(pages.next_page().await.unwrap().unwrap().len(), 2);
    assert!(pages.continuation_token().is_some());
    assert_eq!(pages.next_page().await.unwrap().unwrap().len(), 1);
    assert!(pages.next_page().await.unwrap().is_none());
    let scheduled: Vec<JobResponse> = api
        .query_jobs(None, Some(JobStatus::Scheduled))
        .into_stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(scheduled.len(), 2);

    let duplicate = api
        .schedule_twin_update("later-1", "deviceId = 'c1'", &patch, JobSchedule::at(later))
        .await
        .unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::AlreadyExists, "{duplicate}");
    let malformed = api
        .schedule_twin_update("bad-query", "deviceId = = 'c1'", &patch, JobSchedule::now())
        .await
        .unwrap_err();
    assert_eq!(malformed.kind(), ErrorKind::BadRequest, "{malformed}");
    let unknown = api.get_job("nope").await.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
    assert_eq!(unknown.error_code(), Some("JobNotFound"));
    let unknown = api.cancel_job("nope").await.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
    // Refused before anything is sent.
    let bad_timeout = DirectMethodRequest::new("m", json!(null)).with_response_timeout(1);
    let err = api
        .schedule_device_method("m", "deviceId = 'c1'", &bad_timeout, JobSchedule::now())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = api
        .create_job(&JobRequest::update_twin(
            "bad_id",
            "true",
            json!({"tags": {"a": 1}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn a_scheduled_job_survives_an_emulator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        azure_iot_emulator::Emulator::builder()
            .data_dir(dir.path())
            .https_port(0)
            .mqtt_port(0)
            .amqp_port(0)
            .start()
    };
    let first = start().await.unwrap();
    let api = service(&first);
    api.create_device(&Device::new("r1")).await.unwrap();
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let patch = TwinPatch::new().tags(json!({"x": 1})).unwrap();
    let created = api
        .schedule_twin_update("kept", "deviceId = 'r1'", &patch, JobSchedule::at(later))
        .await
        .unwrap();
    first.shutdown().await;

    let second = start().await.unwrap();
    let api = service(&second);
    let kept = api.get_job("kept").await.unwrap();
    assert_eq!(kept.status, JobStatus::Scheduled);
    assert_eq!(kept.start_time, created.start_time);
    assert_eq!(kept.created_time, created.created_time);
    second.shutdown().await;
}
