//! The daemon's link to the fleet (SPEC §9): a `forcelogoutctl fleet-link` process it starts and
//! starts again if it ends, so that the daemon itself links no PostgreSQL or TLS client (1.7 MB
//! of its resident memory). The link has its own connections to the central database and to
//! the store; the poll, copy, upload and reconnect logic is core's `fleet::run_host`. It ends when
//! its standard input does: when the daemon is gone, however it went.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use forcelogout_core::Error;

use crate::commands::Context;

/// How long the daemon waits before starting a link that ended.
const RESTART_AFTER: Duration = Duration::from_secs(2);

/// Starts the link when the configuration has a `[fleet]` section; otherwise the host is an
/// island and nothing happens.
pub fn start(ctx: &Context) -> Result<(), Error> {
    if ctx.config.fleet.is_none() {
        return Ok(());
    }
    let db = ctx.db.clone();
    std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || loop {
            let started = Command::new(super::ctl_program())
                .arg("--db")
                .arg(&db)
                .arg("fleet-link")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn();
            match started {
                // The pipe's end is held while the link runs: its closing tells the link to go.
                Ok(mut link) => {
                    let _daemon_alive = link.stdin.take();
                    let ended = link.wait();
                    super::log(&format!(
                        "fleet: the link ended ({ended:?}); starting it again"
                    ));
                }
                Err(e) => super::log(&format!("fleet: starting the link: {e}")),
            }
            std::thread::sleep(RESTART_AFTER);
        })
        .map_err(|e| Error::io("starting the fleet thread", e))?;
    Ok(())
}

/// `forcelogoutctl fleet-link`: runs the link until standard input ends.
pub fn run_link(ctx: &Context) -> Result<(), Error> {
    let Some(fleet) = ctx.config.fleet.clone() else {
        return Err(Error::invalid(
            "fleet",
            "the configuration has no [fleet] section",
        ));
    };
    // A bad URL or secret file must not stop enforcement: the link logs it, `fleet status`
    // shows it, and the host goes on with its local schedules until it is fixed.
    match forcelogout_core::store::fleet::FleetUrl::parse(
        &fleet.url,
        forcelogout_core::store::fleet::LINK_ROLE,
    ) {
        Ok(url) => super::log(&format!(
            "fleet: {} as {}: TLS {}",
            url.endpoint(),
            url.user(),
            url.channel()
        )),
        Err(e) => super::log(&format!("fleet: {e}")),
    }
    if fleet.obsolete_labels {
        super::log(
            "fleet: fleet.labels in the configuration is no longer read: a host's labels are \
             set centrally (forcelogoutctl --fleet fleet enrol HOST --labels a,b --renew)",
        );
    }
    super::log(&format!(
        "fleet: host {} (secret in {}; labels are central)",
        fleet.host,
        fleet.secret_file.display()
    ));
    let db = ctx.db.clone();
    std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || forcelogout_core::fleet::run_host(&fleet, &db, &|line| super::log(line)))
        .map_err(|e| Error::io("starting the fleet thread", e))?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}
