//! CA certificates registered with the DPS, which X.509 enrollment groups name in
//! `attestation.x509.caReferences` (`{primary, secondary}`).
//!
//! On Azure these are a management-plane resource of the DPS instance (ARM, `az iot dps
//! certificate create --verified`); the emulator keeps them in `dps.db` (table
//! `ca_certificates`) and serves them on an emulator-only route of its own
//! (`http::dps::certificates`), authorized by the DPS service policy. Like the hub's CAs
//! (`hub::certificates`, whose parsing, naming rule and description this reuses), a registered
//! CA counts as verified: no proof of possession is asked.
//!
//! Names are case-insensitive (as DPS's ids are). Group writes that reference a name no CA has
//! are 400; a CA deleted later simply stops matching: the next registration through a group
//! that names only it is refused (401).

use std::collections::BTreeMap;

use azure_iot_protocol::dps::enrollment::{Attestation, X509CaReferences};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::DpsError;
use super::records::code;
use super::state::DpsState;
use super::store::{Change, DpsStore, Table};
use crate::error::EmulatorError;
use crate::hub::certificates::{CaCertificate, describe, parse_certificate};

/// A registered CA as its `ca_certificates` row holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredCa {
    /// The name as registered (the row's id is its lower-case form).
    pub(crate) name: String,
    /// The certificate, PEM.
    pub(crate) pem: String,
    /// Registration time.
    pub(crate) created: String,
}

/// A registered CA in memory: its name as registered, and the parsed certificate.
#[derive(Debug, Clone)]
pub(crate) struct RegisteredCa {
    /// The name as registered.
    pub(crate) name: String,
    /// The certificate (the trust anchor).
    pub(crate) ca: CaCertificate,
}

/// The DPS's registered CAs, by lower-cased name.
pub(crate) type DpsCertificates = BTreeMap<String, RegisteredCa>;

/// Loads the registered CAs. A stored PEM that no longer parses stops the start with an error
/// naming the CA, rather than silently dropping a trust anchor groups rely on.
pub(crate) fn load(store: &DpsStore) -> Result<DpsCertificates, EmulatorError> {
    let mut out = DpsCertificates::new();
    for row in store.rows::<StoredCa>(Table::Certificates)? {
        let der = parse_certificate(&row.pem)
            .map_err(|e| EmulatorError::Storage(format!("DPS CA {}: {}", row.name, e.message)))?;
        let ca = CaCertificate {
            der,
            pem: row.pem,
            created: row.created,
        };
        out.insert(
            row.name.to_ascii_lowercase(),
            RegisteredCa { name: row.name, ca },
        );
    }
    Ok(out)
}

/// 404 for a CA name nobody registered.
fn no_such_ca(name: &str) -> DpsError {
    DpsError::new(
        code::NOT_FOUND,
        format!("there is no CA certificate named `{name}`"),
    )
}

impl DpsState {
    /// Registers (or replaces) CA `name`; answers its description (the hub's
    /// `CertificateDescription` shape). A bad name or certificate is 400.
    pub(crate) fn put_ca(&mut self, name: &str, certificate: &str) -> Result<Value, DpsError> {
        let ca = CaCertificate::new(name, certificate).map_err(|e| DpsError::invalid(e.message))?;
        let row = StoredCa {
            name: name.to_owned(),
            pem: ca.pem.clone(),
            created: ca.created.clone(),
        };
        self.store_mut().apply(&[Change::PutCertificate(&row)])?;
        let json = describe(name, &ca);
        self.certificates.insert(
            name.to_ascii_lowercase(),
            RegisteredCa {
                name: name.to_owned(),
                ca,
            },
        );
        Ok(json)
    }

    /// CA `name`'s description; 404 when there is none.
    pub(crate) fn get_ca(&self, name: &str) -> Result<Value, DpsError> {
        self.certificates
            .get(&name.to_ascii_lowercase())
            .map(|r| describe(&r.name, &r.ca))
            .ok_or_else(|| no_such_ca(name))
    }

    /// Every registered CA, `{"value": [...]}` in name order.
    pub(crate) fn list_cas(&self) -> Value {
        json!({"value": self.certificates.values().map(|r| describe(&r.name, &r.ca)).collect::<Vec<_>>()})
    }

    /// Deletes CA `name`; 404 when there is none. Groups naming it keep their reference; their
    /// devices are refused from the next registration on.
    pub(crate) fn delete_ca(&mut self, name: &str) -> Result<(), DpsError> {
        let key = name.to_ascii_lowercase();
        if !self.certificates.contains_key(&key) {
            return Err(no_such_ca(name));
        }
        self.store_mut()
            .apply(&[Change::Delete(Table::Certificates, name)])?;
        self.certificates.remove(&key);
        Ok(())
    }

    /// The registered CAs `references` names (primary first); names with no CA are skipped.
    pub(crate) fn referenced_cas(&self, references: &X509CaReferences) -> Vec<&CaCertificate> {
        [&references.primary, &references.secondary]
            .into_iter()
            .flatten()
            .filter_map(|name| self.certificates.get(&name.to_ascii_lowercase()))
            .map(|r| &r.ca)
            .collect()
    }

    /// At a write: every name in `attestation`'s `caReferences` must be a registered CA (400
    /// otherwise), and a `caReferences` member must name at least one.
    pub(crate) fn check_ca_references(&self, attestation: &Attestation) -> Result<(), DpsError> {
        let Some(references) = attestation
            .x509
            .as_ref()
            .and_then(|x| x.ca_references.as_ref())
        else {
            return Ok(());
        };
        let names: Vec<&String> = [&references.primary, &references.secondary]
            .into_iter()
            .flatten()
            .collect();
        if names.is_empty() {
            return Err(DpsError::invalid(
                "caReferences names no CA certificate (primary or secondary)",
            ));
        }
        for name in names {
            if !self.certificates.contains_key(&name.to_ascii_lowercase()) {
                return Err(DpsError::invalid(format!(
                    "caReferences names `{name}`, which is not a CA certificate registered with this DPS"
                )));
            }
        }
        Ok(())
    }
}
