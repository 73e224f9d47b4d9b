//! HTML as plain text for `show` (when a message has no text part), and the
//! http(s) links of a text or HTML body for `show --links`. Not a renderer:
//! tags are dropped, block tags end lines, `script` and `style` are
//! skipped, entities are decoded (html-escape). Pure.

/// Tags after which the text goes on on a new line.
const BLOCK_TAGS: [&str; 17] = [
    "br",
    "p",
    "div",
    "tr",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "blockquote",
    "hr",
    "pre",
];

/// The text a person would read in the HTML.
pub fn to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        push_text(&mut out, &rest[..lt]);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |e| &after[e + 3..]);
            continue;
        }
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let name = tag_name(&rest[1..end]);
        rest = &rest[end..];
        if name == "script" || name == "style" {
            let close = format!("</{name}");
            rest = find_ignore_case(rest, &close).map_or("", |i| {
                rest[i..].find('>').map_or("", |e| &rest[i + e + 1..])
            });
        } else if BLOCK_TAGS.contains(&name.trim_start_matches('/')) {
            newline(&mut out);
        } else if name == "td" || name == "th" {
            out.push(' ');
        }
    }
    push_text(&mut out, rest);
    tidy(&out)
}

/// `a href=...` → `a`; `/P` → `/p`.
fn tag_name(tag: &str) -> String {
    tag.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
        .collect::<String>()
        .to_ascii_lowercase()
}

fn find_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    hay.to_ascii_lowercase().find(needle)
}

/// HTML text: runs of white space are one space; entities decoded.
fn push_text(out: &mut String, text: &str) {
    let decoded = html_escape::decode_html_entities(text);
    for c in decoded.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !out.ends_with([' ', '\n']) && !out.is_empty() {
                out.push(' ');
            }
        } else {
            out.push(if c == '\u{a0}' { ' ' } else { c });
        }
    }
}

fn newline(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    out.push('\n');
}

/// Lines trimmed, at most one blank line in a row, one final line end.
fn tidy(text: &str) -> String {
    let mut out = String::new();
    let mut blank = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            blank += 1;
            if blank > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Each http(s) URL in `text`, in order. `html`: entities in the URL are
/// decoded (`&amp;` in an `href` is `&`).
pub fn links(text: &str, html: bool) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = next_scheme(&lower[at..]) {
        let start = at + found;
        let len = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '`'))
            .unwrap_or(text.len() - start);
        let mut url = &text[start..start + len];
        at = start + len.max(1);
        url = url.trim_end_matches(['.', ',', ';', ':', '!', '?']);
        if url.ends_with(')') && !url.contains('(') {
            url = &url[..url.len() - 1];
        }
        let url = if html {
            html_escape::decode_html_entities(url).into_owned()
        } else {
            url.to_string()
        };
        if url.len() > "https://".len() {
            out.push(url);
        }
    }
    out
}

fn next_scheme(lower: &str) -> Option<usize> {
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_as_text() {
        let html = "<html><head><style>p{color:red}</style><script>x<1</script></head>\
            <body><h1>Hello&nbsp;there</h1><p>Click   <a href=\"https://x.test/r?a=1&amp;b=2\">here</a>\
            &amp; go.<br>Line&#39;s end</p><!-- hidden --><table><tr><td>a</td><td>b</td></tr></table></body></html>";
        assert_eq!(
            to_text(html),
            "Hello there\n\nClick here& go.\nLine's end\n\na b\n"
        );
    }

    #[test]
    fn links_in_order_with_entities_decoded() {
        let html = "<a href=\"https://x.test/r?a=1&amp;b=2\">https://x.test/r?a=1&amp;b=2</a> <a href='http://y.test/'>y</a>";
        assert_eq!(
            links(html, true),
            [
                "https://x.test/r?a=1&b=2",
                "https://x.test/r?a=1&b=2",
                "http://y.test/"
            ]
        );
        let text =
            "See https://a.test/x, (http://b.test/y) and HTTPS://c.test/z. Not http:// alone.";
        assert_eq!(
            links(text, false),
            ["https://a.test/x", "http://b.test/y", "HTTPS://c.test/z"]
        );
    }
}
