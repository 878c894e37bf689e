use std::sync::Arc;
use std::time::Duration;

use azure_iot_core::sas::{ResourceUri, SasToken, SharedAccessKey};
use azure_iot_protocol::mqtt::codec::{
    ConnAck, Connect, MAX_PACKET_BYTES, Packet, Publish, QoS, Subscribe, read_packet, write_packet,
};
use bytes::BytesMut;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::HubEndpoint;

/// How long a test waits for a packet before failing.
const WAIT: Duration = Duration::from_secs(10);

/// A byte stream an [`MqttClient`] speaks over: TLS to the MQTT port, or a WebSocket.
pub trait MqttIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> MqttIo for T {}

pub struct MqttClient {
    stream: Box<dyn MqttIo>,
    buffer: BytesMut,
    next_pkid: u16,
}

/// A SAS token for `device`/`module` signed with `key_b64`, valid for `ttl`.
pub fn device_token(
    hub: &HubEndpoint,
    device: &str,
    module: Option<&str>,
    key_b64: &str,
    ttl: Duration,
) -> String {
    let key = SharedAccessKey::from_base64(key_b64).unwrap();
    let resource = match module {
        Some(m) => ResourceUri::module(&hub.hostname, device, m),
        None => ResourceUri::device(&hub.hostname, device),
    };
    SasToken::generate_with_ttl(&resource, &key, None, ttl)
        .secret()
        .to_owned()
}

impl MqttClient {
    /// Opens TLS to the emulator's MQTT port (no CONNECT yet).
    pub async fn open(hub: &HubEndpoint) -> Self {
        Self::open_with(hub, hub.tls_config()).await
    }

    /// Opens TLS presenting a client certificate (DER chain, leaf first, and its key).
    pub async fn open_with_certificate(
        hub: &HubEndpoint,
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
    ) -> Self {
        Self::open_with(hub, hub.tls_config_with_certificate(chain, key)).await
    }

    /// Sends CONNECT with the IoT Hub user name and no password (X.509 authentication).
    pub async fn connect_x509(mut self, hub: &HubEndpoint, client_id: &str) -> (Self, ConnAck) {
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 60;
        connect.login = Some(azure_iot_protocol::mqtt::codec::Login::new(
            format!(
                "{}/{client_id}/?api-version=2021-04-12&DeviceClientType=test",
                hub.hostname
            ),
            "",
        ));
        self.send(Packet::Connect(connect)).await;
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => (self, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn open_with(hub: &HubEndpoint, config: rustls::ClientConfig) -> Self {
        let tcp = TcpStream::connect(hub.mqtt_addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream: TlsStream<TcpStream> = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        Self::over(stream)
    }

    /// A client over `stream`, already open (a WebSocket, see [`crate::websocket_stream`]);
    /// no CONNECT yet.
    pub fn over(stream: impl MqttIo + 'static) -> Self {
        Self {
            stream: Box::new(stream),
            buffer: BytesMut::new(),
            next_pkid: 0,
        }
    }

    /// Opens and sends CONNECT with the IoT Hub user name for `client_id`; returns the CONNACK.
    pub async fn connect(
        hub: &HubEndpoint,
        client_id: &str,
        password: &str,
        clean: bool,
        keep_alive: u16,
    ) -> (Self, ConnAck) {
        let username = format!(
            "{}/{client_id}/?api-version=2021-04-12&DeviceClientType=test",
            hub.hostname
        );
        Self::connect_as(hub, client_id, &username, password, clean, keep_alive).await
    }

    pub async fn connect_as(
        hub: &HubEndpoint,
        client_id: &str,
        username: &str,
        password: &str,
        clean: bool,
        keep_alive: u16,
    ) -> (Self, ConnAck) {
        let mut client = Self::open(hub).await;
        let mut connect = Connect::new(client_id);
        connect.keep_alive = keep_alive;
        connect.clean_session = clean;
        connect.set_login(username, password);
        client.send(Packet::Connect(connect)).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        write_packet(&packet, &mut out).unwrap();
        // A write may fail if the server already closed; the following recv reports it.
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.flush().await;
    }

    /// Sends bytes as they are (for packets the codec would refuse to write).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// The next packet, or `None` if the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(packet) = read_packet(&mut self.buffer, MAX_PACKET_BYTES).unwrap() {
                    return Some(packet);
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the emulator answered within the wait")
    }

    /// Asserts that the server closes the connection (after any packets already in flight).
    pub async fn expect_closed(&mut self) {
        while let Some(packet) = self.recv().await {
            assert!(
                !matches!(packet, Packet::ConnAck(_) | Packet::SubAck(_)),
                "expected the connection to close, got {packet:?}"
            );
        }
    }

    pub fn pkid(&mut self) -> u16 {
        self.next_pkid += 1;
        self.next_pkid
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>, qos: QoS) -> u16 {
        let mut publish = Publish::new(topic, qos, payload.into());
        if qos != QoS::AtMostOnce {
            publish.pkid = self.pkid();
        }
        let pkid = publish.pkid;
        self.send(Packet::Publish(publish)).await;
        pkid
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Packet {
        let mut subscribe = Subscribe::new(filter, qos);
        subscribe.pkid = self.pkid();
        self.send(Packet::Subscribe(subscribe)).await;
        self.recv().await.expect("an answer to SUBSCRIBE")
    }

    /// The next PUBLISH from the server, acknowledging it if it is QoS 1.
    pub async fn next_publish(&mut self) -> Publish {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => {
                    if p.qos == QoS::AtLeastOnce {
                        self.send(Packet::PubAck(
                            azure_iot_protocol::mqtt::codec::PubAck::new(p.pkid),
                        ))
                        .await;
                    }
                    return p;
                }
                Some(Packet::PubAck(_)) | Some(Packet::PingResp) => continue,
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }
}
