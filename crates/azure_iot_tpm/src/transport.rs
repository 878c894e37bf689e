//! How command bytes reach a TPM: the kernel's character device, or a TCG simulator socket.
//!
//! * [`DeviceTransport`]: write one command to `/dev/tpmrm0` (the kernel resource manager;
//!   `/dev/tpm0` as fallback), read one response.
//! * [`SimulatorTransport`]: the TCG reference simulator's ("mssim") protocol, as `swtpm
//!   socket --tpm2` and the Microsoft simulator speak it. On the command port a command is
//!   `u32 TPM_SEND_COMMAND (8)`, `u8 locality`, `u32 length`, the bytes; the answer is
//!   `u32 length`, the bytes, then a `u32` status (0). The Microsoft/IBM simulator's platform
//!   port takes `u32` signals (power on = 1, NV on = 11) and answers a `u32` status;
//!   [`SimulatorTransport::power_on`] sends them. swtpm's control port speaks its own
//!   protocol instead: start swtpm with `--flags not-need-init,startup-clear` (and `Startup`
//!   is sent anyway by [`Tpm::open`](crate::Tpm::open)).
//!
//! Responses are bounded by [`MAX_RESPONSE`]: a larger length is a malformed response, not an
//! allocation.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// The largest response accepted (TPMs answer at most `TPM_PT_MAX_RESPONSE_SIZE`, 4096 on
/// every TPM and simulator known; twice that leaves room).
pub const MAX_RESPONSE: usize = 8192;

/// The resource-manager device, tried first.
pub const DEFAULT_DEVICE: &str = "/dev/tpmrm0";
/// The raw device, tried when the resource manager is absent.
pub const FALLBACK_DEVICE: &str = "/dev/tpm0";

/// How long a simulator may take to answer one command (key generation included).
const SIMULATOR_TIMEOUT: Duration = Duration::from_secs(60);

/// Moves one command to the TPM and its response back.
pub trait Transport: Send {
    /// Sends `command` (a whole marshalled command) and returns the whole response.
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>>;
}

/// A TPM character device.
#[derive(Debug)]
pub struct DeviceTransport {
    file: File,
    path: PathBuf,
}

impl DeviceTransport {
    /// Opens `path` for reading and writing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(Self { file, path })
    }

    /// Opens [`DEFAULT_DEVICE`], or [`FALLBACK_DEVICE`] when the first does not exist.
    pub fn open_default() -> Result<Self> {
        match Self::open(DEFAULT_DEVICE) {
            Ok(device) => Ok(device),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Self::open(FALLBACK_DEVICE)
            }
            Err(e) => Err(e),
        }
    }
}

impl Transport for DeviceTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        self.file
            .write_all(command)
            .map_err(|e| Error::io(format!("writing to {}", self.path.display()), e))?;
        let mut buf = vec![0; MAX_RESPONSE];
        let n = self
            .file
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading from {}", self.path.display()), e))?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// `TPM_SEND_COMMAND` on the simulator's command port.
const TPM_SEND_COMMAND: u32 = 8;
/// `TPM_SESSION_END`: the client is leaving.
const TPM_SESSION_END: u32 = 20;
/// Platform signal: power on.
const SIGNAL_POWER_ON: u32 = 1;
/// Platform signal: NV memory available.
const SIGNAL_NV_ON: u32 = 11;

/// A TCG simulator's command socket (and, for [`power_on`](Self::power_on), its platform
/// socket on the next port).
#[derive(Debug)]
pub struct SimulatorTransport {
    stream: TcpStream,
    host: String,
    port: u16,
}

impl SimulatorTransport {
    /// Connects to the command port `host:port`.
    pub fn connect(host: &str, port: u16) -> Result<Self> {
        let stream = connect(host, port)?;
        Ok(Self {
            stream,
            host: host.to_owned(),
            port,
        })
    }

    /// Powers the simulated TPM on and makes its NV memory available, on the Microsoft/IBM
    /// simulator's platform port (`port + 1`); not for swtpm (see the module docs).
    pub fn power_on(&self) -> Result<()> {
        let platform_port = self.port.checked_add(1).ok_or_else(|| {
            Error::InvalidArgument("the simulator's command port is the last port".to_owned())
        })?;
        let mut platform = connect(&self.host, platform_port)?;
        for (what, signal) in [("power on", SIGNAL_POWER_ON), ("NV on", SIGNAL_NV_ON)] {
            platform
                .write_all(&signal.to_be_bytes())
                .map_err(|e| Error::io("writing to the simulator's platform port", e))?;
            let status = read_u32(&mut platform, "the simulator's platform port")?;
            if status != 0 {
                return Err(Error::Simulator { what, status });
            }
        }
        Ok(())
    }
}

impl Transport for SimulatorTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        let len = u32::try_from(command.len())
            .map_err(|_| Error::InvalidArgument("the command is over 4 GiB".to_owned()))?;
        let mut frame = Vec::with_capacity(command.len() + 9);
        frame.extend_from_slice(&TPM_SEND_COMMAND.to_be_bytes());
        frame.push(0); // locality 0
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(command);
        self.stream
            .write_all(&frame)
            .map_err(|e| Error::io("writing to the TPM simulator", e))?;
        let len = read_u32(&mut self.stream, "the TPM simulator")?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_RESPONSE {
            return Err(Error::malformed(
                "simulator response",
                format!("announces {len} bytes, over the {MAX_RESPONSE}-byte limit"),
            ));
        }
        let mut response = vec![0; len];
        self.stream
            .read_exact(&mut response)
            .map_err(|e| Error::io("reading from the TPM simulator", e))?;
        let status = read_u32(&mut self.stream, "the TPM simulator")?;
        if status != 0 {
            return Err(Error::Simulator {
                what: "send command",
                status,
            });
        }
        Ok(response)
    }
}

impl Drop for SimulatorTransport {
    fn drop(&mut self) {
        // Tell the simulator the session ends; it closes the socket either way.
        let _ = self.stream.write_all(&TPM_SESSION_END.to_be_bytes());
    }
}

/// A TCP connection to `host:port` with the simulator's timeouts.
fn connect(host: &str, port: u16) -> Result<TcpStream> {
    let what = format!("connecting to the TPM simulator at {host}:{port}");
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::io(what.clone(), e))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, SIMULATOR_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                stream
                    .set_read_timeout(Some(SIMULATOR_TIMEOUT))
                    .map_err(|e| Error::io(what.clone(), e))?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::io(
        what,
        last.unwrap_or_else(|| std::io::Error::other("the host name has no address")),
    ))
}

fn read_u32(stream: &mut TcpStream, from: &str) -> Result<u32> {
    let mut b = [0u8; 4];
    stream
        .read_exact(&mut b)
        .map_err(|e| Error::io(format!("reading from {from}"), e))?;
    Ok(u32::from_be_bytes(b))
}
