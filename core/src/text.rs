//! Text that reaches a terminal: control characters and escape sequences never pass.

/// Characters that can move a cursor, change a terminal's state or reorder what is shown:
/// C0 and C1 controls, DEL, and Unicode's bidirectional overrides and isolates.
pub fn is_unsafe_for_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Strips escape sequences (CSI, OSC, DCS and two-byte ESC forms, in their 7- and 8-bit
/// shapes) and every other unsafe character; keeps newlines and tabs.
pub fn sanitize_for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\u{1b}' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if is_unsafe_for_terminal(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// One line for a log or a table: like `sanitize_for_terminal`, with newlines and tabs as spaces.
pub fn sanitize_line(text: &str) -> String {
    sanitize_for_terminal(text).replace(['\n', '\t'], " ")
}

/// A CSI sequence ends at its first byte in 0x40..=0x7E.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
    }
}

/// OSC, DCS and the like run to BEL or the string terminator (ESC \ or U+009C).
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escape_sequences_and_controls() {
        let cases = [
            ("\u{1b}[2J\u{1b}[HHello", "Hello"),
            ("red \u{1b}[31mtext\u{1b}[0m", "red text"),
            ("\u{1b}]0;owned title\u{7}ok", "ok"),
            ("\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\", "link"),
            ("bell\u{7} back\u{8}space\r", "bell backspace"),
            ("c1 \u{9b}31mcsi", "c1 csi"),
            ("keep\nlines\tand tabs", "keep\nlines\tand tabs"),
            ("bidi \u{202E}gnp.exe", "bidi gnp.exe"),
            ("Grüße, 日本", "Grüße, 日本"),
            ("dangling \u{1b}", "dangling "),
            ("\u{1b}Pdcs payload\u{1b}\\after", "after"),
            ("\u{7f}del", "del"),
        ];
        for (input, expected) in cases {
            assert_eq!(sanitize_for_terminal(input), expected, "{input:?}");
        }
    }

    #[test]
    fn line_form_has_no_newlines() {
        assert_eq!(sanitize_line("a\nb\tc"), "a b c");
    }
}
