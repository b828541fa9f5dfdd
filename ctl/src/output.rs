//! Tables for people. Everything that came from the store is sanitised before it reaches a
//! terminal.

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
