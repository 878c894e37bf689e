//! The registration flow the three device front-ends share: authenticate, register, poll.
//!
//! A register runs the whole assignment before it answers (attestation, allocation, the hub
//! identity through `Hub::call`, then the DPS record, in that order: ADR 9), and answers 202
//! `assigning` with `retry-after`, as DPS does and as the C# SDK insists; the first poll then
//! reads the final record (200 `assigned`, `failed` or `disabled`). ADR 14 explains why the
//! work is not deferred to a background task.

use azure_iot_protocol::dps::registration::{
    OperationStatus, RegistrationRequest, RegistrationResult, RegistrationStatus,
    TpmRegistrationResult,
};

use super::records::{RegistrationRecord, code};
use super::{Answer, DeviceLogin, Dps, DpsError};
use crate::dps::attestation::Attested;
use crate::hub::provision::ProvisionedCredential;

impl Dps {
    /// Checks the credential for `login` (unknown id scope → 404; wrong key, unknown
    /// registration, foreign chain → 401 with 401002). Front-ends call it when the connection
    /// opens (MQTT CONNECT, AMQP SASL or first link); refused → CONNACK 5 / SASL auth failure.
    pub(crate) async fn authenticate(&self, login: &DeviceLogin) -> Result<(), DpsError> {
        self.attest(login).await.map(|_| ())
    }

    /// Checks the scope, then the credential on the DPS thread.
    pub(super) async fn attest(&self, login: &DeviceLogin) -> Result<Attested, DpsError> {
        self.check_scope(&login.id_scope)?;
        let login = login.clone();
        self.actor.call(move |s| s.attest(&login)).await?
    }

    /// 404 unless `id_scope` is this DPS's.
    pub(super) fn check_scope(&self, id_scope: &str) -> Result<(), DpsError> {
        if id_scope.eq_ignore_ascii_case(self.id_scope()) {
            Ok(())
        } else {
            Err(DpsError::new(
                code::SCOPE_NOT_FOUND,
                format!("there is no provisioning service with id scope `{id_scope}`"),
            ))
        }
    }

    /// A register request (`force` = forceRegistration). The registration id in `request`, when
    /// present, must equal `login.registration_id` (C# sends none: the login's is used).
    ///
    /// Every register runs the assignment again (DPS re-evaluates on each registration; the
    /// reprovision policy decides what changes), so `force` changes nothing here.
    pub(crate) async fn register(
        &self,
        login: &DeviceLogin,
        request: RegistrationRequest,
        force: bool,
    ) -> Result<Answer, DpsError> {
        let _ = force;
        if let Some(id) = request.registration_id.as_deref()
            && !id.is_empty()
            && !id.eq_ignore_ascii_case(&login.registration_id)
        {
            return Err(DpsError::invalid(format!(
                "the body's registrationId `{id}` is not the registration `{}` of the request",
                login.registration_id
            )));
        }
        let mut attested = self.attest(login).await?;
        // TPM: the hub gets a new key, which the result carries to the device's TPM.
        let tpm_result = match &attested.tpm {
            Some(session) => {
                let (hub_key, blob) = super::tpm::hub_key_blob(session)?;
                attested.credential = ProvisionedCredential::SymmetricKey(hub_key);
                Some(TpmRegistrationResult {
                    authentication_key: blob,
                })
            }
            None => None,
        };
        let key = login.registration_id.clone();
        let previous = self.actor.call(move |s| s.registration(&key).ok()).await?;
        let mut state = self
            .assign(
                &login.registration_id,
                &attested,
                request.payload,
                previous.as_ref(),
            )
            .await?;
        if state.status == RegistrationStatus::Assigned {
            state.tpm = tpm_result;
        }
        let operation_id = format!("4.{}", uuid::Uuid::new_v4().simple());
        let record = RegistrationRecord {
            state,
            operation_id: operation_id.clone(),
            enrollment_group_id: attested.group_id().map(str::to_owned),
        };
        self.actor
            .call(move |s| s.save_registration(record))
            .await??;
        Ok(Answer {
            status: 202,
            body: OperationStatus {
                operation_id,
                status: RegistrationStatus::Assigning,
                registration_state: None,
            },
            retry_after: Some(self.info.retry_after),
        })
    }

    /// A poll for `operation_id` of this registration: 200 with the final status and the
    /// registration state; 404 if the registration's last operation is another one.
    pub(crate) async fn operation_status(
        &self,
        login: &DeviceLogin,
        operation_id: &str,
    ) -> Result<Answer, DpsError> {
        let record = self.record(login).await?;
        if record.operation_id != operation_id {
            return Err(DpsError::new(
                code::OPERATION_NOT_FOUND,
                format!(
                    "registration `{}` has no operation `{operation_id}`",
                    login.registration_id
                ),
            ));
        }
        Ok(Answer {
            status: 200,
            body: OperationStatus {
                operation_id: record.operation_id,
                status: record.state.status,
                registration_state: Some(record.state),
            },
            retry_after: None,
        })
    }

    /// The device's own registration state (`POST /{idScope}/registrations/{id}`).
    pub(crate) async fn registration_status(
        &self,
        login: &DeviceLogin,
    ) -> Result<RegistrationResult, DpsError> {
        Ok(self.record(login).await?.state)
    }

    async fn record(&self, login: &DeviceLogin) -> Result<RegistrationRecord, DpsError> {
        self.attest(login).await?;
        let key = login.registration_id.clone();
        self.actor.call(move |s| s.registration(&key)).await?
    }
}
