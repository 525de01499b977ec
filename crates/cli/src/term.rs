//! What the CLI prints goes through [`safe`]: names, reasons and records come from the bucket,
//! and a control character in them (an escape sequence) could rewrite what the terminal shows.

use std::borrow::Cow;

/// Whether `c` may change how the terminal shows what follows: a control character, or one that
/// reorders text (the bidirectional overrides and isolates).
fn reorders_or_controls(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// `s` with every control character but newline and tab, and every bidirectional override,
/// shown as U+FFFD.
pub fn safe(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| reorders_or_controls(c) && c != '\n' && c != '\t';
    if s.chars().any(unsafe_char) {
        Cow::Owned(s.chars().map(|c| if unsafe_char(c) { '\u{FFFD}' } else { c }).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// Text read from the bucket (a reason, a key, a hold's words) on one line: a newline in it shows
/// as `⏎`, so that it cannot print a line of its own (a fake `OK:`).
pub fn one_line(s: &str) -> String {
    s.replace("\r\n", "⏎").replace(['\n', '\r'], "⏎")
}

/// `println!`, made [`safe`].
macro_rules! say {
    ($($arg:tt)*) => { println!("{}", $crate::term::safe(&format!($($arg)*))) };
}

/// `print!`, made [`safe`].
macro_rules! say_inline {
    ($($arg:tt)*) => { print!("{}", $crate::term::safe(&format!($($arg)*))) };
}

/// `eprintln!`, made [`safe`].
macro_rules! say_err {
    ($($arg:tt)*) => { eprintln!("{}", $crate::term::safe(&format!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::safe;

    #[test]
    fn escapes_and_other_controls_are_never_printed() {
        let cases = [
            ("plain text\nwith lines\tand tabs", "plain text\nwith lines\tand tabs"),
            ("\u{1b}[2J\u{1b}]52;c;aGk=\u{7}ok", "\u{FFFD}[2J\u{FFFD}]52;c;aGk=\u{FFFD}ok"),
            ("carriage\rreturn", "carriage\u{FFFD}return"),
            ("c1 csi \u{9b}31m", "c1 csi \u{FFFD}31m"),
            ("naïve ✓", "naïve ✓"),
            ("bidi \u{202E}kcatta\u{2066}", "bidi \u{FFFD}kcatta\u{FFFD}"),
        ];
        for (input, want) in cases {
            assert_eq!(safe(input), want, "{input:?}");
        }
        assert_eq!(super::one_line("a reason\nOK: all good\r\n"), "a reason⏎OK: all good⏎");
    }
}
