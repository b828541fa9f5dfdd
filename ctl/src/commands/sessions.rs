//! `forcelogoutctl sessions`: the live login sessions (an ordinary user sees their own).

use forcelogout_core::Error;
use serde::Serialize;

use super::Context;
use crate::output::Table;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionRow<'a> {
    session_key: &'a str,
    group_name: &'a str,
    user_id: u32,
    service: Option<&'a str>,
    tty: Option<&'a str>,
    remote_host: Option<&'a str>,
    pid: u32,
    logind_session: Option<&'a str>,
    opened_at: &'a str,
}

pub fn run(ctx: &Context) -> Result<(), Error> {
    let store = ctx.open_for_reading()?;
    let mut sessions = store.live_sessions()?;
    if let Some(viewer) = &ctx.viewer {
        sessions.retain(|s| s.user == viewer.name);
    }
    if ctx.json {
        let rows: Vec<SessionRow> = sessions
            .iter()
            .map(|s| SessionRow {
                session_key: &s.key,
                group_name: &s.user,
                user_id: s.uid,
                service: s.service.as_deref(),
                tty: s.tty.as_deref(),
                remote_host: s.remote_host.as_deref(),
                pid: s.pid,
                logind_session: s.logind_session.as_deref(),
                opened_at: &s.opened_at,
            })
            .collect();
        return ctx.print_json(&rows);
    }
    let mut table = Table::new(&[
        "SESSION",
        "USER",
        "UID",
        "SERVICE",
        "TTY",
        "FROM",
        "PID",
        "OPENED (UTC)",
    ]);
    for s in &sessions {
        table.push(vec![
            s.key.chars().take(8).collect(),
            s.user.clone(),
            s.uid.to_string(),
            s.service.clone().unwrap_or_else(|| "-".into()),
            s.tty.clone().unwrap_or_else(|| "-".into()),
            s.remote_host.clone().unwrap_or_else(|| "-".into()),
            s.pid.to_string(),
            s.opened_at
                .get(..19)
                .unwrap_or(&s.opened_at)
                .replace('T', " "),
        ]);
    }
    ctx.print(&table.render())
}
