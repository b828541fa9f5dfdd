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
    std::fs::write(dir.join(format!("{name}.8")), text)?;
    for sub in command
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
    {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
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
