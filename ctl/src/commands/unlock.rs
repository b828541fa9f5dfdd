//! `forcelogoutctl unlock USER|GROUP`: lifts the lockout of immediate logouts early, so that
//! `account` admits the user at once. Each lift is a new `updated` version of the logout's row
//! with Lockout = 0 (the history keeps the lockout, who lifted it and when); `events` shows it
//! as a schedule change, since LogoutEvents has no kind for it (SPEC §2).

use forcelogout_core::clock::host_timezone;
use forcelogout_core::policy::{local_time_label, lockouts_to_lift, Lockout};
use forcelogout_core::targeting::Identity;
use forcelogout_core::Error;

use super::Context;
use crate::cli::UnlockArgs;

pub fn run(ctx: &Context, args: UnlockArgs) -> Result<(), Error> {
    if args.name.is_empty() {
        return Err(Error::invalid("USER|GROUP", "give a user or group name"));
    }
    let mut store = if args.dry_run {
        ctx.open_for_reading()?
    } else {
        ctx.open_for_writing()?
    };
    // After the store opened: a caller sent on to the daemon is warned once, by the daemon.
    super::schedule::warn_if_unknown(ctx, &args.name);
    let now = ctx.now();
    let (kicks, _) = store.current_kick_schedules_lenient()?;
    let user = Identity::lookup(&args.name)?;
    let lifts = lockouts_to_lift(&kicks, &args.name, user.as_ref(), &ctx.config, now);
    for kept in &lifts.scheduled {
        ctx.warn(&format!(
            "schedule {} ({}) also refuses logins of {:?} until {}: unlock lifts immediate \
             logouts only; change it with `schedule update {} --lockout 0`",
            kept.record.id,
            kept.record.schedule.describe_when(),
            kept.record.schedule.group,
            until_label(kept),
            kept.record.id
        ));
    }
    let mut text = String::new();
    for lockout in &lifts.immediate {
        let verb = if args.dry_run { "would lift" } else { "lifted" };
        text.push_str(&format!(
            "{verb} the lockout of {} (logout of {:?}, logins refused until {})\n",
            lockout.record.id,
            lockout.record.schedule.group,
            until_label(lockout)
        ));
        if !args.dry_run {
            store.lift_lockout(&lockout.record.id, &ctx.actor, now)?;
        }
    }
    if lifts.immediate.is_empty() {
        text.push_str(&format!(
            "no lockout of {:?} to lift (no immediate logout refuses its logins now)\n",
            args.name
        ));
    }
    if ctx.json {
        let ids: Vec<&str> = lifts
            .immediate
            .iter()
            .map(|l| l.record.id.as_str())
            .collect();
        return ctx.print_json(&serde_json::json!({
            "DryRun": args.dry_run,
            "Lifted": if args.dry_run { Vec::new() } else { ids.clone() },
            "WouldLift": if args.dry_run { ids } else { Vec::new() },
        }));
    }
    ctx.print(&text)
}

fn until_label(lockout: &Lockout<'_>) -> String {
    local_time_label(lockout.until, &host_timezone(), "%Y-%m-%d %H:%M:%S")
}
