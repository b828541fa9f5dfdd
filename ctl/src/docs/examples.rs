//! The EXAMPLES of each command's page: short, real commands. A new command gets its entry
//! here, keyed by its words after `forcelogoutctl` ("" is the program's own page). Every
//! example is parsed with the CLI's definition when the pages are generated: one that the CLI
//! would refuse, or that runs a command other than its page's (or one under it), stops the
//! generator.

use std::io::{Error, ErrorKind};

use super::markdown;
use super::shell_words::shell_words;

/// Per page: what each example does, and the command line.
pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "",
        &[
            (
                "Log the group students out every weekday at 18:00, Berlin time, after a five-minute countdown:",
                "forcelogoutctl schedule add --group students --weekly Mon-Fri --at 18:00 --tz Europe/Berlin",
            ),
            ("Show the next logouts:", "forcelogoutctl next"),
            ("Log alice out in five minutes:", "forcelogoutctl logout alice --in 5m"),
        ],
    ),
    (
        "schedule",
        &[
            ("List the current schedules:", "forcelogoutctl schedule list"),
            (
                "Log everyone out on New Year's Eve at 20:00, the host's time:",
                "forcelogoutctl schedule add --group '*' --once 2026-12-31 --at 20:00",
            ),
        ],
    ),
    (
        "schedule add",
        &[
            (
                "A warning (users may keep working) every evening at 22:00 for the group lab:",
                "forcelogoutctl schedule add --group lab --daily --at 22:00 --warn --message 'The lab closes at 22:00'",
            ),
            (
                "A kick every Friday at 17:30 UTC, with logins refused for an hour after it:",
                "forcelogoutctl schedule add --group students --weekly Fri --at 17:30 --tz UTC --kick --lockout 1h",
            ),
            (
                "See whom it would log out, and when, without adding it:",
                "forcelogoutctl schedule add --group lab --daily --at 22:00 --dry-run",
            ),
        ],
    ),
    (
        "schedule update",
        &[(
            "Move schedule 3f2a… to 19:00, keeping its other fields:",
            "forcelogoutctl schedule update 3f2a --at 19:00",
        )],
    ),
    (
        "schedule delete",
        &[("Delete schedule 3f2a…:", "forcelogoutctl schedule delete 3f2a")],
    ),
    (
        "schedule list",
        &[
            ("The schedules that name the group lab:", "forcelogoutctl schedule list --group lab"),
            ("Every version of every schedule:", "forcelogoutctl schedule list --history"),
        ],
    ),
    (
        "schedule show",
        &[(
            "Schedule 3f2a…, its versions and its next logouts:",
            "forcelogoutctl schedule show 3f2a",
        )],
    ),
    (
        "next",
        &[
            ("The next five logouts:", "forcelogoutctl next --count 5"),
            (
                "The logouts of schedule 3f2a… after Christmas Eve noon:",
                "forcelogoutctl next 3f2a --after 2026-12-24T12:00:00Z",
            ),
        ],
    ),
    (
        "logout",
        &[
            (
                "Log bob out in two minutes, with a message:",
                "forcelogoutctl logout bob --in 2m --message 'Maintenance: please log out'",
            ),
            (
                "Log the group exam out after the default countdown and refuse their logins for 30 minutes:",
                "forcelogoutctl logout exam --kick --lockout 30m",
            ),
        ],
    ),
    (
        "unlock",
        &[("Admit alice's logins again at once:", "forcelogoutctl unlock alice")],
    ),
    (
        "ignore",
        &[(
            "Keep working through a warning addressed to you:",
            "forcelogoutctl ignore",
        )],
    ),
    (
        "sessions",
        &[
            ("The live login sessions:", "forcelogoutctl sessions"),
            ("The same, as JSON:", "forcelogoutctl sessions --json"),
        ],
    ),
    (
        "daemon",
        &[(
            "Run the enforcement service in the foreground, where no systemd runs:",
            "forcelogoutctl daemon",
        )],
    ),
    (
        "events",
        &[
            (
                "The sessions removed since the first of December:",
                "forcelogoutctl events --since 2026-12-01 --event removed",
            ),
            (
                "Follow the log as JSON lines, from ReplayId 1200 on:",
                "forcelogoutctl events --json --follow --after-replay-id 1200",
            ),
        ],
    ),
    (
        "prune",
        &[
            (
                "How many events are older than 400 days:",
                "forcelogoutctl prune --older-than 400 --dry-run",
            ),
            ("Delete them:", "forcelogoutctl prune --older-than 400"),
        ],
    ),
    (
        "apply",
        &[
            (
                "Show what applying a file would change:",
                "forcelogoutctl apply -f /etc/forcelogout/schedules.toml --dry-run",
            ),
            ("Apply it:", "forcelogoutctl apply -f /etc/forcelogout/schedules.toml"),
        ],
    ),
    (
        "export",
        &[(
            "Save the current schedules as a file for apply:",
            "forcelogoutctl export > schedules.toml",
        )],
    ),
    (
        "fleet",
        &[(
            "The fleet's hosts, with the central database of the configuration's [fleet] url:",
            "forcelogoutctl --fleet fleet hosts",
        )],
    ),
    (
        "fleet init",
        &[(
            "Create the central schema, as the database's owner:",
            "forcelogoutctl --fleet='host=db.example.org dbname=forcelogout user=postgres' fleet init",
        )],
    ),
    (
        "fleet hosts",
        &[(
            "Each host, its labels and how far behind it is:",
            "forcelogoutctl --fleet fleet hosts",
        )],
    ),
    (
        "fleet enrol",
        &[
            (
                "Enrol lab1 with two labels; print its [fleet] section, write its secret to a file:",
                "forcelogoutctl --fleet fleet enrol lab1 --labels lab,floor2 --secret-file lab1.secret",
            ),
            (
                "Give lab1 a new secret and new labels (the old secret stops working at once):",
                "forcelogoutctl --fleet fleet enrol lab1 --labels lab --renew",
            ),
        ],
    ),
    (
        "fleet retire",
        &[(
            "Take lab1 out of the fleet (its events stay):",
            "forcelogoutctl --fleet fleet retire lab1",
        )],
    ),
    (
        "fleet status",
        &[("This host's link to the fleet:", "forcelogoutctl fleet status")],
    ),
];

/// The EXAMPLES section of the page of `path`; empty for a command without examples.
pub fn section(path: &str) -> String {
    let Some((_, examples)) = EXAMPLES.iter().find(|(p, _)| *p == path) else {
        return String::new();
    };
    let mut roff = String::from(".SH EXAMPLES\n");
    for (what, line) in *examples {
        roff.push_str(&format!(
            ".PP\n{}\n.PP\n.RS 4\n.nf\n{}\n.fi\n.RE\n",
            markdown::escape_line(&markdown::escape(what)),
            markdown::escape(line).replace('-', "\\-")
        ));
    }
    roff
}

/// Every example parses with `command` and runs the command of its page.
pub fn check(command: &clap::Command) -> std::io::Result<()> {
    for (path, examples) in EXAMPLES {
        for (_, line) in *examples {
            let words = shell_words(line);
            let matches = command
                .clone()
                .try_get_matches_from(&words)
                .map_err(|e| invalid(format!("example {line:?}: {e}")))?;
            let mut ran = Vec::new();
            let mut at = &matches;
            while let Some((name, sub)) = at.subcommand() {
                ran.push(name);
                at = sub;
            }
            let ran = ran.join(" ");
            let under_page =
                path.is_empty() || ran == *path || ran.starts_with(&format!("{path} "));
            if !under_page {
                return Err(invalid(format!(
                    "example {line:?} is on the page of {path:?} but runs {ran:?}"
                )));
            }
        }
    }
    Ok(())
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidData, message)
}
