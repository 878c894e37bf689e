//! Connects with an X.509 client certificate instead of a key, and sends one message.
//!
//! The certificate is either self-signed and registered with the device by its SHA-1
//! thumbprint, or signed by a CA the hub knows (its common name must then be the device id).
//!
//! ```sh
//! # A self-signed certificate for device dev-x509:
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
//!   -keyout key.pem -out cert.pem -days 30 -subj /CN=dev-x509
//! openssl x509 -in cert.pem -noout -fingerprint -sha1 | cut -d= -f2 | tr -d :   # thumbprint
//! # Register dev-x509 with that thumbprint as primary and secondary (authentication type
//! # selfSigned), e.g. with a service SDK's create_device_with_x509, against the emulator
//! # started with `azure-iot hub start --data-dir ./hub`. Then:
//! export IOTHUB_HOSTNAME=localhost IOTHUB_DEVICE_ID=dev-x509
//! export IOTHUB_DEVICE_CERT_PEM=cert.pem IOTHUB_DEVICE_KEY_PEM=key.pem
//! export IOTHUB_CA_PEM=./hub/ca.pem
//! cargo run -p azure_iot_device --example x509
//! ```
//!
//! `IOTHUB_DEVICE_CERT_PEM` may hold a chain (device certificate first, then intermediates);
//! the key may be PKCS#8, PKCS#1 or SEC1.

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use azure_iot_device::{DeviceClient, Message, X509Certificate};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host_name = common::required_env("IOTHUB_HOSTNAME", "the hub's host name")?;
    let device_id = common::required_env("IOTHUB_DEVICE_ID", "the device id")?;
    let cert_path = common::required_env(
        "IOTHUB_DEVICE_CERT_PEM",
        "the path of the device certificate (PEM)",
    )?;
    let key_path = common::required_env(
        "IOTHUB_DEVICE_KEY_PEM",
        "the path of the device's private key (PEM)",
    )?;
    let certificate = X509Certificate::from_pem(
        &std::fs::read_to_string(&cert_path)?,
        &std::fs::read_to_string(&key_path)?,
    )?;

    // No module: this is the device itself.
    let client = DeviceClient::from_x509(
        &host_name,
        &device_id,
        None,
        &certificate,
        common::options()?,
    )
    .await?;
    println!("connected as {device_id} with the certificate in {cert_path}");

    let message = Message::builder("{\"authenticated\":\"x509\"}")
        .content_type("application/json")
        .content_encoding("utf-8")
        .build()?;
    client.send_event(message).await?;
    println!("message acknowledged by the hub");
    client.close().await;
    Ok(())
}
