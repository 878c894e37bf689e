//! File upload from the device client over real TLS against the emulator: the hub's SAS
//! answer, the blob written to the emulator's blob endpoint, the outcome reported, whatever
//! transport the client is connected over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use azure_iot_device::{ClientOptions, DeviceClient, ErrorKind, Transport};
use azure_iot_emulator::EmulatorHandle;
use azure_iot_test::{HubEndpoint, RestClient, emulator, http_client};

fn options(hub: &EmulatorHandle, transport: Transport) -> ClientOptions {
    let port = match transport {
        Transport::Amqp => hub.amqp_addr().port(),
        _ => hub.mqtt_addr().port(),
    };
    ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .transport(transport)
        .port(port)
        .https_port(hub.https_addr().port())
}

/// The bytes of an uploaded file, read through the emulator's own files API.
async fn uploaded(hub: &EmulatorHandle, service: &RestClient, name: &str) -> Vec<u8> {
    let ep = HubEndpoint::of(hub);
    let response = http_client(&ep)
        .get(format!(
            "https://localhost:{}/$emulator/files/{name}",
            hub.https_addr().port()
        ))
        .header("Authorization", service.token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{name}");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_device_uploads_a_file_over_mqtt_and_over_amqp() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("cam-1").await;
    let cs = format!(
        "HostName={};DeviceId=cam-1;SharedAccessKey={key}",
        hub.hostname()
    );
    for (transport, name) in [
        (Transport::Mqtt, "snaps/one two.jpg"),
        (Transport::Amqp, "b+c.bin"),
    ] {
        let client = DeviceClient::from_connection_string(&cs, options(&hub, transport))
            .await
            .unwrap();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        client.upload_file(name, data.clone()).await.unwrap();
        assert_eq!(
            uploaded(&hub, &service, &format!("cam-1/{name}")).await,
            data
        );
        client.close().await;
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn the_three_steps_one_by_one_and_what_is_refused() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("cam-2").await;
    let cs = format!(
        "HostName={};DeviceId=cam-2;SharedAccessKey={key}",
        hub.hostname()
    );
    let client = DeviceClient::from_connection_string(&cs, options(&hub, Transport::Mqtt))
        .await
        .unwrap();

    let info = client
        .get_storage_info_for_blob("report.csv")
        .await
        .unwrap();
    assert_eq!(info.blob_name, "cam-2/report.csv");
    assert!(info.sas_token.starts_with('?'), "{info:?}");
    assert!(
        !format!("{info:?}").contains("sig="),
        "Debug shows no SAS: {info:?}"
    );
    // The application writes the blob itself, with the SAS URI.
    let put = http_client(&HubEndpoint::of(&hub))
        .put(info.sas_uri())
        .header("x-ms-blob-type", "BlockBlob")
        .body("a,b\n1,2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    client
        .notify_blob_upload_status(&info.correlation_id, true, 201, "ok")
        .await
        .unwrap();
    assert_eq!(
        uploaded(&hub, &service, "cam-2/report.csv").await,
        b"a,b\n1,2\n"
    );

    // The same correlation id twice: the hub has ended that upload.
    let again = client
        .notify_blob_upload_status(&info.correlation_id, true, 201, "ok")
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::InvalidArgument, "{again}");
    // No name: refused before anything is sent.
    let empty = client.get_storage_info_for_blob("").await.unwrap_err();
    assert_eq!(empty.kind(), ErrorKind::InvalidArgument);
    // A SAS URI with a forged signature is refused by storage; the failure is reported.
    let mut forged = client.get_storage_info_for_blob("x.bin").await.unwrap();
    forged.sas_token = forged.sas_token.replace("sig=", "sig=AA");
    let refused = http_client(&HubEndpoint::of(&hub))
        .put(forged.sas_uri())
        .header("x-ms-blob-type", "BlockBlob")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    client.close().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_leaks_nothing() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("cam-3").await;
    let cs = format!(
        "HostName={};DeviceId=cam-3;SharedAccessKey={key}",
        hub.hostname()
    );
    let client = DeviceClient::from_connection_string(&cs, options(&hub, Transport::Mqtt))
        .await
        .unwrap();
    // The device is deleted after it connected: the hub refuses its file-upload request.
    assert_eq!(service.delete("/devices/cam-3").await.status, 204);
    let e = client.upload_file("gone.txt", "x").await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unauthorized | ErrorKind::Refused),
        "{e}"
    );
    assert!(!e.to_string().contains("sig="), "{e}");
    client.close().await;
    hub.shutdown().await;
}
