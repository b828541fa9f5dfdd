//! `forcelogoutctl-docs DIR`: the man pages (section 8, one per command) and the bash, zsh and
//! fish completions of `forcelogoutctl`, generated from the same clap definition as `--help`.

#[allow(dead_code)]
#[path = "cli.rs"]
mod cli;

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn man_pages(command: &clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    // clap names are 'static; this one-shot generator may leak a few bytes per page.
    let page = command
        .clone()
        .name(&*Box::leak(name.to_string().into_boxed_str()));
    let mut text = Vec::new();
    clap_mangen::Man::new(page).section("8").render(&mut text)?;
    text.extend_from_slice(common_sections(name).as_bytes());
    std::fs::write(dir.join(format!("{name}.8")), text)?;
    for sub in command
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
    {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

/// What every page ends with: the exit statuses (from the table the code uses), the files,
/// and the pages that exist.
fn common_sections(name: &str) -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in forcelogout_core::error::EXIT_STATUS {
        roff.push_str(&format!(".TP\n{code}\n{meaning}\n"));
    }
    roff.push_str(
        ".SH FILES\n\
         .TP\n/etc/forcelogout/forcelogout.toml\nthe configuration (FORCELOGOUT_CONFIG overrides it)\n\
         .TP\n/var/lib/forcelogout/forcelogout.db\nthe store, root's alone (--db or FORCELOGOUT_DB override it)\n\
         .TP\n/var/lib/forcelogout/readers/forcelogout.db\nthe readers' copy of the store, for the group adm\n\
         .TP\n/etc/forcelogout/hooks.d/\nprograms run for each new event\n\
         .TP\n/run/forcelogout/socket\nthe daemon's control socket\n",
    );
    let mut see_also = vec!["pam_forcelogout(8)".to_string(), "sqlite3(1)".to_string()];
    if name != "forcelogoutctl" {
        see_also.insert(0, "forcelogoutctl(8)".to_string());
    }
    let refs: Vec<String> = see_also
        .iter()
        .map(|page| {
            let (page, section) = page.split_once('(').unwrap_or((page, ""));
            format!("\\fB{page}\\fR({section}")
        })
        .collect();
    roff.push_str(&format!(".SH \"SEE ALSO\"\n{}\n", refs.join(", ")));
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
    let mut command = cli::Cli::command();
    command.build();
    man_pages(&command, "forcelogoutctl", &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, "forcelogoutctl", &completions)?;
    }
    println!("{}", out.display());
    Ok(())
}
