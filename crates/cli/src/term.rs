//! What the CLI prints goes through [`safe`]: names, reasons and records come from the bucket,
//! and a control character in them (an escape sequence) could rewrite what the terminal shows.

use std::borrow::Cow;

/// `s` with every control character but newline and tab shown as U+FFFD.
pub fn safe(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if s.chars().any(unsafe_char) {
        Cow::Owned(s.chars().map(|c| if unsafe_char(c) { '\u{FFFD}' } else { c }).collect())
    } else {
        Cow::Borrowed(s)
    }
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
        ];
        for (input, want) in cases {
            assert_eq!(safe(input), want, "{input:?}");
        }
    }
}
