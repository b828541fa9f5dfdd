//! Enrolment on the central database (SPEC §9, "Identity and enrolment"): an administrator
//! gives a host its secret and labels (`fleet enrol`) or takes them away (`fleet retire`).
//! Only the secret's hash is stored, computed by the server with the same expression the host
//! functions use to check it (`fleet_schema`). And the URL the printed configuration gives
//! hosts.

use super::fleet::{pg_failure, FleetDb};
use super::fleet_url::{read_value, skip_spaces};
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

/// The URL hosts use, made from the one an administrator connects with: the same server,
/// database and TLS settings, logging in as `role` (the shared link role) and without the
/// administrator's passfile (a pooler's or server's password for the link role is the site's
/// to add). A `key=value` string stays one, a URI stays a URI.
pub fn url_for_hosts(admin_url: &str, role: &str) -> Result<String, Error> {
    let bad = |reason: String| Error::invalid("fleet url", reason);
    let text = admin_url.trim();
    let personal = |key: &str| matches!(key, "user" | "passfile" | "password");
    if let Some(rest) = text
        .strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
    {
        let scheme = &text[..text.len() - rest.len()];
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match base.find('/') {
            Some(i) => base.split_at(i),
            None => (base, ""),
        };
        let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let mut pairs: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !personal(p.split_once('=').map_or(*p, |kv| kv.0)))
            .collect();
        let user = format!("user={role}");
        pairs.push(&user);
        return Ok(format!("{scheme}{hosts}{path}?{}", pairs.join("&")));
    }
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        skip_spaces(&mut chars);
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        skip_spaces(&mut chars);
        if chars.next() != Some('=') {
            return Err(bad(format!("{key:?} has no value (key=value)")));
        }
        skip_spaces(&mut chars);
        let value = read_value(&mut chars, &key).map_err(bad)?;
        if !personal(&key) {
            kept.push(format!("{key}={}", quote_value(&value)));
        }
    }
    kept.push(format!("user={role}"));
    Ok(kept.join(" "))
}

/// A `key=value` string's value, quoted when it must be.
fn quote_value(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_get_the_link_role_and_not_the_administrators_passfile() {
        assert_eq!(
            url_for_hosts(
                "host=db.example.org dbname=fl user=alice passfile='/root/my pass' sslmode=verify-full",
                "forcelogout_link"
            )
            .unwrap(),
            "host=db.example.org dbname=fl sslmode=verify-full user=forcelogout_link"
        );
        assert_eq!(
            url_for_hosts(
                "postgresql://alice@db:6432/fl?passfile=%2Froot%2Fpw&sslmode=require",
                "forcelogout_link"
            )
            .unwrap(),
            "postgresql://db:6432/fl?sslmode=require&user=forcelogout_link"
        );
        assert_eq!(
            url_for_hosts("host=db sslrootcert='/etc/a b.crt'", "l").unwrap(),
            "host=db sslrootcert='/etc/a b.crt' user=l"
        );
        assert!(url_for_hosts("host", "l").is_err());
    }
}
