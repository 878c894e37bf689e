//! Who the simulated devices are: one device of the registry, one connection string, N
//! devices created on demand, or a file of connection strings for a hub whose registry this
//! tool cannot write.

use std::path::Path;

use azure_iot_core::{DeviceConnectionString, SharedAccessKey};
use azure_iot_service::{BulkEntry, BulkMode, Device};
use futures_util::{StreamExt, TryStreamExt};

use crate::target::{DevicePorts, Hub, HubArgs};

/// A device to simulate.
pub(crate) struct Identity {
    /// The device id, for reports.
    pub(crate) device_id: String,
    /// Its connection string (a secret: never printed).
    pub(crate) connection_string: String,
}

/// The identities of a run, and how to reach their hub.
pub(crate) struct Fleet {
    pub(crate) identities: Vec<Identity>,
    /// The emulator's ports, when the hub is the local emulator.
    pub(crate) ports: Option<DevicePorts>,
    /// The CA to trust, when not the system's.
    pub(crate) ca_pem: Option<String>,
}

/// The device with this connection string, on the emulator of `--data-dir` if it names its host.
pub(crate) fn from_connection_string(hub: &HubArgs, cs: &str) -> Result<Fleet, String> {
    let identity = identity(cs).map_err(|e| format!("--device-connection-string: {e}"))?;
    let host = connect_host(cs)?;
    from_list(hub, vec![identity], &host)
}

/// The devices of a file with one device connection string per line (blank lines and lines
/// starting with `#` are skipped). They must all name one hub.
pub(crate) fn from_file(hub: &HubArgs, path: &Path) -> Result<Fleet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut identities = Vec::new();
    let mut host: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The line itself holds a key: say where the problem is, never what the line says.
        let at = || format!("{} line {}", path.display(), number + 1);
        let id = identity(line).map_err(|e| format!("{}: {e}", at()))?;
        let line_host = connect_host(line)?;
        match &host {
            Some(h) if !h.eq_ignore_ascii_case(&line_host) => {
                return Err(format!(
                    "{}: every connection string must name one hub ({h}, not {line_host})",
                    at()
                ));
            }
            Some(_) => {}
            None => host = Some(line_host),
        }
        identities.push(id);
    }
    let host = host.ok_or_else(|| format!("{} holds no connection string", path.display()))?;
    from_list(hub, identities, &host)
}

fn from_list(hub: &HubArgs, identities: Vec<Identity>, host: &str) -> Result<Fleet, String> {
    let local = hub.local_device_endpoint(host);
    let ca_pem = match &hub.ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => local.as_ref().map(|(_, ca)| ca.clone()),
    };
    Ok(Fleet {
        identities,
        ports: local.map(|(ports, _)| ports),
        ca_pem,
    })
}

fn identity(cs: &str) -> Result<Identity, String> {
    let parsed = DeviceConnectionString::parse(cs).map_err(|e| e.to_string())?;
    Ok(Identity {
        device_id: parsed.device_id().to_owned(),
        connection_string: cs.to_owned(),
    })
}

fn connect_host(cs: &str) -> Result<String, String> {
    DeviceConnectionString::parse(cs)
        .map(|p| p.connect_host().to_owned())
        .map_err(|e| e.to_string())
}

/// One device of the registry, by id (its primary key is read from the registry).
pub(crate) async fn registered(hub: Hub, device_id: &str) -> Result<Fleet, String> {
    let cs = crate::devices::connection_string(&hub, device_id, None, false).await?;
    Ok(Fleet {
        identities: vec![Identity {
            device_id: device_id.to_owned(),
            connection_string: cs,
        }],
        ports: hub.device_ports,
        ca_pem: hub.ca_pem,
    })
}

/// Devices `{prefix}{0..count}` (numbers zero-padded to one width), created with new keys
/// when missing — 100 to a bulk request — and read from the registry when they exist.
pub(crate) async fn generated(
    hub: Hub,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Result<Fleet, String> {
    let width = count.saturating_sub(1).to_string().len();
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}{i:0width$}")).collect();
    let hub_ref = &hub;
    let chunks: Vec<Vec<Identity>> = futures_util::stream::iter(ids.chunks(100))
        .map(|chunk| create_or_read(hub_ref, chunk, concurrency))
        .buffered(concurrency.clamp(1, 8))
        .try_collect()
        .await?;
    Ok(Fleet {
        identities: chunks.into_iter().flatten().collect(),
        ports: hub.device_ports,
        ca_pem: hub.ca_pem,
    })
}

/// Creates the devices of `ids` (at most 100) that do not exist; reads the others' keys.
async fn create_or_read(
    hub: &Hub,
    ids: &[String],
    concurrency: usize,
) -> Result<Vec<Identity>, String> {
    let mut keys = Vec::with_capacity(ids.len());
    let mut entries = Vec::with_capacity(ids.len());
    for id in ids {
        let primary = SharedAccessKey::generate().map_err(|e| e.to_string())?;
        let secondary = SharedAccessKey::generate().map_err(|e| e.to_string())?;
        let device = Device::new(id).with_symmetric_key(primary.to_base64(), secondary.to_base64());
        keys.push(primary.to_base64());
        entries.push(BulkEntry::new(BulkMode::Create, device));
    }
    let result = hub
        .service
        .bulk(&entries)
        .await
        .map_err(|e| format!("creating devices {}..: {e}", ids[0]))?;
    let mut identities = Vec::with_capacity(ids.len());
    let mut existing = Vec::new();
    for (id, key) in ids.iter().zip(keys) {
        match result.errors.iter().find(|e| &e.device_id == id) {
            None => identities.push(Identity {
                device_id: id.clone(),
                connection_string: format!(
                    "HostName={};DeviceId={id};SharedAccessKey={key}",
                    hub.host
                ),
            }),
            Some(e) if e.error_code == "DeviceAlreadyExists" => existing.push(id.clone()),
            Some(e) => {
                return Err(format!("cannot create device {id}: {}", e.error_code));
            }
        }
    }
    let read: Vec<Identity> = futures_util::stream::iter(existing)
        .map(|id| async move {
            let cs = crate::devices::connection_string(hub, &id, None, false).await?;
            Ok::<_, String>(Identity {
                device_id: id,
                connection_string: cs,
            })
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    identities.extend(read);
    Ok(identities)
}
