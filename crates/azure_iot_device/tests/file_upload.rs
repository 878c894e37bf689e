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

/// Pattern bytes `0..len`, counting what has been read; each read checks that what has been
/// read but not yet stored stays within what the uploader may hold.
struct Pattern {
    len: u64,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stored: std::sync::Arc<std::sync::atomic::AtomicU64>,
    most_ahead: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl tokio::io::AsyncRead for Pattern {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::sync::atomic::Ordering::SeqCst;
        let at = self.read.load(SeqCst);
        let n = (self.len - at).min(buf.remaining() as u64).min(64 * 1024);
        let bytes: Vec<u8> = (at..at + n).map(|i| (i % 251) as u8).collect();
        buf.put_slice(&bytes);
        let read = self.read.fetch_add(n, SeqCst) + n;
        let ahead = read - self.stored.load(SeqCst);
        self.most_ahead.fetch_max(ahead, SeqCst);
        std::task::Poll::Ready(Ok(()))
    }
}

fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A file larger than the uploader may hold streams in blocks: what is read ahead of what is
/// stored never exceeds the blocks in flight plus the one being read, progress rises to the
/// size, and the blob reads back byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_streams_in_blocks_with_bounded_memory() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    const MIB: u64 = 1024 * 1024;
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("big").await;
    let cs = format!(
        "HostName={};DeviceId=big;SharedAccessKey={key}",
        hub.hostname()
    );
    let client = DeviceClient::from_connection_string(&cs, options(&hub, Transport::Mqtt))
        .await
        .unwrap();
    let len = 26 * MIB + 12_345;
    let stored = Arc::new(AtomicU64::new(0));
    let most_ahead = Arc::new(AtomicU64::new(0));
    let reader = Pattern {
        len,
        read: Arc::new(AtomicU64::new(0)),
        stored: stored.clone(),
        most_ahead: most_ahead.clone(),
    };
    let mut reports = Vec::new();
    let size = client
        .upload_file_from_with_progress("big.bin", reader, |n| {
            stored.store(n, SeqCst);
            reports.push(n);
        })
        .await
        .unwrap();
    assert_eq!(size, len);
    assert_eq!(reports.len(), 7, "7 blocks of 4 MiB: {reports:?}");
    assert!(reports.windows(2).all(|w| w[0] < w[1]) && reports.last() == Some(&len));
    let ahead = most_ahead.load(SeqCst);
    assert!(
        ahead <= 5 * 4 * MIB,
        "{ahead} bytes read ahead of what was stored"
    );
    assert!(uploaded(&hub, &service, "big/big.bin").await == pattern(len));
    client.close().await;
    hub.shutdown().await;
}

/// Relays `from` → `to`; the first connection is cut after `cut_after` bytes towards `to`.
async fn cutting_relay(to: std::net::SocketAddr, cut_after: usize) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                return;
            };
            let limit = if first { Some(cut_after) } else { None };
            first = false;
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upward = async {
                    let mut sent = 0;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = client_read.read(&mut buf).await.unwrap_or(0);
                        if n == 0 || limit.is_some_and(|l| sent + n > l) {
                            return;
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                    }
                };
                let downward = tokio::io::copy(&mut server_read, &mut client_write);
                // Either direction ending ends the relayed connection (both halves dropped).
                tokio::select! {
                    () = upward => {}
                    _ = downward => {}
                }
            });
        }
    });
    address
}

/// A connection cut in the middle of an upload: the block on it is sent again on a new
/// connection and the upload completes, intact.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_off_midway_resumes_and_completes() {
    const MIB: u64 = 1024 * 1024;
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("cut").await;
    let cs = format!(
        "HostName={};DeviceId=cut;SharedAccessKey={key}",
        hub.hostname()
    );
    let client = DeviceClient::from_connection_string(&cs, options(&hub, Transport::Mqtt))
        .await
        .unwrap();
    let mut info = client.get_storage_info_for_blob("cut.bin").await.unwrap();
    // Through a relay that cuts its first connection 1 MiB in (inside a block).
    let relay = cutting_relay(hub.blob_addr(), MIB as usize).await;
    info.host_name = format!("localhost:{}", relay.port());
    let len = 10 * MIB;
    let data = pattern(len);
    let size = client
        .upload_to_blob(&info, std::io::Cursor::new(data.clone()), |_| {})
        .await
        .unwrap();
    assert_eq!(size, len);
    client
        .notify_blob_upload_status(&info.correlation_id, true, 201, "ok")
        .await
        .unwrap();
    assert!(uploaded(&hub, &service, "cut/cut.bin").await == data);
    client.close().await;
    hub.shutdown().await;
}
