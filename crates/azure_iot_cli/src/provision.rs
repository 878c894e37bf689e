//! `azure-iot device provision`: register a device with the Device Provisioning Service and
//! print where it was assigned (and, for keys, its device connection string).
//!
//! Without `--endpoint`, the local emulator of `--data-dir` is used when its `hub.json` lists
//! a DPS (its id scope, host, ports and CA); otherwise DPS's global endpoint. `--endpoint`
//! naming the emulator's host still takes its ports and CA from the data directory.
//!
//! `--tpm` attests with a TPM 2.0 (`/dev/tpmrm0` by default, `--tpm-device` or
//! `--tpm-simulator host:port`); `device tpm-info` prints what a TPM enrollment needs.

use std::path::PathBuf;
use std::time::Duration;

use azure_iot_provisioning_device::{
    Attestation, GLOBAL_ENDPOINT, HubCredential, ProvisioningDeviceClient, TpmAttestation,
    TpmLocation,
};
use clap::Args;

use crate::simulate::TransportArg;
use crate::target::{Local, read_local};

/// `device provision` options.
#[derive(Args)]
pub(crate) struct ProvisionArgs {
    /// The DPS id scope. Default: the local emulator's.
    #[arg(long)]
    id_scope: Option<String>,
    /// The registration id. Default for --cert: the certificate's common name.
    #[arg(long)]
    registration_id: Option<String>,
    /// An individual enrollment's symmetric key (base64).
    #[arg(long, env = "DPS_SYMMETRIC_KEY", hide_env_values = true,
          conflicts_with_all = ["group_key", "cert", "tpm"],
          required_unless_present_any = ["group_key", "cert", "tpm"])]
    symmetric_key: Option<String>,
    /// An enrollment group's symmetric key (base64); the device key is derived from it.
    #[arg(
        long,
        env = "DPS_GROUP_KEY",
        hide_env_values = true,
        conflicts_with_all = ["cert", "tpm"]
    )]
    group_key: Option<String>,
    /// The device certificate chain (PEM, device certificate first).
    #[arg(long, requires = "key", conflicts_with = "tpm")]
    cert: Option<PathBuf>,
    /// The device certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Attest with a TPM 2.0 (HTTPS, AMQP or AMQP over WebSockets); the registration id
    /// defaults to the one derived from its endorsement key.
    #[arg(long)]
    tpm: bool,
    /// Where the TPM is (with --tpm).
    #[command(flatten)]
    tpm_location: TpmArgs,
    /// The transport to DPS (and the one the printed connection string is tested with: none).
    #[arg(long, value_enum, default_value = "mqtt")]
    transport: TransportArg,
    /// DPS's `host[:port]`. Default: the local emulator's when --data-dir has one, else
    /// global.azure-devices-provisioning.net.
    #[arg(long)]
    endpoint: Option<String>,
    /// Custom data for a custom allocation policy (JSON).
    #[arg(long)]
    payload: Option<String>,
    /// How long the registration may take, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The local emulator's data directory (its hub.json and ca.pem).
    #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
    data_dir: PathBuf,
    /// A CA certificate (PEM) to trust instead of the system's roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// Which TPM to use.
#[derive(Args)]
pub(crate) struct TpmArgs {
    /// A TPM character device (default /dev/tpmrm0, else /dev/tpm0).
    #[arg(long, conflicts_with = "tpm_simulator")]
    tpm_device: Option<PathBuf>,
    /// A TPM simulator's command port, `host:port` (swtpm socket --tpm2, the TCG simulator).
    #[arg(long)]
    tpm_simulator: Option<String>,
}

impl TpmArgs {
    /// The TPM these arguments name.
    fn location(&self) -> Result<TpmLocation, String> {
        if let Some(path) = &self.tpm_device {
            return Ok(TpmLocation::Device(path.clone()));
        }
        match &self.tpm_simulator {
            Some(endpoint) => match split_endpoint(endpoint)? {
                (host, Some(port)) => Ok(TpmLocation::Simulator { host, port }),
                (_, None) => Err("--tpm-simulator needs host:port".to_owned()),
            },
            None => Ok(TpmLocation::DefaultDevice),
        }
    }
}

/// Runs `device tpm-info`.
pub(crate) async fn tpm_info(args: TpmArgs) -> Result<(), String> {
    let tpm = TpmAttestation::open(args.location()?)
        .await
        .map_err(|e| e.to_string())?;
    crate::print_line(&format!(
        "registration id:  {}\nendorsement key:  {}\nstorage root key: {}",
        tpm.registration_id(),
        tpm.endorsement_key_base64(),
        tpm.storage_root_key_base64()
    ))
}

/// Where to register: host, port (if not the transport's), id scope, roots.
struct Target {
    host: String,
    port: Option<u16>,
    id_scope: String,
    ca_pem: Option<String>,
}

/// Runs `device provision`.
pub(crate) async fn run(args: ProvisionArgs) -> Result<(), String> {
    let target = target(&args)?;
    let attestation = attestation(&args).await?;
    let transport = args.transport.transport();
    let mut builder = ProvisioningDeviceClient::builder(target.id_scope, attestation)
        .global_endpoint(target.host)
        .transport(transport)
        .timeout(Duration::from_secs(args.timeout));
    if let Some(port) = target.port {
        builder = builder.port(port);
    }
    if let Some(pem) = target.ca_pem {
        builder = builder.trusted_ca_pem(pem);
    }
    if let Some(id) = &args.registration_id {
        builder = builder.registration_id(id);
    }
    if let Some(text) = &args.payload {
        let payload = serde_json::from_str(text).map_err(|e| format!("--payload: {e}"))?;
        builder = builder.payload(payload);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let result = client.register().await.map_err(|e| e.to_string())?;
    let mut lines = vec![
        format!("assigned hub:      {}", result.assigned_hub()),
        format!("device id:         {}", result.device_id()),
    ];
    if let Some(payload) = result.payload() {
        lines.push(format!("payload:           {payload}"));
    }
    if let Some(cs) = result.connection_string() {
        lines.push(format!("connection string: {cs}"));
    }
    if matches!(result.credential(), HubCredential::Tpm(_)) {
        lines.push(format!(
            "hub key:           in the TPM (persistent handle 0x{:08x})",
            azure_iot_provisioning_device::TPM_IDENTITY_KEY_HANDLE
        ));
    }
    crate::print_line(&lines.join("\n"))
}

/// The DPS to register with (see the module docs).
fn target(args: &ProvisionArgs) -> Result<Target, String> {
    let given_ca = match &args.ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let local = read_local(&args.data_dir).ok().filter(|l| l.dps.is_some());
    let (host, port) = match &args.endpoint {
        Some(endpoint) => split_endpoint(endpoint)?,
        None => match &local {
            Some(l) => (
                l.dps
                    .as_ref()
                    .map(|d| d.endpoint_host.clone())
                    .unwrap_or_default(),
                None,
            ),
            None => (GLOBAL_ENDPOINT.to_owned(), None),
        },
    };
    // The emulator serves DPS on its own ports: use them when the host is its.
    let emulator: Option<&Local> = local.as_ref().filter(|l| {
        l.dps
            .as_ref()
            .is_some_and(|d| d.endpoint_host.eq_ignore_ascii_case(&host))
            || l.host.eq_ignore_ascii_case(&host)
    });
    let port = port.or_else(|| emulator.map(|l| l.device_ports().of(args.transport.transport())));
    let id_scope = match (&args.id_scope, emulator.and_then(|l| l.dps.as_ref())) {
        (Some(scope), _) => scope.clone(),
        (None, Some(dps)) => dps.id_scope.clone(),
        (None, None) => {
            return Err(
                "--id-scope is required (no emulator with a DPS found in --data-dir)".to_owned(),
            );
        }
    };
    let ca_pem = given_ca.or_else(|| emulator.map(|l| l.ca_pem.clone()));
    Ok(Target {
        host,
        port,
        id_scope,
        ca_pem,
    })
}

/// `host[:port]`.
fn split_endpoint(endpoint: &str) -> Result<(String, Option<u16>), String> {
    match endpoint.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse()
                .map_err(|_| format!("--endpoint: `{port}` is not a port"))?;
            Ok((host.to_owned(), Some(port)))
        }
        None => Ok((endpoint.to_owned(), None)),
    }
}

/// The attestation the arguments give.
async fn attestation(args: &ProvisionArgs) -> Result<Attestation, String> {
    if args.tpm {
        let tpm = TpmAttestation::open(args.tpm_location.location()?)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Attestation::Tpm(tpm));
    }
    if args.tpm_location.tpm_device.is_some() || args.tpm_location.tpm_simulator.is_some() {
        return Err("--tpm-device and --tpm-simulator name the TPM of --tpm; add --tpm".to_owned());
    }
    let attestation = if let Some(key) = &args.symmetric_key {
        Attestation::symmetric_key(key)
    } else if let Some(key) = &args.group_key {
        Attestation::group_key(key)
    } else if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        Attestation::x509_pem(&read(cert)?, &read(key)?)
    } else {
        return Err("give --symmetric-key, --group-key, --cert and --key, or --tpm".to_owned());
    };
    attestation.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            split_endpoint("dps.example:8883").unwrap(),
            ("dps.example".to_owned(), Some(8883))
        );
        assert_eq!(
            split_endpoint("dps.example").unwrap(),
            ("dps.example".to_owned(), None)
        );
        assert!(split_endpoint("dps.example:x").is_err());
    }
}
