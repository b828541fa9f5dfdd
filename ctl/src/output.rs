//! Tables for people, JSON for programs. Everything that came from the store is sanitised
//! before it reaches a terminal.

use std::io::Write;

use forcelogout_core::text::sanitize_line;
use forcelogout_core::Error;
use serde::Serialize;

pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing to standard output", e))
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::io("encoding JSON", std::io::Error::other(e)))?;
    text.push('\n');
    print(&text)
}

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
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    text.push_str(cell);
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
