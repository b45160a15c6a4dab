//! A tenant's custom CSS for its player pages, cut down to what cannot run code, load
//! anything or read the page: plain rules whose selectors use classes, ids, elements and
//! simple combinators, and whose declarations set an allowed property to a value of words,
//! numbers, colours and a few functions. Everything else is dropped and reported: at-rules
//! (`@import`, `@font-face`, `@media`), `url()` in any form, `expression()`, escapes,
//! attribute selectors (which read the page), and any property not listed.
//!
//! The output is rebuilt from the parts that survived, never copied, so nothing between them
//! (a stray `</style>`, a comment) can reach the page.

/// The most custom CSS a tenant may keep.
pub const MAX_LEN: usize = 16 * 1024;

/// Properties a rule may set: colours, type, spacing, borders and sizes. Nothing that fetches
/// (`background-image`, `content`, `cursor`, `list-style-image`, `mask`, `filter`) or moves
/// the page's controls over each other (`position`, `z-index`).
const PROPERTIES: &[&str] = &[
    "color",
    "background-color",
    "opacity",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "letter-spacing",
    "line-height",
    "text-align",
    "text-decoration",
    "text-shadow",
    "text-transform",
    "border",
    "border-color",
    "border-style",
    "border-width",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-radius",
    "box-shadow",
    "outline",
    "outline-color",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "gap",
    "width",
    "height",
    "max-width",
    "max-height",
    "min-width",
    "min-height",
    "display",
    "accent-color",
];

/// Functions a value may call: none of them fetches or runs anything.
const FUNCTIONS: &[&str] = &["rgb", "rgba", "hsl", "hsla", "calc", "var"];

/// What survived, and why each dropped part was dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sanitized {
    pub css: String,
    pub dropped: Vec<String>,
}

/// Sanitise `input` (at most [`MAX_LEN`] bytes; the caller refuses longer).
pub fn sanitize(input: &str) -> Sanitized {
    let mut out = Sanitized::default();
    let text = strip_comments(input);
    let mut rest = text.as_str();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        if rest.starts_with('@') {
            let name: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ';' && *c != '{')
                .take(40)
                .collect();
            out.dropped
                .push(format!("{name}: at-rules are not allowed"));
            rest = skip_statement(rest);
            continue;
        }
        let Some(open) = find_outside_quotes(rest, '{') else {
            out.dropped
                .push("text after the last rule: not a rule".to_string());
            break;
        };
        let selector = rest[..open].trim();
        let after = &rest[open + 1..];
        let (block, next) = match block_end(after) {
            Some(Ok(close)) => (&after[..close], &after[close + 1..]),
            Some(Err(close)) => {
                out.dropped.push(format!(
                    "{}: nested blocks are not allowed",
                    short(selector)
                ));
                rest = &after[close + 1..];
                continue;
            }
            None => {
                out.dropped
                    .push(format!("{}: the rule is not closed", short(selector)));
                break;
            }
        };
        rest = next;
        let Some(selector) = safe_selector(selector) else {
            out.dropped.push(format!(
                "{}: only class, id, element and simple combinator selectors are allowed",
                short(selector)
            ));
            continue;
        };
        let mut kept = Vec::new();
        for declaration in split_outside_quotes(block, ';') {
            let declaration = declaration.trim();
            if declaration.is_empty() {
                continue;
            }
            match safe_declaration(declaration) {
                Ok(d) => kept.push(d),
                Err(why) => out.dropped.push(format!("{}: {why}", short(declaration))),
            }
        }
        if !kept.is_empty() {
            out.css.push_str(&selector);
            out.css.push_str(" { ");
            for d in kept {
                out.css.push_str(&d);
                out.css.push_str("; ");
            }
            out.css.push_str("}\n");
        }
    }
    out
}

/// At most 60 characters of a dropped part, for the report.
fn short(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Comments become a space (`a/**/b` is two words, as CSS reads it); an unclosed one ends
/// the text.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        out.push(' ');
        match rest[i + 2..].find("*/") {
            Some(j) => rest = &rest[i + 2 + j + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// Byte offsets of `c` in `s` outside quoted strings.
fn positions_outside_quotes(s: &str, c: char) -> impl Iterator<Item = usize> + '_ {
    let mut quote: Option<char> = None;
    s.char_indices().filter_map(move |(i, ch)| {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None if ch == '"' || ch == '\'' => quote = Some(ch),
            None if ch == c => return Some(i),
            None => {}
        }
        None
    })
}

fn find_outside_quotes(s: &str, c: char) -> Option<usize> {
    positions_outside_quotes(s, c).next()
}

fn split_outside_quotes(s: &str, c: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for i in positions_outside_quotes(s, c) {
        parts.push(&s[start..i]);
        start = i + 1;
    }
    parts.push(&s[start..]);
    parts
}

/// The offset of the `}` closing a block that starts just after its `{`: `Ok` for a flat
/// block, `Err` (offset of its real end) for one with blocks inside; `None` if unclosed.
fn block_end(s: &str) -> Option<Result<usize, usize>> {
    let mut depth = 0usize;
    let mut nested = false;
    let mut quote: Option<char> = None;
    for (i, ch) in s.char_indices() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None => match ch {
                '"' | '\'' => quote = Some(ch),
                '{' => {
                    depth += 1;
                    nested = true;
                }
                '}' if depth == 0 => return Some(if nested { Err(i) } else { Ok(i) }),
                '}' => depth -= 1,
                _ => {}
            },
        }
    }
    None
}

/// Past an at-rule: to its `;`, or past its block.
fn skip_statement(s: &str) -> &str {
    let semi = find_outside_quotes(s, ';');
    let open = find_outside_quotes(s, '{');
    match (semi, open) {
        (Some(semi), Some(open)) if semi < open => &s[semi + 1..],
        (Some(semi), None) => &s[semi + 1..],
        (_, Some(open)) => match block_end(&s[open + 1..]) {
            Some(Ok(close) | Err(close)) => &s[open + 1 + close + 1..],
            None => "",
        },
        (None, None) => "",
    }
}

/// A selector list of classes, ids, elements, `*`, combinators and the pseudo-classes that
/// read nothing; normalised to single spaces.
fn safe_selector(s: &str) -> Option<String> {
    const PSEUDO: &[&str] = &[
        "hover",
        "focus",
        "focus-visible",
        "active",
        "first-child",
        "last-child",
        "disabled",
    ];
    if s.is_empty() || s.len() > 200 {
        return None;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " \t\n.#-_:>,+~*".contains(c))
    {
        return None;
    }
    // Every `:` starts an allowed pseudo-class (no `::`, no `:has`, `:not`).
    for (i, _) in s.match_indices(':') {
        let name: String = s[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !PSEUDO.contains(&name.as_str()) {
            return None;
        }
    }
    Some(s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `property: value` with an allowed property and a value that cannot fetch or run.
fn safe_declaration(d: &str) -> Result<String, &'static str> {
    let (property, value) = d.split_once(':').ok_or("not a declaration")?;
    let property = property.trim().to_ascii_lowercase();
    let value = value.trim();
    if !PROPERTIES.contains(&property.as_str()) {
        return Err("this property is not allowed");
    }
    if value.is_empty() || value.len() > 200 {
        return Err("empty or too long value");
    }
    if value.contains('\\') {
        return Err("escapes are not allowed");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " #%.,()-_+/*!'\"".contains(c))
    {
        return Err("the value has characters that are not allowed");
    }
    // Every `(` belongs to an allowed function: no url(), expression(), image-set(), attr().
    let lower = value.to_ascii_lowercase();
    for (i, _) in lower.match_indices('(') {
        let name: String = lower[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !FUNCTIONS.contains(&name.as_str()) {
            return Err("only rgb(), hsl(), calc() and var() may be called");
        }
    }
    // Quotes only as whole font names.
    let quotes = value.chars().filter(|c| *c == '"' || *c == '\'').count();
    if quotes > 0 && (property != "font-family" || quotes % 2 != 0) {
        return Err("quotes are allowed only around font names");
    }
    if lower.contains("javascript") || lower.contains("expression") {
        return Err("scripts are not allowed");
    }
    Ok(format!("{property}: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_rules_survive_normalised() {
        let s = sanitize(
            ".fc-title  {color: #fff; font-weight:700}\n#chat li:hover{ background-color: rgba(0,0,0,.5) }",
        );
        assert_eq!(
            s.css,
            ".fc-title { color: #fff; font-weight: 700; }\n#chat li:hover { background-color: rgba(0,0,0,.5); }\n"
        );
        assert!(s.dropped.is_empty(), "{:?}", s.dropped);
    }

    #[test]
    fn what_could_run_or_fetch_is_dropped() {
        let s = sanitize(
            "@import url(https://evil.example/x.css);\n\
             body { background-color: url(javascript:alert(1)); color: red }\n\
             .a { width: expression(alert(1)); height: 10px }\n\
             .b { background-image: url(https://evil.example/pixel.gif) }\n\
             .c { color: u\\72l(x) }\n\
             input[value^=a] { color: red }\n\
             @media (min-width: 1px) { body { color: red } }\n\
             .d { font-family: \"Inter\", sans-serif; behavior: url(x.htc); -moz-binding: url(x) }\n\
             .e { color: red; } </style><script>alert(1)</script>",
        );
        assert_eq!(
            s.css,
            "body { color: red; }\n.a { height: 10px; }\n.d { font-family: \"Inter\", sans-serif; }\n.e { color: red; }\n"
        );
        let dropped = s.dropped.join("\n");
        for part in [
            "@import",
            "url(javascript:alert(1))",
            "expression(alert(1))",
            "background-image",
            "u\\72l(x)",
            "input[value^=a]",
            "@media",
            "behavior",
            "-moz-binding",
            "not a rule",
        ] {
            assert!(dropped.contains(part), "{part} not reported in {dropped}");
        }
        for bad in ["url", "expression", "javascript", "@", "<", "\\", "["] {
            assert!(!s.css.contains(bad), "{bad} survived: {}", s.css);
        }
    }

    #[test]
    fn comments_quotes_and_broken_rules_cannot_smuggle() {
        // A comment inside a function name, a brace inside a string, a rule never closed.
        let s = sanitize(
            ".a { color: ur/**/l(x) }\n.b { font-family: \"}\"; color: blue }\n.c { color: red",
        );
        assert!(!s.css.contains("url"), "{}", s.css);
        assert!(!s.css.contains(".c"), "{}", s.css);
        // The brace in the string neither ends the rule nor survives in it.
        assert!(s.css.contains(".b { color: blue; }"), "{}", s.css);
        assert!(s.dropped.iter().any(|d| d.contains("not closed")));
        // `:not()` and pseudo-elements read or add to the page.
        for selector in ["a:not(.x)", "p::before", "a:has(b)", "a[href]"] {
            assert!(
                sanitize(&format!("{selector} {{ color: red }}"))
                    .css
                    .is_empty()
            );
        }
    }
}
