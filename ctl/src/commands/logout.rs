//! `forcelogoutctl logout GROUP`: an immediate logout (Immediate=1, a Once row at now), taking
//! effect after the immediate warning or `--in`. On this host's store the daemon enforces it;
//! without a daemon this command does, with the same code (core's `Enforcer`), and returns when
//! it is done. With `--fleet` it is written centrally, and each selected host's daemon enforces it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use forcelogout_core::clock::host_timezone;
use forcelogout_core::config::parse_duration;
use forcelogout_core::enforce::Enforcer;
use forcelogout_core::policy::{local_time_label, lockout_end};
use forcelogout_core::schedule::ImmediateInput;
use forcelogout_core::schedule_store::{Place, ScheduleVersion};
use forcelogout_core::zone::Zone;
use forcelogout_core::Error;

use super::Context;
use crate::cli::LogoutArgs;

pub fn run(ctx: &Context, args: LogoutArgs) -> Result<(), Error> {
    let hosts = super::fleet::hosts_selector(args.hosts.as_deref())?;
    let now = ctx.now();
    let zone = host_timezone();
    let (schedule, due) =
        immediate_input(&args).into_logout(now, delay(ctx, &args)?, zone.clone())?;
    // As `schedule add` does, a name no user or group has is warned of (a typo logs nobody
    // out): after the store opens, so that a caller served by the daemon sees it once.
    if args.dry_run {
        super::schedule::warn_if_unknown(ctx, &schedule.group);
        return super::preview::show(ctx, &schedule, Some(due));
    }
    let mut store = ctx.schedules_for_writing()?;
    let written = store.issue_logout(&schedule, hosts.as_deref(), &ctx.actor, now, due)?;
    super::schedule::warn_if_unknown(ctx, &schedule.group);
    if ctx.json {
        ctx.print_json(&written)?;
    } else {
        ctx.print(&issued_text(&written, due, &zone))?;
    }
    let place = store.place();
    drop(store);
    if place == Place::Fleet
        || ctx.daemon_running
        || crate::daemon::socket::reachable(&ctx.config.socket)
    {
        return Ok(());
    }
    ctx.warn("no forcelogout daemon is running: this command enforces the logout itself");
    enforce(ctx, &written.record.id, due)
}

/// What was issued, when it takes effect (in the host's zone) and until when logins are refused.
fn issued_text(written: &ScheduleVersion, due: DateTime<Utc>, zone: &Zone) -> String {
    let schedule = &written.record.schedule;
    let on_hosts = written
        .hosts
        .as_deref()
        .map(|hosts| format!(" on hosts {hosts}"))
        .unwrap_or_default();
    let mut text = format!(
        "{}\nlogout of {:?} ({}){on_hosts} at {}\n",
        written.record.id,
        schedule.group,
        if schedule.kick { "kick" } else { "warning" },
        local_time_label(due, zone, "%Y-%m-%d %H:%M:%S")
    );
    if let Some(until) = lockout_end(schedule, due) {
        text.push_str(&format!(
            "logins refused until {}\n",
            local_time_label(until, zone, "%Y-%m-%d %H:%M:%S")
        ));
    }
    text
}

/// Enforces the logout `id` on this host until it is done, as the daemon would.
fn enforce(ctx: &Context, id: &str, due: DateTime<Utc>) -> Result<(), Error> {
    let mut enforcer = Enforcer::for_one(
        ctx.open_for_writing()?,
        ctx.config.clone(),
        id,
        Box::new(|line| eprintln!("forcelogoutctl: {line}")),
    )?;
    loop {
        let now = Utc::now();
        let (_, wake) = enforcer.step(now)?;
        if enforcer.is_done(id, due)? {
            return Ok(());
        }
        let pause = (wake - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        std::thread::sleep(
            pause
                .min(Duration::from_secs(1))
                .max(Duration::from_millis(20)),
        );
    }
}

/// The logout the arguments ask for, before validation.
pub(crate) fn immediate_input(args: &LogoutArgs) -> ImmediateInput<'_> {
    ImmediateInput {
        group: &args.group,
        kick: args.action.kick(),
        message: args.action.message.as_deref(),
        lockout: args.lockout.as_deref(),
    }
}

/// `--in`, or the configured immediate warning.
pub(crate) fn delay(ctx: &Context, args: &LogoutArgs) -> Result<Duration, Error> {
    match &args.delay {
        Some(text) => parse_duration(text).map_err(|reason| Error::invalid("in", reason)),
        None => Ok(ctx.config.immediate_warning),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::super::samples;
    use super::*;

    #[test]
    fn the_issued_logout_names_its_hosts_only_centrally() {
        let due = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let zone = forcelogout_core::zone::Zone::utc();
        let host = issued_text(&samples::host(), due, &zone);
        assert_eq!(
            host,
            format!(
                "{}\nlogout of \"students\" (kick) at 2026-12-07 12:00:00 UTC\n\
                 logins refused until 2026-12-07 12:15:00 UTC\n",
                samples::ID
            )
        );
        let fleet = issued_text(&samples::fleet(), due, &zone);
        assert!(
            fleet.contains(
                "logout of \"students\" (kick) on hosts @lab at 2026-12-07 12:00:00 UTC\n"
            ),
            "{fleet}"
        );
    }
}
