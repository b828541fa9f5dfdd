//! `forcelogoutctl logout GROUP`: an immediate logout (Immediate=1, a Once row at now), taking
//! effect after the immediate warning or `--in`. The daemon enforces it; without a daemon this
//! command does, with the same code (core's `Enforcer`), and returns when it is done.

use std::time::Duration;

use chrono::Utc;
use forcelogout_core::clock::host_timezone;
use forcelogout_core::config::parse_duration;
use forcelogout_core::enforce::Enforcer;
use forcelogout_core::policy::{local_time_label, lockout_end};
use forcelogout_core::schedule::ImmediateInput;
use forcelogout_core::Error;

use super::Context;
use crate::cli::LogoutArgs;

pub fn run(ctx: &Context, args: LogoutArgs) -> Result<(), Error> {
    let now = ctx.now();
    let zone = host_timezone();
    let (schedule, due) = immediate_input(&args).into_logout(now, delay(ctx, &args)?, zone)?;
    // As `schedule add` does, a name no user or group has is warned of (a typo logs nobody
    // out): after the store opens, so that a caller served by the daemon sees it once.
    if args.dry_run {
        super::schedule::warn_if_unknown(ctx, &schedule.group);
        return super::preview::show(ctx, &schedule, Some(due));
    }
    let mut store = ctx.open_for_writing()?;
    let record = store.add_immediate_logout(&schedule, &ctx.actor, now, due)?;
    super::schedule::warn_if_unknown(ctx, &schedule.group);
    if ctx.json {
        ctx.print_json(&record)?;
    } else {
        let mut text = format!(
            "{}\nlogout of {:?} ({}) at {}\n",
            record.id,
            schedule.group,
            if schedule.kick { "kick" } else { "warning" },
            local_time_label(due, zone, "%Y-%m-%d %H:%M:%S")
        );
        if let Some(until) = lockout_end(&schedule, due) {
            text.push_str(&format!(
                "logins refused until {}\n",
                local_time_label(until, zone, "%Y-%m-%d %H:%M:%S")
            ));
        }
        ctx.print(&text)?;
    }
    if ctx.daemon_running || crate::daemon::socket::reachable(&ctx.config.socket) {
        return Ok(());
    }
    ctx.warn("no forcelogout daemon is running: this command enforces the logout itself");
    let mut enforcer = Enforcer::for_one(
        store,
        ctx.config.clone(),
        &record.id,
        Box::new(|line| eprintln!("forcelogoutctl: {line}")),
    )?;
    loop {
        let now = Utc::now();
        let (_, wake) = enforcer.step(now)?;
        if enforcer.is_done(&record.id, due)? {
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

/// The logout the arguments ask for, before validation (shared with `--fleet logout`).
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
