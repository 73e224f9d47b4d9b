//! `--to`, `--from`, `--subject`, `--since`: which messages a command
//! reads. Pure: the clock reading is an argument.

use super::header::{Summary, addresses};
use super::scan::Entry;
use crate::config::{Filters, Since};
use std::time::Duration;

/// The filters, lower-cased and with `--since` resolved to Unix seconds.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    to: Option<String>,
    from: Option<String>,
    subject: Option<String>,
    since: Option<i64>,
}

impl Filter {
    /// `now` is Unix seconds, for `--since DURATION`.
    pub fn new(f: &Filters, now: i64) -> Filter {
        Filter {
            to: f.to.as_deref().map(str::to_lowercase),
            from: f.from.as_deref().map(str::to_lowercase),
            subject: f.subject.as_deref().map(str::to_lowercase),
            since: f.since.map(|s| match s {
                Since::At(t) => t,
                Since::Ago(d) => now.saturating_sub(secs(d)),
            }),
        }
    }

    /// Whether the file name alone rules the message out (no read needed).
    pub fn skips(&self, e: &Entry) -> bool {
        self.since.is_some_and(|t| e.secs < t)
    }

    /// Whether the headers need reading at all.
    pub fn reads_headers(&self) -> bool {
        self.to.is_some() || self.from.is_some() || self.subject.is_some()
    }

    /// Whether a message with these headers matches. The envelope comes
    /// from Return-Path and Delivered-To; a file with neither (made by
    /// hand) is matched on its From, To and Cc headers instead.
    pub fn matches(&self, e: &Entry, s: &Summary) -> bool {
        if self.skips(e) {
            return false;
        }
        if let Some(want) = &self.subject
            && !s.subject.to_lowercase().contains(want.as_str())
        {
            return false;
        }
        if let Some(pat) = &self.from {
            let ok = match &s.return_path {
                Some(rp) => glob(pat, rp),
                None => addresses(&s.from).iter().any(|a| glob(pat, a)),
            };
            if !ok {
                return false;
            }
        }
        if let Some(pat) = &self.to {
            let ok = if s.delivered_to.is_empty() {
                let mut all = addresses(&s.to);
                all.extend(addresses(&s.cc));
                all.iter().any(|a| glob(pat, a))
            } else {
                s.delivered_to.iter().any(|a| glob(pat, a))
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `*` any run of characters, `?` one character; case-insensitive.
/// `pattern` is already lower-case.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None; // (pattern after *, text position)
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last * swallow one more character and retry.
                Some((sp, st)) => {
                    pi = sp;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*@example.com", "Bob@Example.COM"));
        assert!(glob("b?b@x", "bob@x"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(!glob("bob@x", "bob@xy"));
        assert!(glob("*x*", "abxcd"));
        assert!(!glob("", "a"));
    }

    fn entry(secs: i64) -> Entry {
        Entry {
            path: "p".into(),
            rel: "new/n".into(),
            name: "n".into(),
            secs,
            usec: 0,
            size: None,
        }
    }

    #[test]
    fn envelope_first_then_headers() {
        let f = Filter::new(
            &Filters {
                to: Some("*@Y.test".into()),
                from: Some("a@x.test".into()),
                subject: Some("RESET".into()),
                since: Some(Since::Ago(Duration::from_secs(60))),
            },
            1000,
        );
        let s = Summary {
            subject: "Your password reset".into(),
            return_path: Some("A@x.test".into()),
            delivered_to: vec!["b@y.test".into()],
            ..Summary::default()
        };
        assert!(f.matches(&entry(940), &s));
        assert!(!f.matches(&entry(939), &s), "--since by the name's time");
        assert!(!f.matches(
            &entry(990),
            &Summary {
                subject: "other".into(),
                ..s.clone()
            }
        ));
        assert!(!f.matches(
            &entry(990),
            &Summary {
                delivered_to: vec!["b@z.test".into()],
                ..s.clone()
            }
        ));
        let by_hand = Summary {
            subject: "reset".into(),
            from: "Alice <a@x.test>".into(),
            to: "Carol <c@q.test>, Bob <b@y.test>".into(),
            ..Summary::default()
        };
        assert!(f.matches(&entry(990), &by_hand));
        let at = Filter::new(
            &Filters {
                since: Some(Since::At(500)),
                ..Filters::default()
            },
            0,
        );
        assert!(at.skips(&entry(499)) && !at.skips(&entry(500)));
        assert!(!at.reads_headers());
    }
}
