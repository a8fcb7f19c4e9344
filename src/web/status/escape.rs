//! The escaper askama applies to every value the status page prints.
//!
//! askama decides what is escaped: every `{{ }}` of `page.html`, unless marked safe (nothing
//! is). This type only decides how: with HTML's named entities (`&lt;`, `&quot;`), which the
//! page has always written and its tests pin, where askama's own `Html` escaper writes numeric
//! ones (`&#60;`, `&#34;`); both are equally safe in element content and quoted attributes.
//! `askama.toml` in this folder makes it the escaper of the page's `.html` template.

use std::fmt::{self, Write};

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML element content and quoted attribute values.
#[derive(Clone, Copy, Debug, Default)]
pub struct Entities;

impl askama::filters::Escaper for Entities {
    fn write_escaped_str<W: Write>(&self, mut dest: W, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            dest.write_str(&rest[..i])?;
            dest.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        dest.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use askama::filters::Escaper;

    #[test]
    fn the_five_markup_characters_become_named_entities() {
        let mut out = String::new();
        Entities.write_escaped_str(&mut out, "a&<>\"'b").unwrap();
        assert_eq!(out, "a&amp;&lt;&gt;&quot;&#39;b");
        let mut out = String::new();
        Entities
            .write_escaped_str(&mut out, "plain \u{2713} text")
            .unwrap();
        assert_eq!(out, "plain \u{2713} text", "everything else is kept");
    }
}
