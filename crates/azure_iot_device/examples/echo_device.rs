//! A device agent for tests and demos: it answers, echoes and reports everything the service
//! side sends, and says so on standard output, one JSON object per line.
//!
//! * Every direct method is answered with status 200 and
//!   `{"method": <name>, "payload": <request payload>}`; it prints
//!   `{"event":"method","name":…,"payload":…}`.
//! * Every cloud-to-device message prints
//!   `{"event":"c2d","body":…,"properties":{…},"messageId":…,"correlationId":…,"contentType":…,"contentEncoding":…}`
//!   (the body as UTF-8 text, invalid bytes replaced; absent ids are `null`).
//! * Every desired-properties patch is reported back as reported properties (the same keys
//!   and values, without `$`-prefixed metadata such as `$version`), then it prints
//!   `{"event":"desired","version":N,"patch":{…},"reportedVersion":M}`: once that line is
//!   out, the reported properties are already visible to the service.
//! * `{"event":"connected"}` is printed once, after the subscriptions to methods,
//!   cloud-to-device messages and desired patches are in place: a script that waits for that
//!   line can start sending.
//!
//! Each line is flushed as soon as it is written. Errors go to standard error.
//!
//! It disconnects cleanly (MQTT DISCONNECT, or AMQP detach, end and close) and exits with status 0 on Ctrl-C, SIGTERM, or
//! when its standard input closes: keep stdin open (a pipe, or the terminal; Ctrl-D ends it),
//! as `< /dev/null` makes it exit at once. It exits with an error if the client's streams end (credentials refused
//! on reconnect, retries exhausted).
//!
//! ```sh
//! # Against the emulator (`azure-iot hub start --data-dir ./hub`), create a device, then
//! export IOTHUB_DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=echo1;SharedAccessKey=…'
//! export IOTHUB_CA_PEM=./hub/ca.pem
//! cargo run -p azure_iot_device --example echo_device
//! ```

mod common;

use std::io::Write;

use azure_iot_device::{DesiredPatch, DeviceClient, Message, MethodRequest, MethodResponse};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = common::connect().await?;
    let mut methods = client.method_requests().await?;
    let mut messages = client.cloud_to_device_messages().await?;
    let mut patches = client.desired_property_patches().await?;
    emit(&json!({"event": "connected"}))?;

    let mut stdin_closed = watch_stdin();
    let ended = loop {
        tokio::select! {
            call = methods.recv() => match call {
                Some(call) => answer(&client, call).await?,
                None => break Some("direct methods"),
            },
            message = messages.recv() => match message {
                Some(message) => emit(&c2d_line(&message))?,
                None => break Some("cloud-to-device messages"),
            },
            patch = patches.recv() => match patch {
                Some(patch) => report_back(&client, patch).await?,
                None => break Some("desired-property patches"),
            },
            _ = &mut stdin_closed => break None,
            _ = tokio::signal::ctrl_c() => break None,
            _ = terminated() => break None,
        }
    };
    client.close().await;
    match ended {
        None => Ok(()),
        Some(stream) => Err(format!(
            "the stream of {stream} ended: the client is disconnected ({:?})",
            client.connection_state()
        )
        .into()),
    }
}

/// Answers a direct method with its own name and payload, and says so.
async fn answer(client: &DeviceClient, call: MethodRequest) -> std::io::Result<()> {
    emit(&json!({"event": "method", "name": call.name, "payload": call.payload}))?;
    let payload = json!({"method": call.name, "payload": call.payload});
    if let Err(e) = client
        .respond_to_method(MethodResponse::new(call.request_id, 200, payload))
        .await
    {
        // The caller sees a timeout; the agent keeps serving.
        eprintln!("answering method {}: {e}", call.name);
    }
    Ok(())
}

/// The JSON line for a cloud-to-device message.
fn c2d_line(message: &Message) -> Value {
    // Repeated property names: the last one wins, as in most JSON readers.
    let properties: Map<String, Value> = message
        .properties()
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    let system = message.system_properties();
    json!({
        "event": "c2d",
        "body": String::from_utf8_lossy(message.body()),
        "properties": properties,
        "messageId": system.message_id,
        "correlationId": system.correlation_id,
        "contentType": system.content_type,
        "contentEncoding": system.content_encoding,
    })
}

/// Reports a desired patch back as reported properties, then prints it.
async fn report_back(client: &DeviceClient, patch: DesiredPatch) -> std::io::Result<()> {
    // `$version` (and `$metadata`, in the whole document a reconnect delivers) belong to the
    // hub: a reported patch may not set them.
    let reported: Map<String, Value> = patch
        .patch
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| !name.starts_with('$'))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let reported_version = match client
        .update_reported_properties(&Value::Object(reported))
        .await
    {
        Ok(version) => Some(version),
        Err(e) => {
            eprintln!("reporting desired version {} back: {e}", patch.version);
            None
        }
    };
    emit(&json!({
        "event": "desired",
        "version": patch.version,
        "patch": patch.patch,
        "reportedVersion": reported_version,
    }))
}

/// Writes one JSON line to standard output and flushes it, so a reader sees it at once.
fn emit(line: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// SIGTERM on Unix; never elsewhere.
async fn terminated() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        term.recv().await;
        return;
    }
    std::future::pending::<()>().await
}

/// Completes when standard input reaches its end (or fails). Read on a thread of its own:
/// the runtime has no asynchronous stdin here, and the thread dies with the process.
fn watch_stdin() -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
    });
    rx
}
