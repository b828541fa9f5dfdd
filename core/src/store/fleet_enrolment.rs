//! Enrolment on the central database (SPEC §9, "Identity and enrolment"): an administrator
//! gives a host its secret and labels (`fleet enrol`) or takes them away (`fleet retire`).
//! Only the secret's hash is stored, computed by the server with the same expression the host
//! functions use to check it (`fleet_schema`).

use super::fleet::{pg_failure, FleetDb};
use crate::error::Error;

/// What `fleet enrol` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enrolment {
    /// The host had no secret (new, or known from before secrets).
    Enrolled,
    /// `--renew`: the old secret stopped working with this commit.
    Renewed,
}

impl FleetDb {
    /// Gives `host` the secret `secret` and the labels `labels` (`None`: a renewed host keeps
    /// its labels, a new one has none), in one transaction; an enrolled host is refused
    /// unless `renew`. Returns what it did and the host's labels now.
    pub fn enrol_host(
        &mut self,
        host: &str,
        labels: Option<&[String]>,
        secret: &str,
        renew: bool,
    ) -> Result<(Enrolment, Vec<String>), Error> {
        let endpoint = self.endpoint.clone();
        let fail = |what: &str| pg_failure(&endpoint, what);
        let mut tx = self
            .client
            .transaction()
            .map_err(fail("starting an enrolment"))?;
        let enrolled: Option<bool> = tx
            .query_opt(
                "SELECT SecretHash IS NOT NULL FROM FleetHosts WHERE Host = $1 FOR UPDATE",
                &[&host],
            )
            .map_err(fail("reading the host"))?
            .map(|row| row.get(0));
        if enrolled == Some(true) && !renew {
            return Err(Error::invalid(
                "host",
                format!(
                    "{host} is already enrolled; --renew gives it a new secret (the old one \
                     stops working at once)"
                ),
            ));
        }
        let labels = labels.map(<[String]>::to_vec);
        let now_labels: Vec<String> = tx
            .query_one(
                "INSERT INTO FleetHosts (Host, Labels, SecretHash, EnrolledAt) \
                 VALUES ($1, coalesce($2::text[], '{}'), sha256(convert_to($3, 'UTF8')), now()) \
                 ON CONFLICT (Host) DO UPDATE SET \
                 Labels = coalesce($2::text[], FleetHosts.Labels), \
                 SecretHash = EXCLUDED.SecretHash, EnrolledAt = EXCLUDED.EnrolledAt \
                 RETURNING Labels",
                &[&host, &labels, &secret],
            )
            .map_err(fail("enrolling the host"))?
            .get(0);
        tx.commit().map_err(fail("committing the enrolment"))?;
        let done = if enrolled == Some(true) {
            Enrolment::Renewed
        } else {
            Enrolment::Enrolled
        };
        Ok((done, now_labels))
    }

    /// Forgets `host`: its secret stops working with this commit; its events stay.
    pub fn retire_host(&mut self, host: &str) -> Result<(), Error> {
        let removed = self
            .client
            .execute("DELETE FROM FleetHosts WHERE Host = $1", &[&host])
            .map_err(self.fail("retiring the host"))?;
        if removed == 0 {
            return Err(Error::invalid(
                "host",
                format!("{host} is not enrolled in this fleet"),
            ));
        }
        Ok(())
    }
}
