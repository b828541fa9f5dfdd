//! `fleet enrol|retire`: a host's identity in the fleet (SPEC §9, "Identity and enrolment").

use std::path::PathBuf;

use forcelogout_core::config::{fleet_section_text, validate_fleet_name, DEFAULT_SECRET_FILE};
use forcelogout_core::fleet::secret::{new_secret, write_secret};
use forcelogout_core::store::fleet::{url_for_hosts, Enrolment, LINK_ROLE};
use forcelogout_core::Error;
use serde::Serialize;

use super::fleet::connect;
use super::Context;
use crate::cli::EnrolArgs;

/// What `fleet enrol --json` prints.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Enrolled {
    host: String,
    labels: Vec<String>,
    renewed: bool,
    url: String,
    secret_file: PathBuf,
    /// Only when it was not written to `--secret-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// `fleet enrol HOST`: a new secret and the labels; prints the host's `[fleet]` lines.
pub fn enrol(ctx: &Context, args: EnrolArgs) -> Result<(), Error> {
    let host = validate_fleet_name("host", &args.host)?;
    let labels = args
        .labels
        .map(|labels| {
            labels
                .iter()
                .filter(|l| !l.is_empty())
                .map(|l| validate_fleet_name("labels", l))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let host_url = match &args.host_url {
        Some(given) => given.clone(),
        None => url_for_hosts(&url_text(ctx)?, LINK_ROLE)?,
    };
    let mut db = connect(ctx)?;
    let secret = new_secret()?;
    // The file first: an existing one refuses before anything changes centrally.
    if let Some(path) = &args.secret_file {
        write_secret(path, &secret)?;
    }
    let enrolled = db.enrol_host(&host, labels.as_deref(), &secret, args.renew);
    let (done, labels) = match enrolled {
        Ok(done) => done,
        Err(e) => {
            if let Some(path) = &args.secret_file {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    let shown = Enrolled {
        host,
        labels,
        renewed: done == Enrolment::Renewed,
        url: host_url,
        secret_file: args
            .secret_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SECRET_FILE)),
        secret: args.secret_file.is_none().then_some(secret),
    };
    if ctx.json {
        return ctx.print_json(&shown);
    }
    let mut text = fleet_section_text(&shown.url, &shown.host, &shown.secret_file);
    match &shown.secret {
        Some(secret) => text.push_str(&format!(
            "# The secret: in {} on the host, mode 0600, owned by root:\n{secret}\n",
            shown.secret_file.display()
        )),
        None => text.push_str(&format!(
            "# The secret is in {} (mode 0600): copy it to the host there.\n",
            shown.secret_file.display()
        )),
    }
    ctx.print(&text)
}

/// The URL this command connects with: `--fleet URL`, else `[fleet] url`.
fn url_text(ctx: &Context) -> Result<String, Error> {
    match (ctx.fleet.as_deref(), &ctx.config.fleet) {
        (Some(given), _) if !given.is_empty() => Ok(given.to_string()),
        (_, Some(fleet)) => Ok(fleet.url.clone()),
        _ => Err(Error::invalid(
            "fleet",
            "no URL given and the configuration has no [fleet] url",
        )),
    }
}

/// `fleet retire HOST`: its secret stops working at once; its events stay.
pub fn retire(ctx: &Context, host: &str) -> Result<(), Error> {
    let host = validate_fleet_name("host", host)?;
    connect(ctx)?.retire_host(&host)?;
    if ctx.json {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Retired<'a> {
            host: &'a str,
        }
        return ctx.print_json(&Retired { host: &host });
    }
    ctx.print(&format!(
        "{host}: retired; its secret no longer works (its events stay)\n"
    ))
}
