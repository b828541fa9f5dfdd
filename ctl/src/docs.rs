//! `forcelogoutctl-docs DIR`: the man pages and the bash, zsh and fish completions. The pages of
//! `forcelogoutctl` (section 8, one per command) come from the same clap definition as
//! `--help`, with a SYNOPSIS of their own (clap_mangen shows every option without its value,
//! and options the validation requires as optional) and EXAMPLES from `examples.rs`;
//! `forcelogout.toml(5)` and `forcelogout-sql(7)` are rendered from docs/configuration.md and
//! docs/reference.md, their one source.

#[allow(dead_code)]
#[path = "cli.rs"]
mod cli;
#[path = "docs/examples.rs"]
mod examples;
#[path = "docs/markdown.rs"]
mod markdown;
#[path = "docs/shell_words.rs"]
mod shell_words;
#[path = "docs/synopsis.rs"]
mod synopsis;

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

const CONFIGURATION: &str = include_str!("../../docs/configuration.md");
const REFERENCE: &str = include_str!("../../docs/reference.md");
const MANUAL: &str = "System Manager's Manual";

/// What the validation of a command requires that clap does not (a flag is optional to clap
/// because `update` shares it): shown as required in the SYNOPSIS. ctl/tests/man_pages.rs
/// checks that the command refuses to run without each.
pub const REQUIRED_AFTER_PARSING: &[(&str, &[&str])] =
    &[("schedule add", &["group", "when", "at"])];

fn source() -> String {
    format!("forcelogout {}", env!("CARGO_PKG_VERSION"))
}

/// The command as its pages show it: what the validation requires marked required.
fn documented_command() -> clap::Command {
    let mut command = cli::Cli::command();
    for (path, required) in REQUIRED_AFTER_PARSING {
        command = mark_required(command, &path.split(' ').collect::<Vec<_>>(), required);
    }
    command.build();
    command
}

fn mark_required(command: clap::Command, path: &[&str], required: &[&str]) -> clap::Command {
    match path.split_first() {
        Some((first, rest)) => {
            command.mut_subcommand(first, |sub| mark_required(sub, rest, required))
        }
        None => required.iter().fold(command, |command, id| {
            if command.get_groups().any(|g| g.get_id() == id) {
                command.mut_group(id, |g| g.required(true))
            } else {
                command.mut_arg(id, |a| a.required(true))
            }
        }),
    }
}

/// The pages of `command` and of each of its visible subcommands, `path` its words after
/// `forcelogoutctl`.
fn command_pages(command: &clap::Command, path: &[String], dir: &Path) -> std::io::Result<()> {
    let name = page_name(path);
    // clap names are 'static; this one-shot generator may leak a few bytes per page.
    let page = command
        .clone()
        .name(&*Box::leak(name.clone().into_boxed_str()));
    let man = clap_mangen::Man::new(page)
        .title(name.clone())
        .section("8")
        .source(source())
        .manual(MANUAL);
    let mut text = Vec::new();
    man.render_title(&mut text)?;
    man.render_name_section(&mut text)?;
    let mut roff = String::from(".SH SYNOPSIS\n");
    roff.push_str(&synopsis::synopsis(command, path));
    text.extend_from_slice(roff.as_bytes());
    man.render_description_section(&mut text)?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut text)?;
    }
    let mut roff = commands_section(command, path);
    roff.push_str(&examples::section(&path.join(" ")));
    roff.push_str(&exit_status());
    roff.push_str(COMMAND_FILES);
    roff.push_str(&see_also(&command_see_also(command, path)));
    text.extend_from_slice(roff.as_bytes());
    std::fs::write(dir.join(format!("{name}.8")), text)?;
    for sub in visible_subcommands(command) {
        let mut sub_path = path.to_vec();
        sub_path.push(sub.get_name().to_string());
        command_pages(sub, &sub_path, dir)?;
    }
    Ok(())
}

fn page_name(path: &[String]) -> String {
    std::iter::once("forcelogoutctl".to_string())
        .chain(path.iter().cloned())
        .collect::<Vec<_>>()
        .join("-")
}

fn visible_subcommands(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
}

/// The subcommands, each with the page that describes it (clap_mangen's list names a page
/// for `help`, which has none).
fn commands_section(command: &clap::Command, path: &[String]) -> String {
    let mut roff = String::new();
    for sub in visible_subcommands(command) {
        let mut sub_path = path.to_vec();
        sub_path.push(sub.get_name().to_string());
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        roff.push_str(&format!(
            ".TP\n\\fB{}\\fR(8)\n{}\n",
            page_name(&sub_path).replace('-', "\\-"),
            markdown::escape_line(&markdown::escape(&about))
        ));
    }
    if roff.is_empty() {
        roff
    } else {
        format!(".SH COMMANDS\n{roff}")
    }
}

/// The exit statuses, from the table the code uses.
fn exit_status() -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in forcelogout_core::error::EXIT_STATUS {
        roff.push_str(&format!(".TP\n{code}\n{}\n", markdown::escape(meaning)));
    }
    roff
}

const COMMAND_FILES: &str = ".SH FILES\n\
    .TP\n/etc/forcelogout/forcelogout.toml\nthe configuration (FORCELOGOUT_CONFIG overrides it), see \\fBforcelogout.toml\\fR(5)\n\
    .TP\n/var/lib/forcelogout/forcelogout.db\nthe store, root's alone (\\-\\-db or FORCELOGOUT_DB override it), see \\fBforcelogout\\-sql\\fR(7)\n\
    .TP\n/var/lib/forcelogout/forcelogout.db\\-daemon.lock\nheld by the running daemon: one daemon per store\n\
    .TP\n/var/lib/forcelogout/readers/forcelogout.db\nthe readers' copy of the store, for the group adm\n\
    .TP\n/etc/forcelogout/hooks.d/\nprograms run for each new event\n\
    .TP\n/run/forcelogout/socket\nthe daemon's control socket\n";

/// The pages a command's page points to: the command above it, the configuration, the
/// store's SQL and the PAM module.
fn command_see_also(command: &clap::Command, path: &[String]) -> Vec<String> {
    let mut pages = Vec::new();
    if !path.is_empty() {
        pages.push(format!("{}(8)", page_name(&path[..path.len() - 1])));
    }
    if command.get_subcommands().next().is_none() || path.is_empty() {
        pages.extend(
            [
                "forcelogout.toml(5)",
                "forcelogout-sql(7)",
                "pam_forcelogout(8)",
            ]
            .map(String::from),
        );
    }
    pages
}

fn see_also(pages: &[String]) -> String {
    let refs: Vec<String> = pages
        .iter()
        .map(|page| {
            let (name, section) = page.split_once('(').unwrap_or((page, ""));
            format!("\\fB{}\\fR({section}", name.replace('-', "\\-"))
        })
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", refs.join(", "))
}

/// `forcelogout.toml(5)`, from docs/configuration.md.
fn configuration_page() -> String {
    let file = markdown::section(CONFIGURATION, "## forcelogout.toml");
    let fleet = markdown::section(CONFIGURATION, "## [fleet]");
    let (intro, keys) = file.split_at(file.find("\n|").map_or(file.len(), |n| n + 1));
    let mut roff = format!(
        ".TH forcelogout.toml 5 \"\" \"{}\" \"File Formats Manual\"\n\
         .SH NAME\nforcelogout.toml \\- configuration of forcelogout\n\
         .SH SYNOPSIS\n/etc/forcelogout/forcelogout.toml\n\
         .SH DESCRIPTION\n",
        source()
    );
    roff.push_str(&markdown::to_roff(intro, false));
    roff.push_str(".SH KEYS\n");
    roff.push_str(&markdown::to_roff(keys, false));
    roff.push_str(".SH \"THE [FLEET] TABLE\"\n");
    roff.push_str(&markdown::to_roff(fleet, false));
    roff.push_str(".SH EXAMPLES\n");
    for block in markdown::code_blocks(file)
        .iter()
        .chain(&markdown::code_blocks(fleet))
    {
        roff.push_str(&code_example(block));
    }
    roff.push_str(
        ".SH FILES\n.TP\n/etc/forcelogout/forcelogout.toml\n\
         the file (FORCELOGOUT_CONFIG names another for the command line tools and the daemon; the PAM \
         module's config= argument for the module)\n",
    );
    roff.push_str(&see_also(
        &[
            "forcelogoutctl(8)",
            "pam_forcelogout(8)",
            "forcelogout-sql(7)",
        ]
        .map(String::from),
    ));
    roff
}

/// `forcelogout-sql(7)`, from docs/reference.md.
fn sql_page() -> String {
    let extension = markdown::section(REFERENCE, "## The SQLite extension");
    let tables = markdown::section(REFERENCE, "## Tables");
    let functions = markdown::section(REFERENCE, "## SQL functions");
    let mut roff = format!(
        ".TH forcelogout\\-sql 7 \"\" \"{}\" \"Miscellaneous Information Manual\"\n\
         .SH NAME\nforcelogout\\-sql \\- the forcelogout store in sqlite3: its tables and SQL functions\n\
         .SH SYNOPSIS\n.nf\n\\fBsqlite3\\fR \\fB\\-cmd\\fR '.load /usr/lib/sqlite3/forcelogout'\n\
         \\&.load /usr/lib/sqlite3/forcelogout\n\
         decode_days(\\fIdays\\fR)\nencode_days(\\fItext\\fR)\ndays_includes(\\fIdays\\fR, \\fIday\\fR)\n\
         next_logout(\\fISchedule\\fR, \\fIScheduleDate\\fR, \\fITime\\fR, \\fITimezone\\fR, \\fIDays\\fR [, \\fIafter\\fR])\n.fi\n\
         .SH DESCRIPTION\n",
        source()
    );
    roff.push_str(&markdown::to_roff(extension, true));
    roff.push_str(".SH TABLES\n");
    roff.push_str(&markdown::to_roff(tables, true));
    roff.push_str(".SH FUNCTIONS\n");
    let (functions, over_the_store) = functions
        .split_once("Over the store:")
        .unwrap_or((functions, ""));
    roff.push_str(&markdown::to_roff(functions, true));
    roff.push_str(".SH EXAMPLES\n.PP\nThe next logout of each current schedule, in UTC:\n");
    for block in markdown::code_blocks(over_the_store) {
        roff.push_str(&code_example(&format!(
            ".load /usr/lib/sqlite3/forcelogout\n{block}"
        )));
    }
    roff.push_str(
        ".SH ENVIRONMENT\n.TP\nFORCELOGOUT_DB\nthe store to attach (it must exist)\n\
         .SH FILES\n\
         .TP\n/usr/lib/sqlite3/forcelogout.so\nthe extension\n\
         .TP\n/var/lib/forcelogout/forcelogout.db\nthe store, attached where the caller may open it (root)\n\
         .TP\n/var/lib/forcelogout/readers/forcelogout.db\nthe readers' copy, attached otherwise (group adm)\n",
    );
    roff.push_str(&see_also(
        &["sqlite3(1)", "forcelogoutctl(8)", "forcelogout.toml(5)"].map(String::from),
    ));
    roff
}

fn code_example(block: &str) -> String {
    let mut roff = String::from(".PP\n.RS 4\n.nf\n");
    for line in block.lines() {
        roff.push_str(&markdown::escape_line(&markdown::escape(line)));
        roff.push('\n');
    }
    roff.push_str(".fi\n.RE\n");
    roff
}

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/docs".into()),
    );
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let documented = documented_command();
    examples::check(&documented)?;
    command_pages(&documented, &[], &man)?;
    std::fs::write(man.join("forcelogout.toml.5"), configuration_page())?;
    std::fs::write(man.join("forcelogout-sql.7"), sql_page())?;
    let mut command = cli::Cli::command();
    command.build();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, "forcelogoutctl", &completions)?;
    }
    println!("{}", out.display());
    Ok(())
}
