//! The man pages as `man` shows them: every generated page (forcelogoutctl-docs) and the
//! hand-written pam_forcelogout(8) rendered with `man -l`, checked for the sections a Debian
//! page has, for references to pages and commands that exist, for the exit statuses of the
//! code, and for a SYNOPSIS whose required options the command does require.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use forcelogout_core::error::EXIT_STATUS;

#[path = "../src/docs/shell_words.rs"]
mod shell_words;
use shell_words::shell_words;

/// The command pages that must have EXAMPLES (their entries are in ctl/src/docs/examples.rs).
/// A command added since may have none yet; add it here with its examples.
const PAGES_WITH_EXAMPLES: &[&str] = &[
    "forcelogoutctl",
    "forcelogoutctl-schedule",
    "forcelogoutctl-schedule-add",
    "forcelogoutctl-schedule-update",
    "forcelogoutctl-schedule-delete",
    "forcelogoutctl-schedule-list",
    "forcelogoutctl-schedule-show",
    "forcelogoutctl-next",
    "forcelogoutctl-logout",
    "forcelogoutctl-unlock",
    "forcelogoutctl-ignore",
    "forcelogoutctl-sessions",
    "forcelogoutctl-daemon",
    "forcelogoutctl-events",
    "forcelogoutctl-prune",
    "forcelogoutctl-apply",
    "forcelogoutctl-export",
    "forcelogoutctl-fleet",
    "forcelogoutctl-fleet-init",
    "forcelogoutctl-fleet-hosts",
    "forcelogoutctl-fleet-status",
    "forcelogoutctl-fleet-enrol",
    "forcelogoutctl-fleet-retire",
    "pam_forcelogout",
    "forcelogout.toml",
    "forcelogout-sql",
];

/// Commands that exist without a page of their own: started by the daemon, not by people.
const HIDDEN_COMMANDS: &[&str] = &["notify-agent", "fleet-link", "help"];

struct Page {
    /// `name(section)`.
    title: String,
    /// Each section's lines, by heading.
    sections: BTreeMap<String, Vec<String>>,
    text: String,
}

fn man_available() -> bool {
    Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn generate(dir: &Path) -> Vec<PathBuf> {
    let out = Command::new(env!("CARGO_BIN_EXE_forcelogoutctl-docs"))
        .arg(dir)
        .output()
        .expect("forcelogoutctl-docs");
    assert!(
        out.status.success(),
        "forcelogoutctl-docs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir.join("man"))
        .expect("man dir")
        .map(|e| e.expect("entry").path())
        .collect();
    pages.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/man/pam_forcelogout.8"));
    pages.sort();
    pages
}

/// `man -l`, wide enough that no line is broken, as plain ASCII hyphens.
fn render(path: &Path) -> Page {
    let out = Command::new("man")
        .arg("-l")
        .arg(path)
        .env("MANWIDTH", "400")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MAN_KEEP_FORMATTING")
        .output()
        .expect("man -l");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "man -l {}: {stderr}",
        path.display()
    );
    let text = String::from_utf8_lossy(&out.stdout).replace(['\u{2010}', '\u{2212}'], "-");
    let file = path.file_name().and_then(|n| n.to_str()).expect("name");
    let (name, section) = file.rsplit_once('.').expect("section suffix");
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().skip(1) {
        if !line.is_empty() && !line.starts_with(' ') {
            current = line.trim().to_string();
            sections.entry(current.clone()).or_default();
        } else if let Some(lines) = sections.get_mut(&current) {
            lines.push(line.trim().to_string());
        }
    }
    Page {
        title: format!("{name}({section})"),
        sections,
        text,
    }
}

fn pages() -> Option<(tempfile::TempDir, Vec<Page>)> {
    if !man_available() {
        println!("skipped: man is not installed (package man-db)");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pages = generate(dir.path()).iter().map(|p| render(p)).collect();
    Some((dir, pages))
}

fn name_of(page: &Page) -> &str {
    page.title.split('(').next().unwrap_or_default()
}

#[test]
fn every_page_has_the_sections_of_a_debian_page() {
    let Some((_dir, pages)) = pages() else {
        return;
    };
    let mut missing = Vec::new();
    for page in &pages {
        let name = name_of(page);
        let mut wanted = vec!["NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "SEE ALSO"];
        if name.starts_with("forcelogoutctl") {
            wanted.push("EXIT STATUS");
        }
        if name == "pam_forcelogout" {
            wanted.push("RETURN VALUES");
        }
        if PAGES_WITH_EXAMPLES.contains(&name) {
            wanted.push("EXAMPLES");
        }
        for section in wanted {
            let body = page.sections.get(section);
            if body.is_none_or(|lines| lines.iter().all(|l| l.is_empty())) {
                missing.push(format!("{}: {section}", page.title));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "missing or empty sections: {missing:#?}"
    );
    let titles: BTreeSet<&str> = pages.iter().map(name_of).collect();
    for name in PAGES_WITH_EXAMPLES {
        assert!(titles.contains(name), "no page {name}");
    }
}

/// Every `name(N)` a page mentions.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('(') {
        let section_ok =
            bytes.get(i + 1).is_some_and(u8::is_ascii_digit) && bytes.get(i + 2) == Some(&b')');
        if !section_ok {
            continue;
        }
        let start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
            .map_or(0, |n| n + 1);
        let name = &text[start..i];
        if !name.is_empty() {
            found.insert(format!("{name}({})", bytes[i + 1] as char));
        }
    }
    found
}

fn installed(reference: &str) -> bool {
    let (name, section) = reference
        .trim_end_matches(')')
        .split_once('(')
        .expect("name(N)");
    Command::new("man")
        .args(["-w", "-s", section, name])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn pages_name_only_pages_and_commands_that_exist() {
    let Some((_dir, pages)) = pages() else {
        return;
    };
    // Case-insensitive, as man finds pages (the header line shows the title in capitals).
    let ours: BTreeSet<String> = pages.iter().map(|p| p.title.to_lowercase()).collect();
    let commands: BTreeSet<String> = pages
        .iter()
        .filter_map(|p| name_of(p).strip_prefix("forcelogoutctl-"))
        .map(|c| c.replace('-', " "))
        .chain(HIDDEN_COMMANDS.iter().map(|c| c.to_string()))
        .collect();
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for page in &pages {
        for reference in references(&page.text) {
            if !ours.contains(&reference.to_lowercase()) && !installed(&reference) {
                wrong.push(format!("{}: {reference} (no such page)", page.title));
            }
        }
        let named = named_commands(&page.text);
        seen.extend(named.iter().cloned());
        for named in named {
            if !commands.contains(&named) {
                wrong.push(format!(
                    "{}: forcelogoutctl {named} (no such command)",
                    page.title
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Not a check that finds nothing: the examples name commands.
    assert!(
        seen.contains("schedule add"),
        "no command found in {seen:?}"
    );
}

/// The command words after each `forcelogoutctl ` (global options and their values
/// skipped), as far as they are words of a command: `schedule add`, `next`, …
fn named_commands(text: &str) -> Vec<String> {
    let is_word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    let mut named = Vec::new();
    for (i, _) in text.match_indices("forcelogoutctl ") {
        let mut words = text[i + "forcelogoutctl ".len()..]
            .split_whitespace()
            .map(|w| w.trim_end_matches([',', '.', ';', ':', ')', '`', '\'']));
        let mut first = words.next();
        while let Some(option) = first.filter(|w| w.starts_with('-')) {
            if option == "--db" {
                words.next();
            }
            first = words.next();
        }
        let Some(first) = first.filter(|w| is_word(w)) else {
            continue;
        };
        named.push(match words.next() {
            Some(second) if matches!(first, "schedule" | "fleet") && is_word(second) => {
                format!("{first} {second}")
            }
            _ => first.to_string(),
        });
    }
    named
}

#[test]
fn exit_status_sections_are_the_codes_of_the_code() {
    let Some((_dir, pages)) = pages() else {
        return;
    };
    let expected: Vec<(String, String)> = EXIT_STATUS
        .iter()
        .map(|(code, meaning)| {
            (
                code.to_string(),
                meaning.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    for page in pages
        .iter()
        .filter(|p| p.sections.contains_key("EXIT STATUS"))
    {
        let mut found: Vec<(String, String)> = Vec::new();
        for line in &page.sections["EXIT STATUS"] {
            let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            if !first.is_empty() && first.chars().all(|c| c.is_ascii_digit()) {
                found.push((first.to_string(), rest.trim().to_string()));
            } else if let Some(last) = found.last_mut() {
                if !line.is_empty() {
                    last.1 = format!("{} {}", last.1, line).trim().to_string();
                }
            }
        }
        let found: Vec<(String, String)> = found
            .into_iter()
            .map(|(c, m)| (c, m.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect();
        assert_eq!(found, expected, "{}", page.title);
    }
}

/// The options a SYNOPSIS shows as required (outside brackets), each a list of alternatives
/// (`{--once DATE | --daily | --weekly DAYS}` is one).
fn required_options(synopsis: &str) -> Vec<Vec<String>> {
    let mut required = Vec::new();
    let mut depth = 0;
    let mut group: Option<Vec<String>> = None;
    for word in synopsis.split_whitespace() {
        let opens = word.starts_with('[');
        if opens {
            depth += word.matches('[').count();
        }
        if depth == 0 {
            let bare = word.trim_matches(['{', '}', '|']);
            if word.starts_with('{') {
                group = Some(Vec::new());
            }
            if bare.starts_with("--") {
                match &mut group {
                    Some(g) => g.push(bare.to_string()),
                    None => required.push(vec![bare.to_string()]),
                }
            }
            if word.ends_with('}') {
                required.extend(group.take());
            }
        }
        depth -= word.matches(']').count().min(depth);
    }
    required
}

/// `words` without `option` and its value (the next word, unless it is an option too).
fn without(words: &[String], option: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for word in words {
        if skip_value {
            skip_value = false;
            if !word.starts_with("--") {
                continue;
            }
        }
        if word == option {
            skip_value = true;
            continue;
        }
        out.push(word.clone());
    }
    out
}

/// The example command lines of a page.
fn examples(page: &Page) -> Vec<Vec<String>> {
    page.sections
        .get("EXAMPLES")
        .into_iter()
        .flatten()
        .filter(|l| l.starts_with("forcelogoutctl "))
        .map(|l| shell_words(l))
        .collect()
}

#[test]
fn what_a_synopsis_requires_the_command_requires() {
    let Some((dir, pages)) = pages() else {
        return;
    };
    let db = dir.path().join("store.db");
    let mut checked = 0;
    for page in pages
        .iter()
        .filter(|p| name_of(p).starts_with("forcelogoutctl-"))
    {
        let synopsis = page.sections["SYNOPSIS"].join(" ");
        for alternatives in required_options(&synopsis) {
            for example in examples(page) {
                if !alternatives.iter().any(|o| example.contains(o)) {
                    continue;
                }
                let mut words = example.clone();
                for option in &alternatives {
                    words = without(&words, option);
                }
                let out = Command::new(env!("CARGO_BIN_EXE_forcelogoutctl"))
                    .arg("--db")
                    .arg(&db)
                    .args(&words[1..])
                    .env("FORCELOGOUT_CONFIG", dir.path().join("none.toml"))
                    .output()
                    .expect("forcelogoutctl");
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "{}: without {alternatives:?}, {words:?} should be refused: {}",
                    page.title,
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    // schedule add (--group, --at, one of --once/--daily/--weekly) and prune (--older-than).
    assert!(checked >= 4, "only {checked} required options were checked");
}

/// The keys the parser takes in a table, from its refusal of an unknown one.
fn parser_keys(text_with_unknown_key: &str) -> BTreeSet<String> {
    let error = forcelogout_core::config::Config::parse(text_with_unknown_key)
        .expect_err("an unknown key is refused")
        .to_string();
    let (_, expected) = error
        .split_once("expected one of")
        .unwrap_or_else(|| panic!("the refusal lists the keys: {error}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// The keys a section of forcelogout.toml(5) describes: each entry's tag is `KEY (default: …)`
/// or `KEY (required)`.
fn page_keys(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| {
            let (key, rest) = l.split_once(' ')?;
            (rest.starts_with("(default:") || rest.starts_with("(required)"))
                .then(|| key.to_string())
        })
        .collect()
}

#[test]
fn the_configuration_page_describes_every_key_the_parser_takes() {
    let Some((_dir, pages)) = pages() else {
        return;
    };
    let page = pages
        .iter()
        .find(|p| p.title == "forcelogout.toml(5)")
        .expect("forcelogout.toml(5)");
    let mut top = parser_keys("not_a_key = 1\n");
    // The [fleet] table has a section of its own.
    assert!(top.remove("fleet"), "the parser takes [fleet]");
    assert_eq!(page_keys(&page.sections["KEYS"]), top);
    let mut fleet = parser_keys("[fleet]\nurl = \"host=db\"\nnot_a_key = 1\n");
    // `labels` is taken only to be ignored with a note in the link's log: labels are central.
    let ignored =
        forcelogout_core::config::Config::parse("[fleet]\nurl = \"host=db\"\nlabels = []\n")
            .expect("[fleet] labels is taken")
            .fleet
            .expect("[fleet]");
    assert!(ignored.obsolete_labels);
    fleet.remove("labels");
    assert_eq!(page_keys(&page.sections["THE [FLEET] TABLE"]), fleet);
}
