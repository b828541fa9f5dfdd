//! The few Markdown constructs the documents in docs/ use, as roff: the man pages that have a
//! document as their source (the configuration file, the SQL extension) are rendered from it,
//! so the two cannot drift.

/// The text under the heading `heading` (its exact line, e.g. `## Tables`), up to the next
/// heading of the same or a higher level; empty if there is no such heading.
pub fn section<'a>(document: &'a str, heading: &str) -> &'a str {
    let level = heading.chars().take_while(|&c| c == '#').count();
    let Some(start) = document
        .lines()
        .position(|line| line == heading)
        .map(|n| line_offset(document, n + 1))
    else {
        return "";
    };
    let rest = &document[start..];
    let mut offset = 0;
    let mut fenced = false;
    for line in rest.split_inclusive('\n') {
        fenced ^= line.starts_with("```");
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !fenced && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        offset += line.len();
    }
    &rest[..offset]
}

fn line_offset(text: &str, line: usize) -> usize {
    text.split_inclusive('\n').take(line).map(str::len).sum()
}

/// The fenced code blocks of `text`, each as its lines.
pub fn code_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start().starts_with("```")) {
            (None, true) => current = Some(String::new()),
            (Some(block), true) => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), false) => {
                block.push_str(line.trim_start_matches("  "));
                block.push('\n');
            }
            (None, false) => {}
        }
    }
    blocks
}

/// `text` as roff: paragraphs, `###` headings as sub-sections, tables as tagged paragraphs
/// (the first column the tag), lists, and code blocks unless `code` is false (they are then
/// left out, for an EXAMPLES section of their own).
pub fn to_roff(text: &str, code: bool) -> String {
    let mut out = String::new();
    let mut paragraph: Vec<&str> = Vec::new();
    let mut header: Option<Vec<String>> = None;
    let mut fenced: Option<bool> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            flush(&mut out, &mut paragraph);
            fenced = match fenced {
                None => {
                    if code {
                        out.push_str(".PP\n.RS 4\n.nf\n");
                    }
                    Some(code)
                }
                Some(shown) => {
                    if shown {
                        out.push_str(".fi\n.RE\n");
                    }
                    None
                }
            };
            continue;
        }
        match fenced {
            Some(true) => {
                out.push_str(&escape_line(&escape(line.trim_start_matches("  "))));
                out.push('\n');
                continue;
            }
            Some(false) => continue,
            None => {}
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            flush(&mut out, &mut paragraph);
            header = None;
        } else if let Some(title) = trimmed.strip_prefix("### ") {
            flush(&mut out, &mut paragraph);
            out.push_str(&format!(".SS {}\n", escape_line(&inline(title))));
        } else if trimmed.starts_with('|') {
            flush(&mut out, &mut paragraph);
            let cells = table_cells(trimmed);
            if cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                continue;
            }
            match &header {
                None => header = Some(cells),
                Some(names) => out.push_str(&table_row(names, &cells)),
            }
        } else if let Some(item) = trimmed.strip_prefix("- ") {
            flush(&mut out, &mut paragraph);
            out.push_str(".IP \\(bu 2\n");
            paragraph.push(item);
        } else {
            paragraph.push(trimmed);
        }
    }
    flush(&mut out, &mut paragraph);
    out
}

fn flush(out: &mut String, paragraph: &mut Vec<&str>) {
    if paragraph.is_empty() {
        return;
    }
    if !out.ends_with(".IP \\(bu 2\n") {
        out.push_str(".PP\n");
    }
    out.push_str(&escape_line(&inline(&paragraph.join(" "))));
    out.push('\n');
    paragraph.clear();
}

/// The cells of a table row, `\|` unescaped.
pub fn table_cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '|' => cells.push(String::new()),
            c => {
                // `\|` is a bar inside a cell.
                let c = if c == '\\' && chars.peek() == Some(&'|') {
                    chars.next().unwrap_or(c)
                } else {
                    c
                };
                if let Some(cell) = cells.last_mut() {
                    cell.push(c)
                }
            }
        }
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// One row as a tagged paragraph: the first cell the tag, a middle cell after it (named by
/// its column when that is "default"), the last cell the text.
fn table_row(names: &[String], cells: &[String]) -> String {
    let mut tag = inline(&cells[0]);
    if cells.len() > 2 {
        let middle = inline(&cells[1]);
        if middle.starts_with('(') {
            tag.push_str(&format!(" {middle}"));
        } else if names.get(1).is_some_and(|n| n == "default") {
            tag.push_str(&format!(" (default: {middle})"));
        } else {
            tag.push_str(&format!(" ({middle})"));
        }
    }
    let text = cells.last().map(|c| inline(c)).unwrap_or_default();
    format!(".TP\n{}\n{}\n", escape_line(&tag), escape_line(&text))
}

/// Inline Markdown as roff: code in bold, emphasis in italics, links as their text.
pub fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            if let Some(end) = rest[1..].find('`') {
                out.push_str(&format!(
                    "\\fB{}\\fR",
                    escape(&rest[1..1 + end]).replace('-', "\\-")
                ));
                rest = &rest[end + 2..];
                continue;
            }
        }
        if rest.starts_with("**") {
            if let Some(end) = rest[2..].find("**") {
                out.push_str(&format!("\\fB{}\\fR", inline(&rest[2..2 + end])));
                rest = &rest[end + 4..];
                continue;
            }
        }
        if c == '[' {
            if let Some((label, after)) = link(rest) {
                out.push_str(&inline(label));
                rest = after;
                continue;
            }
        }
        out.push_str(&escape(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `[label](target)` at the start of `text`: the label and what follows the link.
fn link(text: &str) -> Option<(&str, &str)> {
    let close = text.find("](")?;
    let end = text[close..].find(')')? + close;
    (!text[1..close].contains('[')).then(|| (&text[1..close], &text[end + 1..]))
}

/// Backslashes escaped for roff.
pub fn escape(text: &str) -> String {
    text.replace('\\', "\\e")
}

/// A line that roff would take for a request (a leading `.` or `'`) made plain text.
pub fn escape_line(line: &str) -> String {
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line.to_string()
    }
}
