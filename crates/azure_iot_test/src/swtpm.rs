//! A software TPM 2.0 (`swtpm`) on free local ports, driven with `tpm2-tools`, for tests of
//! TPM attestation. `.ci/run` installs both.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running swtpm with its state in a temporary directory; killed on drop.
pub struct SoftwareTpm {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl SoftwareTpm {
    /// Starts swtpm (manufactured, `TPM2_Startup` done) and waits until it accepts commands.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("state directory");
        // The swtpm TCTI sends commands to `port` and control requests to `port + 1`.
        let port = free_port_pair();
        let ctrl = port + 1;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--server"])
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .args(["--flags", "not-need-init,startup-clear", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (apt-get install swtpm swtpm-tools tpm2-tools) must be installed");
        let tpm = Self { child, dir, port };
        // Wait for the condition (the command port accepting), bounded.
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", tpm.port)).is_err()
            || TcpStream::connect(("127.0.0.1", tpm.port + 1)).is_err()
        {
            assert!(Instant::now() < deadline, "swtpm did not start listening");
            std::thread::yield_now();
        }
        tpm
    }

    /// The command port (the TCG simulator protocol), for a TPM client of our own.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCTI string tpm2-tools use for this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A path in the TPM's working directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The working directory (tool file arguments are relative to it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `tpm2_<tool> args…` against this TPM in its working directory; `Err` carries the
    /// tool's stderr.
    pub fn try_tool(&self, tool: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        let output = Command::new(format!("tpm2_{tool}"))
            .args(args)
            .current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap_or_else(|e| panic!("tpm2_{tool} (apt-get install tpm2-tools): {e}"));
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(format!(
                "tpm2_{tool} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// [`Self::try_tool`] that panics on failure.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        self.try_tool(tool, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates the RSA EK and an RSA SRK (the owner hierarchy's standard storage template),
    /// leaving `ek.ctx`, `srk.ctx` in the working directory; returns their `TPM2B_PUBLIC`s.
    pub fn create_ek_and_srk(&self) -> (Vec<u8>, Vec<u8>) {
        self.tool("createek", &["-G", "rsa", "-c", "ek.ctx", "-u", "ek.pub"]);
        self.tool(
            "createprimary",
            &[
                "-C",
                "o",
                "-G",
                "rsa2048:aes128cfb",
                "-g",
                "sha256",
                "-c",
                "srk.ctx",
            ],
        );
        self.tool(
            "readpublic",
            &["-c", "srk.ctx", "-o", "srk.pub", "-f", "tss"],
        );
        (self.read("ek.pub"), self.read("srk.pub"))
    }

    /// Opens a DPS activation blob the way the DPS TPM clients do: `ActivateCredential(SRK,
    /// EK)` under an EK policy session for the inner key, `Import` of the identity key under
    /// the SRK with it, `Load`. Leaves the loaded key at `identity.ctx`.
    pub fn open_activation_blob(
        &self,
        blob: &azure_iot_protocol::tpm::ActivationBlob,
    ) -> Result<(), String> {
        use azure_iot_protocol::tpm::marshal_tpm2b;
        let tpm2b = |b: &[u8]| marshal_tpm2b(b).expect("TPM2B");
        // tpm2-tools' credential file: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
        let mut credential = vec![0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1];
        credential.extend(tpm2b(&blob.credential_blob));
        credential.extend(tpm2b(&blob.encrypted_secret));
        self.write("cred.blob", &credential);
        self.write("dup.priv", &tpm2b(&blob.duplicate));
        self.write("dup.seed", &tpm2b(&blob.encrypted_seed));
        self.write("id.pub", &tpm2b(&blob.identity_public));
        self.try_tool("flushcontext", &["-t"])?;
        self.try_tool(
            "startauthsession",
            &["--policy-session", "-S", "session.ctx"],
        )?;
        self.try_tool("policysecret", &["-S", "session.ctx", "-c", "e"])?;
        let activated = self.try_tool(
            "activatecredential",
            &[
                "-c",
                "srk.ctx",
                "-C",
                "ek.ctx",
                "-i",
                "cred.blob",
                "-o",
                "inner.key",
                "-P",
                "session:session.ctx",
            ],
        );
        let _ = self.try_tool("flushcontext", &["session.ctx"]);
        activated?;
        self.try_tool("flushcontext", &["-t"])?;
        // `-k`: the inner wrapper is AES-128-CFB with this key.
        self.try_tool(
            "import",
            &[
                "-C",
                "srk.ctx",
                "-u",
                "id.pub",
                "-i",
                "dup.priv",
                "-s",
                "dup.seed",
                "-k",
                "inner.key",
                "-r",
                "id.priv",
            ],
        )?;
        self.try_tool("flushcontext", &["-t"])?;
        self.try_tool(
            "load",
            &[
                "-C",
                "srk.ctx",
                "-u",
                "id.pub",
                "-r",
                "id.priv",
                "-c",
                "identity.ctx",
            ],
        )?;
        Ok(())
    }

    /// HMAC-SHA256 of `message` computed inside the TPM with the key at `identity.ctx`.
    pub fn hmac(&self, message: &[u8]) -> Vec<u8> {
        self.write("message.bin", message);
        self.tool("flushcontext", &["-t"]);
        self.tool(
            "hmac",
            &[
                "-c",
                "identity.ctx",
                "-g",
                "sha256",
                "-o",
                "hmac.bin",
                "message.bin",
            ],
        );
        self.read("hmac.bin")
    }

    /// Reads a file of the working directory.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Writes a file of the working directory.
    pub fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

impl Drop for SoftwareTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local TCP port P such that nobody listens on P or P + 1 right now.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind(("127.0.0.1", 0)).expect("a free local port");
        let port = first.local_addr().expect("its address").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free local ports");
}
