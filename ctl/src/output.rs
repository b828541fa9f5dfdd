//! Tables for people. Everything that came from the store is sanitised before it reaches a
//! terminal.

use chrono::{DateTime, Utc};
use forcelogout_core::text::sanitize_line;

/// A plain text table: a header row, left-aligned columns two spaces apart.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|c| sanitize_line(c)).collect());
    }

    pub fn render(&self) -> String {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(self.headers[i].len()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: Vec<&str>| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                text.push_str(cell);
                if i + 1 < cells.len() {
                    let pad = widths[i] - cell.chars().count();
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            text.trim_end().to_string() + "\n"
        };
        let mut text = line(self.headers.clone());
        for row in &self.rows {
            text.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        text
    }
}

/// Cuts a message for a table cell, marking the cut.
pub fn abbreviate(text: &str, max_chars: usize) -> String {
    let line = sanitize_line(text);
    if line.chars().count() <= max_chars {
        line
    } else {
        let cut: String = line.chars().take(max_chars.saturating_sub(1)).collect();
        cut + "…"
    }
}

/// An RFC 3339 stamp to the second, for a table cell: `2026-12-07 19:13:44`.
pub fn short_time(stamp: &str) -> String {
    stamp.get(..19).unwrap_or(stamp).replace('T', " ")
}

/// A firing instant for a table cell, to the minute (schedules fire on whole minutes);
/// `-` for none.
pub fn firing_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The first 8 characters of an Id: enough to name it on the command line.
pub fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

/// The ACTION cell.
pub fn action(kick: bool) -> &'static str {
    if kick {
        "kick"
    } else {
        "warn"
    }
}
