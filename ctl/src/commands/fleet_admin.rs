//! `fleet init|hosts|status|enrol|retire`: setting up the central database, listing its
//! hosts, this host's link, and hosts' identities (`fleet_enrol`) (SPEC §9).

use forcelogout_core::Error;
use serde::Serialize;

use super::fleet::{connect, short_time, url};
use super::Context;
use crate::cli::FleetCommand;
use crate::output::Table;

/// `fleet init|hosts|status|enrol|retire`.
pub fn run(ctx: &Context, command: FleetCommand) -> Result<(), Error> {
    match command {
        FleetCommand::Init => init(ctx),
        FleetCommand::Hosts => hosts(ctx),
        FleetCommand::Status => status(ctx),
        FleetCommand::Enrol(args) => super::fleet_enrol::enrol(ctx, args),
        FleetCommand::Retire { host } => super::fleet_enrol::retire(ctx, &host),
    }
}

fn init(ctx: &Context) -> Result<(), Error> {
    let url = url(ctx)?;
    let report = url.connect()?.init()?;
    if ctx.json {
        return ctx.print_json(&report);
    }
    if report.from_version == report.to_version {
        ctx.print(&format!(
            "{}: schema version {} is current; roles forcelogout_admin and forcelogout_host checked\n",
            url.endpoint(),
            report.to_version
        ))
    } else {
        ctx.print(&format!(
            "{}: schema version {} -> {}; roles forcelogout_admin and forcelogout_host ready\n",
            url.endpoint(),
            report.from_version,
            report.to_version
        ))
    }
}

fn hosts(ctx: &Context) -> Result<(), Error> {
    let hosts = connect(ctx)?.hosts()?;
    if ctx.json {
        return ctx.print_json(&hosts);
    }
    let mut table = Table::new(&[
        "HOST",
        "LABELS",
        "LAST CONTACT (UTC)",
        "VERSION",
        "BEHIND",
        "UPLOADED",
        "PRODUCT",
    ]);
    for h in &hosts {
        table.push(vec![
            h.host.clone(),
            if h.labels.is_empty() {
                "-".into()
            } else {
                h.labels.join(",")
            },
            match (&h.last_contact, h.enrolled) {
                (Some(at), true) => short_time(at),
                (None, true) => "never".into(),
                // A row from before secrets: the host cannot log in until it is enrolled.
                (_, false) => "not enrolled".into(),
            },
            h.schedule_version.to_string(),
            h.versions_behind.to_string(),
            h.last_replay_id.to_string(),
            h.product_version.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    ctx.print(&table.render())
}

/// This host's link, from the store alone (it answers while the database is down).
fn status(ctx: &Context) -> Result<(), Error> {
    let store = ctx.open_for_reading()?;
    if store.path() != ctx.db {
        // The readers' copy has the public tables only, not the link's state.
        return Err(Error::PermissionDenied {
            context: format!(
                "fleet status reads the link's state from {}, which only root may open",
                ctx.db.display()
            ),
        });
    }
    let state = store.fleet_state()?;
    let newest = store.max_replay_id()?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Status<'a> {
        host: Option<&'a str>,
        #[serde(flatten)]
        state: &'a forcelogout_core::store::FleetState,
        newest_replay_id: i64,
        waiting_to_upload: i64,
        fleet_schedules: usize,
        /// How the link's channel is protected (from the URL: it answers while the
        /// database is down).
        tls: Option<String>,
    }
    let fleet = ctx.config.fleet.as_ref();
    let shown = Status {
        host: fleet.map(|f| f.host.as_str()),
        state: &state,
        newest_replay_id: newest,
        waiting_to_upload: (newest - state.uploaded_replay_id).max(0),
        fleet_schedules: store.fleet_schedule_ids()?.len(),
        tls: fleet.map(|_| channel(ctx)),
    };
    if ctx.json {
        return ctx.print_json(&shown);
    }
    let Some(fleet) = fleet else {
        return ctx.print("not in a fleet: the configuration has no [fleet] section\n");
    };
    let mut text = String::new();
    text.push_str(&format!("Host:       {}\n", fleet.host));
    text.push_str(&format!(
        "Labels:     {}\n",
        match &state.labels {
            None => "(not known yet: set centrally with fleet enrol --labels)".into(),
            Some(labels) if labels.is_empty() => "-".into(),
            Some(labels) => labels.join(", "),
        }
    ));
    let since = state.since.as_deref().map(short_time).unwrap_or_default();
    text.push_str(&match (state.connected, state.since.is_some()) {
        (true, _) => format!("Link:       connected since {since} UTC\n"),
        (false, true) => format!("Link:       disconnected since {since} UTC\n"),
        (false, false) => "Link:       never connected (is the daemon running?)\n".into(),
    });
    if let (false, Some(error)) = (state.connected, &state.last_error) {
        text.push_str(&format!("Last error: {error}\n"));
    }
    if let Some(tls) = &shown.tls {
        text.push_str(&format!("TLS:        {tls}\n"));
    }
    text.push_str(&format!(
        "Schedules:  {} from the fleet, central version {}\n",
        shown.fleet_schedules, state.schedule_version
    ));
    text.push_str(&format!(
        "Events:     {} waiting to upload (uploaded to ReplayId {}, newest {})\n",
        shown.waiting_to_upload, state.uploaded_replay_id, newest
    ));
    ctx.print(&forcelogout_core::text::sanitize_for_terminal(&text))
}

/// How the link's channel is protected, or why that cannot be said.
fn channel(ctx: &Context) -> String {
    match url(ctx) {
        Ok(url) => url.channel(),
        Err(e) => format!("unknown: {e}"),
    }
}
