//! `forcelogoutctl apply -f FILE` and `export`: schedules as a file for configuration management.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use forcelogout_core::clock::host_timezone;
use forcelogout_core::declarative::{self, Format};
use forcelogout_core::Error;

use super::{Context, FileSource};

pub fn apply(ctx: &Context, file: &Path, dry_run: bool) -> Result<(), Error> {
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
