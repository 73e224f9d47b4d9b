//! `show ID`: finds one message and prints it decoded (mailparse), as raw
//! bytes, as JSON, or one of its parts.

use super::ReadError;
use super::filter::Filter;
use super::header::Summary;
use super::html;
use super::list::{Row, one_line};
use super::scan::{self, Entry};
use crate::config::View;
use mailparse::{DispositionType, ParsedMail};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A message taken apart: what `show` prints.
#[derive(Debug, Default)]
pub struct Message {
    pub summary: Summary,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug)]
pub struct Attachment {
    pub name: String,
    pub mime: String,
    pub data: Vec<u8>,
}

impl Message {
    /// Decodes a stored file. A file that is not valid MIME still gives
    /// its readable headers and its body as text.
    pub fn parse(raw: &[u8]) -> Message {
        let summary = Summary::parse(raw);
        let (_, body) = super::header::headers(raw);
        // mailparse reads the header block the same way, or the file is
        // not MIME: then the body is shown as text.
        let same_headers = mailparse::parse_headers(raw).is_ok_and(|(_, b)| b == body);
        match mailparse::parse_mail(raw).ok().filter(|_| same_headers) {
            Some(mail) => {
                let mut m = Message {
                    summary,
                    ..Message::default()
                };
                for part in mail.parts().filter(|p| p.subparts.is_empty()) {
                    m.add(part);
                }
                m
            }
            None => Message {
                summary,
                text: Some(String::from_utf8_lossy(&raw[body..]).into_owned()),
                ..Message::default()
            },
        }
    }

    fn add(&mut self, part: &ParsedMail) {
        let mime = part.ctype.mimetype.to_ascii_lowercase();
        let disposition = part.get_content_disposition();
        let name = disposition
            .params
            .get("filename")
            .or_else(|| part.ctype.params.get("name"))
            .cloned();
        let inline_text = disposition.disposition != DispositionType::Attachment && name.is_none();
        if inline_text && mime == "text/plain" && self.text.is_none() {
            self.text = Some(body_text(part));
        } else if inline_text && mime == "text/html" && self.html.is_none() {
            self.html = Some(body_text(part));
        } else if !mime.starts_with("multipart/") {
            self.attachments.push(Attachment {
                name: name.unwrap_or_default(),
                mime,
                data: part
                    .get_body_raw()
                    .unwrap_or_else(|_| part.raw_bytes.to_vec()),
            });
        }
    }

    /// The text body, or the HTML part as text when there is none.
    fn readable_text(&self) -> String {
        match (&self.text, &self.html) {
            (Some(t), _) => t.clone(),
            (None, Some(h)) => html::to_text(h),
            (None, None) => String::new(),
        }
    }

    /// Each http(s) URL of the text and HTML parts, once, in order.
    pub fn links(&self) -> Vec<String> {
        let mut all = Vec::new();
        if let Some(t) = &self.text {
            all.extend(html::links(t, false));
        }
        if let Some(h) = &self.html {
            all.extend(html::links(h, true));
        }
        let mut seen = std::collections::HashSet::new();
        all.retain(|u| seen.insert(u.clone()));
        all
    }
}

/// Decoded with its transfer encoding and charset, with LF line ends as
/// the stored file has (quoted-printable decoding yields CRLF); text
/// mailparse cannot decode is taken as UTF-8, lossily.
fn body_text(part: &ParsedMail) -> String {
    let text = part.get_body().unwrap_or_else(|_| {
        String::from_utf8_lossy(&part.get_body_raw().unwrap_or_default()).into_owned()
    });
    text.replace("\r\n", "\n")
}

/// Finds the message named by `id`: a path (it has a `/`), a file name,
/// a unique prefix of one, or a queue id (from the `Received` header).
pub fn find(root: &Path, id: &str, filter: &Filter) -> Result<PathBuf, ReadError> {
    if id.contains('/') {
        let p = PathBuf::from(id);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ReadError::NotFound(id.to_string()))
        };
    }
    let entries: Vec<Entry> = scan::scan(root)
        .map_err(|e| ReadError::Maildir(root.to_path_buf(), e))?
        .into_iter()
        .filter(|e| !filter.skips(e))
        .collect();
    let base = |e: &Entry| e.name.split(':').next().unwrap_or("").to_string();
    let by_name: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.name == id || base(e) == id)
        .collect();
    let by_prefix: Vec<&Entry> = entries.iter().filter(|e| e.name.starts_with(id)).collect();
    let candidates = if !by_name.is_empty() {
        by_name
    } else if !by_prefix.is_empty() {
        by_prefix
    } else {
        let mut buf = Vec::new();
        entries
            .iter()
            .filter(|e| {
                scan::read_head(&e.path, &mut buf).ok().flatten().is_some()
                    && Summary::parse(&buf)
                        .received
                        .id
                        .is_some_and(|q| q.eq_ignore_ascii_case(id))
            })
            .collect()
    };
    let mut buf = Vec::new();
    let candidates: Vec<&Entry> = candidates
        .into_iter()
        .filter(|e| {
            !filter.reads_headers()
                || (scan::read_head(&e.path, &mut buf).ok().flatten().is_some()
                    && filter.matches(e, &Summary::parse(&buf)))
        })
        .collect();
    match candidates.as_slice() {
        [] => Err(ReadError::NotFound(id.to_string())),
        [one] => Ok(one.path.clone()),
        many => Err(ReadError::Ambiguous(
            id.to_string(),
            many.iter().map(|e| e.rel.clone()).collect(),
        )),
    }
}

/// Prints the message at `path` as `view` asks. `Ok(false)`: there was
/// nothing to print (no link, no HTML part).
pub fn print(
    out: &mut impl Write,
    root: &Path,
    path: &Path,
    view: View,
) -> Result<bool, ReadError> {
    let raw = scan::read_all(path)
        .map_err(|e| ReadError::File(path.to_path_buf(), e))?
        .ok_or_else(|| ReadError::NotFound(path.to_string_lossy().into_owned()))?;
    if view == View::Raw {
        out.write_all(&raw)?;
        return Ok(true);
    }
    let m = Message::parse(&raw);
    match view {
        View::Raw => {} // written above, unparsed
        View::Text => write_text(out, &m.readable_text())?,
        View::Html => match &m.html {
            Some(h) => write_text(out, h)?,
            None => return Err(ReadError::NoHtml),
        },
        View::Links => {
            let links = m.links();
            for l in &links {
                writeln!(out, "{l}")?;
            }
            return Ok(!links.is_empty());
        }
        View::Part(n) => match m.attachments.get(n - 1) {
            Some(a) => out.write_all(&a.data)?,
            None => return Err(ReadError::NoPart(n, m.attachments.len())),
        },
        View::Json => {
            let row = row_for(root, path, raw.len() as u64, &m);
            writeln!(out, "{}", json(&row, root, &m))?;
        }
        View::Summary => summary(out, &m)?,
    }
    Ok(true)
}

fn write_text(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    if !text.is_empty() && !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn row_for(root: &Path, path: &Path, size: u64, m: &Message) -> Row {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = scan::entry(root, path.to_path_buf(), name);
    Row {
        entry,
        summary: m.summary.clone(),
        size,
    }
}

fn json(row: &Row, root: &Path, m: &Message) -> serde_json::Value {
    let mut v = row.json(root);
    let s = &m.summary;
    v["headers"] = json!({
        "from": s.from, "to": s.to, "cc": s.cc, "subject": s.subject,
        "date": s.date, "message_id": s.message_id,
    });
    v["text"] = json!(m.readable_text());
    v["html"] = json!(m.html);
    v["attachments"] = m
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"part": i + 1, "name": a.name, "type": a.mime, "size": a.data.len()}))
        .collect();
    v
}

/// The default view: the decoded headers the message has, the text, the
/// attachment list.
/// Control characters are replaced, so a message cannot drive the terminal.
fn summary(out: &mut impl Write, m: &Message) -> std::io::Result<()> {
    let s = &m.summary;
    for (name, value) in [
        ("From", &s.from),
        ("To", &s.to),
        ("Cc", &s.cc),
        ("Subject", &s.subject),
        ("Date", &s.date),
    ] {
        if !value.is_empty() {
            writeln!(out, "{name}: {}", one_line(value))?;
        }
    }
    writeln!(out)?;
    let text = m.readable_text();
    for line in text.lines() {
        let clean: String = line
            .chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    '\u{FFFD}'
                } else {
                    c
                }
            })
            .collect();
        writeln!(out, "{clean}")?;
    }
    if !m.attachments.is_empty() {
        writeln!(out, "\nAttachments:")?;
        for (i, a) in m.attachments.iter().enumerate() {
            let name = if a.name.is_empty() {
                "(no name)"
            } else {
                &a.name
            };
            writeln!(
                out,
                "  {}. {}  {}  {} bytes",
                i + 1,
                one_line(name),
                one_line(&a.mime),
                a.data.len()
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternative_with_attachment() {
        let raw = b"Subject: hi\nContent-Type: multipart/mixed; boundary=m\n\n--m\n\
            Content-Type: multipart/alternative; boundary=a\n\n--a\n\
            Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
            Reset: https://x.test/reset?t=3Dabc=\n123\n--a\n\
            Content-Type: text/html\n\n<a href=\"https://x.test/reset?t=abc123&amp;u=1\">reset</a>\n--a--\n\
            --m\nContent-Type: application/octet-stream; name=\"b.bin\"\nContent-Transfer-Encoding: base64\n\nAAEC/w==\n--m--\n";
        let m = Message::parse(raw);
        assert_eq!(
            m.text.as_deref(),
            Some("Reset: https://x.test/reset?t=abc123")
        );
        assert_eq!(
            m.links(),
            [
                "https://x.test/reset?t=abc123",
                "https://x.test/reset?t=abc123&u=1"
            ]
        );
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(
            (m.attachments[0].name.as_str(), &m.attachments[0].data[..]),
            ("b.bin", &[0u8, 1, 2, 255][..])
        );
    }

    #[test]
    fn the_summary_prints_only_headers_present() {
        let mut out = Vec::new();
        summary(&mut out, &Message::parse(b"Subject: s\n\nbody\n")).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "Subject: s\n\nbody\n");
    }

    #[test]
    fn broken_mime_keeps_what_could_be_read() {
        let m = Message::parse(b"Subject: s\nX: a\rb\n\nthe body");
        assert_eq!(m.summary.subject, "s");
        assert!(m.readable_text().contains("the body"));
    }
}
