//! The fleet link's TLS settings, checked and applied as libpq 16 does (SPEC §9):
//! - `sslrootcert=FILE` is the only trust: an X509 store with that file's certificates, never
//!   the system's (a certificate any public CA issued for the name is not the site's server);
//! - `sslrootcert=system` is the system store (OpenSSL's paths, `SSL_CERT_FILE`/`SSL_CERT_DIR`
//!   honoured), with verify-full only;
//! - `verify-ca`/`verify-full` without a root certificate fail with libpq's message; without
//!   `sslrootcert` the root certificate is `~/.postgresql/root.crt` (the daemon's: /root/…);
//! - `require` with a root certificate checks the chain, as `verify-ca`;
//! - a TCP URL without `sslmode` is `verify-full` (libpq's default is `prefer`): a host takes
//!   lockout orders from that server, so an unverified channel must be asked for by name.
//!
//! Deliberate differences, both stricter: a `sslrootcert=FILE` that does not exist is an
//! error in every mode (libpq's `require` would go on unverified), and `require`/`verify-*`
//! on a Unix socket is refused (libpq ignores `sslmode` there). `prefer`/`allow` never verify
//! (libpq checks a chain it has a root for, but falls back to plaintext when that fails: the
//! same unverified channel). Certificate revocation lists are not read.

use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::X509;

use super::fleet::FleetTls;
use super::fleet_url::{check_private, home_dir};
use crate::error::Error;

/// How far the TLS certificate of the server is checked (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(text: &str) -> Option<TlsMode> {
        Some(match text {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Modes that never go on without TLS.
    fn requires_tls(self) -> bool {
        matches!(
            self,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull
        )
    }
}

/// What the server's certificate is checked against (libpq's `sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum RootCert {
    File(PathBuf),
    System,
}

/// How much of the server's certificate a connection checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Nothing: the channel is unverified (whoever answers is believed).
    Nothing,
    /// The chain up to a trusted root (verify-ca).
    Chain,
    /// The chain and the host name (verify-full).
    ChainAndName,
}

/// The TLS keys of a fleet URL, checked as libpq checks them when it parses one.
#[derive(Clone, Debug)]
pub(super) struct TlsSettings {
    mode: TlsMode,
    /// Whether the URL said `sslmode` (else: the default for its kind of host).
    explicit: bool,
    root: Option<RootCert>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    /// Unix sockets: PostgreSQL has no TLS there; the peer is whoever the kernel connects to
    /// at the path the configuration names.
    local: bool,
}

impl TlsSettings {
    /// From the `sslmode`, `sslrootcert`, `sslcert` and `sslkey` keys of a URL whose hosts
    /// are Unix sockets (`local`) or TCP.
    pub(super) fn from_keys(
        keys: Vec<(String, String)>,
        local: bool,
    ) -> Result<TlsSettings, String> {
        let mut settings = TlsSettings {
            mode: if local {
                TlsMode::Prefer
            } else {
                TlsMode::VerifyFull
            },
            explicit: false,
            root: None,
            client_cert: None,
            client_key: None,
            local,
        };
        for (key, value) in keys {
            match key.as_str() {
                "sslmode" => {
                    settings.mode = TlsMode::parse(&value)
                        .ok_or_else(|| format!("sslmode {value:?} is not a libpq sslmode"))?;
                    settings.explicit = true;
                }
                "sslrootcert" if value == "system" => settings.root = Some(RootCert::System),
                "sslrootcert" => settings.root = Some(RootCert::File(PathBuf::from(value))),
                "sslcert" => settings.client_cert = Some(PathBuf::from(value)),
                "sslkey" => settings.client_key = Some(PathBuf::from(value)),
                other => return Err(format!("{other} is not a TLS setting")),
            }
        }
        if settings.root == Some(RootCert::System) {
            // libpq 16: any certificate a public CA issued would pass a chain check alone.
            if !settings.explicit {
                settings.mode = TlsMode::VerifyFull;
            } else if settings.mode != TlsMode::VerifyFull {
                return Err(format!(
                    "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                    settings.mode.as_str()
                ));
            }
        }
        if local && settings.mode.requires_tls() {
            return Err(format!(
                "sslmode={} needs a TCP host: PostgreSQL has no TLS on a Unix socket",
                settings.mode.as_str()
            ));
        }
        Ok(settings)
    }

    /// Whether connections compare the certificate with the host name.
    pub(super) fn checks_name(&self) -> bool {
        self.mode == TlsMode::VerifyFull
    }

    /// What a connection checks, and against which root. The root file is looked for now,
    /// as libpq does at each connection: one put in place later serves the next attempt.
    fn resolve(&self) -> Result<(Check, Option<RootCert>), String> {
        if self.local || !self.mode.requires_tls() {
            return Ok((Check::Nothing, None));
        }
        let (path, named) = match &self.root {
            Some(RootCert::System) => return Ok((Check::ChainAndName, Some(RootCert::System))),
            Some(RootCert::File(path)) => (Some(path.clone()), true),
            None => (home_dir().map(|h| h.join(".postgresql/root.crt")), false),
        };
        let check = match self.mode {
            TlsMode::VerifyFull => Check::ChainAndName,
            _ => Check::Chain,
        };
        match path {
            Some(path) if path.exists() => Ok((check, Some(RootCert::File(path)))),
            // libpq's `require`: no root certificate, no verification.
            _ if self.mode == TlsMode::Require && !named => Ok((Check::Nothing, None)),
            Some(path) => Err(format!(
                "root certificate file \"{}\" does not exist. {ROOT_HINT}",
                path.display()
            )),
            None => Err(format!(
                "could not get home directory to locate root certificate file. {ROOT_HINT}"
            )),
        }
    }

    /// The OpenSSL side of connections with these settings.
    pub(super) fn build(&self) -> Result<FleetTls, Error> {
        let bad = |reason: String| Error::invalid("fleet url", reason);
        let (check, root) = self.resolve().map_err(bad)?;
        if self.local || self.mode == TlsMode::Disable {
            return Ok(FleetTls::new(None, Check::Nothing, false, self.local));
        }
        let tls_error = |what: &str, e: openssl::error::ErrorStack| bad(format!("{what}: {e}"));
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls_error("TLS", e))?;
        // libpq's default ssl_min_protocol_version.
        builder
            .set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(|e| tls_error("TLS", e))?;
        match root {
            // The builder's store holds OpenSSL's default paths: replaced, not added to.
            Some(RootCert::File(path)) => builder.set_cert_store(root_store(&path).map_err(bad)?),
            Some(RootCert::System) => {}
            None => builder.set_verify(SslVerifyMode::NONE),
        }
        if let Some(cert) = &self.client_cert {
            builder
                .set_certificate_chain_file(cert)
                .map_err(|e| tls_error(&format!("sslcert {}", cert.display()), e))?;
        }
        if let Some(key) = &self.client_key {
            check_private(key, "sslkey")?;
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(|e| tls_error(&format!("sslkey {}", key.display()), e))?;
        }
        Ok(FleetTls::new(
            Some(builder.build()),
            check,
            self.mode.requires_tls(),
            false,
        ))
    }

    /// How connections to `endpoint` are protected, in one line.
    pub(super) fn describe(&self, endpoint: &str) -> String {
        if self.local {
            return format!("none (Unix socket {endpoint}: local, PostgreSQL has no TLS there)");
        }
        let mode = self.mode.as_str();
        let how = if self.explicit {
            String::new()
        } else {
            "; the default for a TCP host".into()
        };
        match self.resolve() {
            Err(e) => format!("{mode}, cannot connect: {e}"),
            Ok((Check::Nothing, _)) => match self.mode {
                TlsMode::Disable => "none (sslmode=disable: not encrypted, unverified)".into(),
                TlsMode::Require => {
                    "unverified (sslmode=require: encrypted, the server's certificate not checked)"
                        .into()
                }
                _ => format!(
                    "unverified (sslmode={mode}: encrypted only if the server offers it, its \
                     certificate not checked)"
                ),
            },
            Ok((check, root)) => {
                let root = match root {
                    Some(RootCert::File(path)) => path.display().to_string(),
                    _ => "the system store".into(),
                };
                match (check, self.mode) {
                    (Check::ChainAndName, _) => format!("verify-full (root: {root}{how})"),
                    (_, TlsMode::Require) => format!(
                        "verify-ca (sslmode=require with a root certificate: {root}; the \
                         server's name is not checked)"
                    ),
                    _ => format!("verify-ca (root: {root}; the server's name is not checked)"),
                }
            }
        }
    }
}

/// libpq's advice after a missing root certificate.
const ROOT_HINT: &str = "Either provide the file, use the system's trusted roots with \
     sslrootcert=system, or change sslmode to disable server certificate verification.";

/// An X509 store with the certificates of one PEM file and nothing else.
fn root_store(path: &Path) -> Result<X509Store, String> {
    let unreadable = |why: String| {
        format!(
            "could not read root certificate file \"{}\": {why}",
            path.display()
        )
    };
    let pem = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| unreadable(e.to_string()))?;
    if certs.is_empty() {
        return Err(unreadable("no PEM certificate in it".into()));
    }
    let mut store = X509StoreBuilder::new().map_err(|e| unreadable(e.to_string()))?;
    for cert in certs {
        store
            .add_cert(cert)
            .map_err(|e| unreadable(e.to_string()))?;
    }
    Ok(store.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(keys: &[(&str, &str)], local: bool) -> Result<TlsSettings, String> {
        let keys = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TlsSettings::from_keys(keys, local)
    }

    #[test]
    fn a_tcp_host_without_sslmode_is_verify_full_and_a_socket_keeps_prefer() {
        assert_eq!(settings(&[], false).unwrap().mode, TlsMode::VerifyFull);
        assert_eq!(settings(&[], true).unwrap().mode, TlsMode::Prefer);
        let explicit = settings(&[("sslmode", "disable")], false).unwrap();
        assert_eq!(explicit.mode, TlsMode::Disable);
        assert_eq!(
            explicit.describe("db:5432"),
            "none (sslmode=disable: not encrypted, unverified)"
        );
        assert!(settings(&[], true)
            .unwrap()
            .describe("/run/postgresql:5432")
            .starts_with("none (Unix socket /run/postgresql:5432"));
    }

    #[test]
    fn the_system_store_is_verify_full_only() {
        let system = settings(&[("sslrootcert", "system")], false).unwrap();
        assert_eq!(system.mode, TlsMode::VerifyFull);
        assert_eq!(
            system.resolve(),
            Ok((Check::ChainAndName, Some(RootCert::System)))
        );
        for weak in ["disable", "allow", "prefer", "require", "verify-ca"] {
            assert_eq!(
                settings(&[("sslmode", weak), ("sslrootcert", "system")], false).err(),
                Some(format!(
                    "weak sslmode \"{weak}\" may not be used with sslrootcert=system (use \"verify-full\")"
                ))
            );
        }
    }

    #[test]
    fn root_certificates_are_resolved_as_libpq_does() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let present = dir.path().join("ca.crt");
        std::fs::write(&present, "not read here").unwrap();
        let with = |mode: &str, root: &Path| {
            settings(
                &[("sslmode", mode), ("sslrootcert", root.to_str().unwrap())],
                false,
            )
            .unwrap()
            .resolve()
        };
        let file = Some(RootCert::File(present.clone()));
        assert_eq!(with("require", &present), Ok((Check::Chain, file.clone())));
        assert_eq!(
            with("verify-ca", &present),
            Ok((Check::Chain, file.clone()))
        );
        assert_eq!(
            with("verify-full", &present),
            Ok((Check::ChainAndName, file))
        );
        assert_eq!(with("prefer", &present), Ok((Check::Nothing, None)));
        for mode in ["require", "verify-ca", "verify-full"] {
            let err = with(mode, &missing).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "root certificate file \"{}\" does not exist. Either provide the file",
                    missing.display()
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn tls_on_a_unix_socket_is_refused() {
        for mode in ["require", "verify-ca", "verify-full"] {
            assert!(settings(&[("sslmode", mode)], true).is_err(), "{mode}");
        }
        assert!(settings(&[("sslmode", "disable")], true).is_ok());
    }
}
