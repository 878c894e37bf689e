//! An HTTP `CONNECT` proxy for tests of clients that tunnel through one.

/// Request heads the proxy keeps for the test to read; later ones are dropped.
const HEADS_KEPT: usize = 16;
/// The longest request head the proxy reads.
const MAX_HEAD: usize = 8 * 1024;

/// A minimal HTTP CONNECT proxy for tests: it records each request head (the first
/// 16 not yet read), answers `answer`, and on 200 pipes bytes to `target`
/// (whatever host the request named).
pub async fn connect_proxy(
    target: std::net::SocketAddr,
    answer: &'static str,
) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the proxy");
    let address = listener.local_addr().expect("the proxy's address");
    let (heads, seen) = tokio::sync::mpsc::channel(HEADS_KEPT);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    if head.len() == MAX_HEAD {
                        return;
                    }
                    match client.read_u8().await {
                        Ok(byte) => head.push(byte),
                        Err(_) => return,
                    }
                }
                let _ = heads.try_send(String::from_utf8_lossy(&head).into_owned());
                if client.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                if answer.contains(" 200 ")
                    && let Ok(mut hub) = tokio::net::TcpStream::connect(target).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut hub).await;
                }
            });
        }
    });
    (address, seen)
}
