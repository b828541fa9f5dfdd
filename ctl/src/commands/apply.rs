//! `forcelogoutctl apply -f FILE` and `export`: schedules as a file for configuration management.

use std::path::Path;

use forcelogout_core::clock::host_timezone;
use forcelogout_core::declarative::{self, Format};
use forcelogout_core::Error;

use super::Context;

pub fn apply(ctx: &Context, file: &Path, dry_run: bool) -> Result<(), Error> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::invalid("file", format!("{name}: no such file")),
        _ => Error::io(format!("reading {name}"), e),
    })?;
    let wanted = declarative::parse(&name, &text, host_timezone())?;
    let mut store = if dry_run {
        ctx.open_for_reading()?
    } else {
        ctx.open_for_writing()?
    };
    let changes = declarative::apply(&mut store, wanted, &ctx.actor, ctx.now(), dry_run)?;
    if ctx.json {
        return ctx.print_json(&changes);
    }
    ctx.print(&format!(
        "{}{} created, {} updated, {} deleted, {} unchanged\n",
        if dry_run { "dry run: " } else { "" },
        changes.created,
        changes.updated,
        changes.deleted,
        changes.unchanged
    ))
}

pub fn export(ctx: &Context) -> Result<(), Error> {
    let store = ctx.open_for_reading()?;
    let format = if ctx.json { Format::Json } else { Format::Toml };
    ctx.print(&declarative::export(&store, format)?)
}
