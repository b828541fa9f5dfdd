//! A command's SYNOPSIS from its clap definition: required options and arguments bare,
//! optional ones in brackets, each option with its value, one-of groups as `{a | b}`, and the
//! global options last.

use clap::{Arg, Command};

/// The roff of the SYNOPSIS section's body for `command`, `path` its words after
/// `forcelogoutctl`.
pub fn synopsis(command: &Command, path: &[String]) -> String {
    let mut words = vec![bold(
        &std::iter::once("forcelogoutctl")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
    )];
    let shown = |a: &&Arg| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version");
    let mut grouped: Vec<&str> = Vec::new();
    let mut alternatives = Vec::new();
    for group in command.get_groups() {
        if group.clone().is_multiple() {
            continue;
        }
        let members: Vec<&Arg> = group
            .get_args()
            .filter_map(|id| command.get_arguments().find(|a| a.get_id() == id))
            .filter(shown)
            .collect();
        grouped.extend(members.iter().map(|a| a.get_id().as_str()));
        let inner = members
            .iter()
            .map(|a| option(a))
            .collect::<Vec<_>>()
            .join(" | ");
        alternatives.push(if group.is_required_set() {
            format!("{{{inner}}}")
        } else {
            format!("[{inner}]")
        });
    }
    let options: Vec<&Arg> = command
        .get_arguments()
        .filter(shown)
        .filter(|a| !a.is_positional() && !grouped.contains(&a.get_id().as_str()))
        .collect();
    let (globals, own): (Vec<&Arg>, Vec<&Arg>) =
        options.into_iter().partition(|a| a.is_global_set());
    let (required, optional): (Vec<&Arg>, Vec<&Arg>) =
        own.into_iter().partition(|a| a.is_required_set());
    words.extend(required.iter().map(|a| option(a)));
    words.extend(alternatives);
    words.extend(optional.iter().map(|a| format!("[{}]", option(a))));
    words.extend(globals.iter().map(|a| format!("[{}]", option(a))));
    for arg in command.get_positionals().filter(shown) {
        let name = italic(&value_name(arg));
        words.push(if arg.is_required_set() {
            name
        } else {
            format!("[{name}]")
        });
    }
    if command.get_subcommands().any(|s| !s.is_hide_set()) {
        let name = italic("command");
        words.push(if command.is_subcommand_required_set() {
            name
        } else {
            format!("[{name}]")
        });
    }
    format!(".ad l\n.nh\n{}\n.hy\n.ad b\n", words.join(" "))
}

/// An option as typed: `--name VALUE`, `--name[=VALUE]`, or the flag alone.
fn option(arg: &Arg) -> String {
    let flag = match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => bold(&format!("--{long}")),
        (None, Some(short)) => bold(&format!("-{short}")),
        (None, None) => return italic(&value_name(arg)),
    };
    if !arg.get_action().takes_values() {
        return flag;
    }
    let optional_value = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
    match (optional_value, arg.is_require_equals_set()) {
        (true, _) => format!("{flag}[={}]", italic(&value_name(arg))),
        (false, true) => format!("{flag}={}", italic(&value_name(arg))),
        (false, false) => format!("{flag} {}", italic(&value_name(arg))),
    }
}

fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first())
        .map(|n| n.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
}

fn bold(text: &str) -> String {
    format!("\\fB{}\\fR", text.replace('-', "\\-"))
}

fn italic(text: &str) -> String {
    format!("\\fI{}\\fR", text.replace('-', "\\-"))
}
