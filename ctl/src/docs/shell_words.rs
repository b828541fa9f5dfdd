//! How an example's command line splits into words: shared by the man page generator, which
//! runs each example through the real parser, and the man page test, which runs them again.

/// The words of a command line as a POSIX shell splits them (single quotes, and a
/// redirection ends the command).
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            ' ' if !quoted => words.extend(word.take()),
            '>' | '|' if !quoted => break,
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}
