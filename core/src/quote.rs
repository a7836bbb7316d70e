//! Quoting names and user input in error messages without `{:?}`.
//!
//! `{:?}` on a string escapes every character Unicode does not call printable, which links the
//! standard library's printable tables (about 3 KB of the browser's wasm). [`Quoted`] escapes only
//! the quote, the backslash and control characters: the text a user typed stays readable, and a
//! string that ends or hides the quotes cannot.

use std::fmt::{self, Write};

/// Displays a string in double quotes, with `"`, `\` and control characters escaped (`\n`, `\t`,
/// `\r`, otherwise `\u{…}`). For the printable strings of error messages it writes what `{:?}`
/// writes.
#[derive(Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Character by character: slicing the text between escapes would link the standard
        // library's slicing panic, which formats a `char` with `{:?}`.
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// The same text as [`fmt::Display`], so that `Quoted` can stand for a string inside `{:?}`
/// output (a map's keys, a list's strings).
impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Quoted;

    #[test]
    fn printable_text_is_quoted_as_debug_quotes_it() {
        for s in ["", "Task", "naïve café", "日本", "a b", "emoji 🎉", "it's"] {
            assert_eq!(Quoted(s).to_string(), format!("{s:?}"));
        }
    }

    #[test]
    fn quotes_backslashes_and_control_characters_are_escaped() {
        assert_eq!(
            Quoted("say \"hi\"\\\n\t\r\u{0}\u{7f}\u{85}").to_string(),
            "\"say \\\"hi\\\"\\\\\\n\\t\\r\\u{0}\\u{7f}\\u{85}\""
        );
    }

    proptest::proptest! {
        #[test]
        fn printable_letters_and_symbols_are_quoted_as_debug_quotes_them(s in "[ -~À-ÿ一-鿿]*") {
            proptest::prop_assert_eq!(Quoted(&s).to_string(), format!("{s:?}"));
        }
    }
}
