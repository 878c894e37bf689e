//! Helpers shared by this crate's integration tests (each test file includes this module).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use fe2o3_amqp::frames::sasl::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Writes one SASL frame (size, doff 2, type 1, the encoded body).
pub async fn write_sasl(stream: &mut (impl AsyncWrite + Unpin), frame: &Frame) {
    let body = serde_amqp::to_vec(frame).unwrap();
    let mut bytes = u32::try_from(body.len() + 8)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    bytes.extend_from_slice(&[2, 1, 0, 0]);
    bytes.extend_from_slice(&body);
    stream.write_all(&bytes).await.unwrap();
}

/// Reads one SASL frame.
pub async fn read_sasl(stream: &mut (impl AsyncRead + Unpin)) -> Frame {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.unwrap();
    let size = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
    let mut body = vec![0u8; size - 8];
    stream.read_exact(&mut body).await.unwrap();
    serde_amqp::from_slice(&body).unwrap()
}
