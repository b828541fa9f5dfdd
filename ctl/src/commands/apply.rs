//! `forcelogoutctl apply -f FILE` and `export`: schedules as a file for configuration management.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use forcelogout_core::clock::host_timezone;
use forcelogout_core::declarative::{self, Format};
use forcelogout_core::Error;

use super::{Context, FileSource};

/// Applies the file, naming each change; a file that deletes every current schedule (or an
/// empty one) is refused without `delete_all`. A dry run lists the same lines and writes nothing.
pub fn apply(ctx: &Context, file: &Path, dry_run: bool, delete_all: bool) -> Result<(), Error> {
    let name = file.display().to_string();
    let text = match &ctx.file_source {
        FileSource::Path => Cow::Owned(read(file, None)?),
        FileSource::Sent(Some(text)) => Cow::Borrowed(text.as_str()),
        FileSource::Sent(None) => {
            return Err(Error::invalid(
                "file",
                format!("{name}: the client sent no content (the daemon opens no file a client names; update forcelogoutctl)"),
            ))
        }
    };
    let wanted = declarative::parse(&name, &text, &host_timezone())?;
    let mut store = if dry_run {
        ctx.open_for_reading()?
    } else {
        ctx.open_for_writing()?
    };
    let plan = declarative::plan(&store, wanted, ctx.now())?;
    match plan.check_deletions(&name, delete_all) {
        Err(refusal) if dry_run => ctx.warn(&format!("the real run is refused: {refusal}")),
        Err(refusal) => return Err(refusal),
        Ok(()) => {}
    }
    if !dry_run {
        declarative::write(&mut store, &plan, &ctx.actor, ctx.now())?;
    }
    let changes = plan.changes();
    if ctx.json {
        return ctx.print_json(&changes);
    }
    let mut text: String = changes
        .changes
        .iter()
        .map(|c| format!("{}\n", c.line()))
        .collect();
    text.push_str(&format!(
        "{}{} created, {} updated, {} deleted, {} unchanged\n",
        if dry_run { "dry run: " } else { "" },
        changes.created,
        changes.updated,
        changes.deleted,
        changes.unchanged
    ));
    ctx.print(&text)
}

/// The text of `file`, read as the user who runs this; at most `limit` bytes when given (what a
/// client sends the daemon).
pub fn read(file: &Path, limit: Option<u64>) -> Result<String, Error> {
    let name = file.display().to_string();
    let failed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => Error::invalid("file", format!("{name}: no such file")),
        _ => Error::io(format!("reading {name}"), e),
    };
    let Some(limit) = limit else {
        return std::fs::read_to_string(file).map_err(failed);
    };
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(failed)?;
    if bytes.len() as u64 > limit {
        return Err(Error::invalid(
            "file",
            format!("{name}: larger than {} KiB", limit / 1024),
        ));
    }
    String::from_utf8(bytes).map_err(|_| Error::invalid("file", format!("{name}: not UTF-8 text")))
}

pub fn export(ctx: &Context) -> Result<(), Error> {
    let store = ctx.open_for_reading()?;
    let format = if ctx.json { Format::Json } else { Format::Toml };
    ctx.print(&declarative::export(&store, format)?)
}
