//! The daemon's fleet thread (SPEC §9): one connection to the central database, its own
//! connection to the store; the copy, upload and reconnect logic is core's `fleet::run_host`.

use forcelogout_core::Error;

use crate::commands::Context;

/// Starts the thread when the configuration has a `[fleet]` section; otherwise the host is
/// an island and nothing happens.
pub fn start(ctx: &Context) -> Result<(), Error> {
    let Some(fleet) = ctx.config.fleet.clone() else {
        return Ok(());
    };
    // A bad URL or passfile must not stop enforcement: the thread logs it, `fleet status`
    // shows it, and the host goes on with its local schedules until it is fixed.
    if let Err(e) = forcelogout_core::store::fleet::FleetUrl::parse(&fleet.url, &fleet.host) {
        super::log(&format!("fleet: {e}"));
    }
    let db = ctx.db.clone();
    super::log(&format!(
        "fleet: host {} (labels {})",
        fleet.host,
        if fleet.labels.is_empty() {
            "none".to_string()
        } else {
            fleet.labels.join(", ")
        }
    ));
    std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || forcelogout_core::fleet::run_host(&fleet, &db, &|line| super::log(line)))
        .map_err(|e| Error::io("starting the fleet thread", e))?;
    Ok(())
}
