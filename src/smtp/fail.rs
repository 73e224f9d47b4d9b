//! `--fail` rules: the grammar `STAGE:WHICH=ACTION` and the matching, both
//! pure. The counters behind `nth N` and `every N` (per stage, across all
//! connections) live outside this module and come in as numbers through
//! [`Counter`], so matching is deterministic and tested without threads.
//!
//! ```text
//! RULE   = STAGE ":" WHICH "=" ACTION        (the first "=" ends WHICH)
//! STAGE  = connect | helo | mail | rcpt | data
//! WHICH  = "*" | GLOB | "nth" SP N | "every" SP N      (N >= 1)
//! ACTION = CODE [SP ENHANCED] [SP TEXT] | "drop" | "delay" SP SECS
//! ```

use super::Reply;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Where in a session a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Instead of the greeting.
    Connect,
    /// HELO or EHLO.
    Helo,
    Mail,
    Rcpt,
    /// After the final dot or the LAST chunk, instead of storing.
    Data,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
    ];

    /// The stage's name as rules and events spell it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
        }
    }

    /// Its position in [`Stage::ALL`] (an index for a counter array).
    pub fn index(self) -> usize {
        self as usize
    }

    fn parse(s: &str) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name().eq_ignore_ascii_case(s))
    }
}

/// Which arrivals at a stage a rule picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    Any,
    /// A case-insensitive glob (`*`, `?`) on the address or HELO name,
    /// kept lower-cased.
    Glob(String),
    /// Only the N-th arrival at the stage since start.
    Nth(u64),
    /// The N-th, 2N-th, ... arrival.
    Every(u64),
}

/// What an injected failure does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// This reply instead of the normal one.
    Reply(Reply),
    /// Close the connection with no reply.
    Drop,
    /// Wait, then go on as normal.
    Delay(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub stage: Stage,
    pub which: Which,
    pub action: Action,
    /// The rule as given, for the log line of each injection.
    pub text: String,
}

/// A rule that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub rule: String,
    pub why: &'static str,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid --fail value {:?}: {}", self.rule, self.why)
    }
}

impl std::error::Error for RuleError {}

/// The per-stage counters, shared by every connection. `arrive` counts one
/// more arrival at `stage` and returns its number, from 1. Implemented with
/// atomics outside `smtp/`; a locked array in the tests.
pub trait Counter: Send + Sync {
    fn arrive(&self, stage: Stage) -> u64;
}

impl Rule {
    pub fn parse(rule: &str) -> Result<Rule, RuleError> {
        let err = |why| RuleError {
            rule: rule.to_string(),
            why,
        };
        let (stage, rest) = rule
            .split_once(':')
            .ok_or(err("expected STAGE:WHICH=ACTION"))?;
        let stage = Stage::parse(stage.trim())
            .ok_or(err("the stage must be connect, helo, mail, rcpt or data"))?;
        let (which, action) = rest
            .split_once('=')
            .ok_or(err("expected STAGE:WHICH=ACTION"))?;
        Ok(Rule {
            stage,
            which: parse_which(which.trim()).map_err(err)?,
            action: parse_action(action.trim()).map_err(err)?,
            text: rule.to_string(),
        })
    }

    /// Whether arrival number `n` at this rule's stage, with `subject` (the
    /// address or HELO name, if the stage has one), is picked.
    pub fn matches(&self, n: u64, subject: Option<&str>) -> bool {
        match &self.which {
            Which::Any => true,
            Which::Nth(k) => n == *k,
            Which::Every(k) => n.is_multiple_of(*k),
            Which::Glob(g) => subject.is_some_and(|s| glob(g, &s.to_lowercase())),
        }
    }
}

fn parse_which(which: &str) -> Result<Which, &'static str> {
    let number = |n: &str| match n.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("nth and every take a whole number of at least 1"),
    };
    let lower = which.to_ascii_lowercase();
    if which.is_empty() {
        Err("WHICH is empty (use * for every arrival)")
    } else if which == "*" {
        Ok(Which::Any)
    } else if let Some(n) = lower.strip_prefix("nth ") {
        number(n).map(Which::Nth)
    } else if let Some(n) = lower.strip_prefix("every ") {
        number(n).map(Which::Every)
    } else if which.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("a glob has no spaces (or use nth N, every N)")
    } else {
        Ok(Which::Glob(which.to_lowercase()))
    }
}

fn parse_action(action: &str) -> Result<Action, &'static str> {
    let lower = action.to_ascii_lowercase();
    if lower == "drop" {
        return Ok(Action::Drop);
    }
    if let Some(secs) = lower.strip_prefix("delay ") {
        return match secs.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => {
                Ok(Action::Delay(Duration::from_secs_f64(s)))
            }
            _ => Err("delay takes seconds from 0 to 3600"),
        };
    }
    parse_reply(action).map(Action::Reply)
}

/// `CODE [ENHANCED] [TEXT]`, filling in what is missing: `550` becomes
/// `550 5.0.0 Rejected`, `451 Busy` becomes `451 4.0.0 Busy`.
fn parse_reply(action: &str) -> Result<Reply, &'static str> {
    const WHAT: &str = "the action must be drop, delay SECS or a reply CODE [ENHANCED] [TEXT]";
    let (code, rest) = action.split_once(' ').unwrap_or((action, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WHAT);
    }
    let code: u16 = code.parse().map_err(|_| WHAT)?;
    if !(400..600).contains(&code) || code % 100 / 10 > 5 {
        return Err("the reply code must be 4xx or 5xx");
    }
    if rest.chars().any(|c| c.is_control()) {
        return Err("the reply text has a control character");
    }
    let rest = rest.trim();
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let (enhanced, text) = match parse_enhanced(first) {
        Some(e) if e.0 as u16 != code / 100 => {
            return Err("the enhanced code's class must match the reply code");
        }
        Some(e) => (e, after.trim()),
        None => (((code / 100) as u8, 0, 0), rest),
    };
    let text = if text.is_empty() { "Rejected" } else { text };
    Ok(Reply::new(code, enhanced, text))
}

/// `class.subject.detail` as RFC 3463 writes it.
fn parse_enhanced(s: &str) -> Option<(u8, u16, u16)> {
    let mut parts = s.split('.');
    let (c, sub, d) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    if parts.next().is_some() || !digits(c, 1) || !digits(sub, 3) || !digits(d, 3) {
        return None;
    }
    Some((c.parse().ok()?, sub.parse().ok()?, d.parse().ok()?))
}

/// `*` any run, `?` one character; both sides already lower-cased.
fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The rules in command-line order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Rules, RuleError> {
        let rules = rules
            .iter()
            .map(|r| Rule::parse(r.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Rules { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule names `stage` (no rule: nothing is counted).
    pub fn has(&self, stage: Stage) -> bool {
        self.rules.iter().any(|r| r.stage == stage)
    }

    /// The first rule of `stage` that picks arrival `n` with `subject`.
    fn first_match(&self, stage: Stage, n: u64, subject: Option<&str>) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.stage == stage && r.matches(n, subject))
    }

    /// Counts an arrival at `stage` (only if a rule names it) and returns
    /// the rule that fires, if any, with the arrival's number.
    pub fn arrive(
        &self,
        counter: &dyn Counter,
        stage: Stage,
        subject: Option<&str>,
    ) -> Option<(&Rule, u64)> {
        if !self.has(stage) {
            return None;
        }
        let n = counter.arrive(stage);
        self.first_match(stage, n, subject).map(|r| (r, n))
    }
}

/// What a session needs for the test hooks: the `--fail` rules with the
/// shared counters, and whether refusals are reported (`--events`).
#[derive(Clone, Default)]
pub struct Hooks {
    pub fail: Option<(Arc<Rules>, Arc<dyn Counter>)>,
    /// Keep a `Refusal` for each reported 4xx/5xx (see `Session::take_refusal`).
    pub report: bool,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("fail", &self.fail.as_ref().map(|(rules, _)| rules))
            .field("report", &self.report)
            .finish()
    }
}

/// A refused step that `--events` reports: a 4xx or 5xx at connect,
/// HELO/EHLO, MAIL, RCPT or the end of the message (not syntax errors,
/// out-of-order commands or DATA without recipients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub stage: Stage,
    pub reply: Reply,
    /// The accepted sender, if any.
    pub from: Option<String>,
    /// The recipients accepted so far.
    pub to: Vec<String>,
    /// The address refused at MAIL or RCPT.
    pub address: Option<String>,
}

/// A rule that fired, for the connection's info log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    pub stage: Stage,
    /// The arrival's number at its stage.
    pub n: u64,
    pub rule: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn rule(s: &str) -> Rule {
        Rule::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn reply_of(s: &str) -> String {
        match rule(s).action {
            Action::Reply(r) => r.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_examples_parse() {
        let r = rule("rcpt:*@bounce.example=550 5.1.1 No such user");
        assert_eq!(r.stage, Stage::Rcpt);
        assert_eq!(r.which, Which::Glob("*@bounce.example".into()));
        assert_eq!(
            reply_of("rcpt:*@bounce.example=550 5.1.1 No such user"),
            "550 5.1.1 No such user\r\n"
        );
        let r = rule("data:every 3=451 4.3.0 Try again later");
        assert_eq!((r.stage, r.which), (Stage::Data, Which::Every(3)));
        let r = rule("connect:nth 1=421 4.3.2 Busy");
        assert_eq!((r.stage, r.which), (Stage::Connect, Which::Nth(1)));
        assert_eq!(
            reply_of("connect:nth 1=421 4.3.2 Busy"),
            "421 4.3.2 Busy\r\n"
        );
        assert_eq!(rule("data:*=drop").action, Action::Drop);
        assert_eq!(rule("data:*=drop").which, Which::Any);
        let r = rule("rcpt:slow@*=delay 2");
        assert_eq!(r.action, Action::Delay(Duration::from_secs(2)));
        assert_eq!(r.which, Which::Glob("slow@*".into()));
        assert_eq!(r.text, "rcpt:slow@*=delay 2");
    }

    #[test]
    fn missing_enhanced_code_and_text_are_filled_in() {
        assert_eq!(reply_of("mail:*=550"), "550 5.0.0 Rejected\r\n");
        assert_eq!(reply_of("mail:*=451 Busy"), "451 4.0.0 Busy\r\n");
        assert_eq!(reply_of("mail:*=452 4.2.2"), "452 4.2.2 Rejected\r\n");
        assert_eq!(
            reply_of("mail:*=554 Go away now"),
            "554 5.0.0 Go away now\r\n"
        );
        assert_eq!(
            reply_of("helo:*=421 4.7.0 closing"),
            "421 4.7.0 closing\r\n"
        );
    }

    #[test]
    fn the_first_equals_sign_ends_which() {
        let r = rule("rcpt:a@x=550 5.1.1 a=b");
        assert_eq!(r.which, Which::Glob("a@x".into()));
        assert_eq!(reply_of("rcpt:a@x=550 5.1.1 a=b"), "550 5.1.1 a=b\r\n");
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(rule("RCPT:NTH 2=DROP").which, Which::Nth(2));
        assert_eq!(
            rule("Data:Every 4=Delay 0.5").action,
            Action::Delay(Duration::from_millis(500))
        );
        assert_eq!(
            rule("helo:Mail.EXAMPLE=550").which,
            Which::Glob("mail.example".into())
        );
    }

    #[test]
    fn bad_rules_are_refused_naming_them() {
        for (bad, why) in [
            ("", "expected"),
            ("rcpt", "expected"),
            ("rcpt:*", "expected"),
            ("quit:*=550", "stage"),
            ("rcpt:=550", "WHICH"),
            ("rcpt:nth 0=550", "at least 1"),
            ("rcpt:nth x=550", "whole number"),
            ("rcpt:every -1=550", "whole number"),
            ("rcpt:a b=550", "no spaces"),
            ("rcpt:*=250 2.0.0 Ok", "4xx or 5xx"),
            ("rcpt:*=600", "4xx or 5xx"),
            ("rcpt:*=499", "4xx or 5xx"),
            ("rcpt:*=55", "the action"),
            ("rcpt:*=5500", "the action"),
            ("rcpt:*=bounce", "the action"),
            ("rcpt:*=", "the action"),
            ("rcpt:*=550 4.1.1 No", "class"),
            ("rcpt:*=delay", "the action"),
            ("rcpt:*=delay x", "delay takes"),
            ("rcpt:*=delay -1", "delay takes"),
            ("rcpt:*=delay 99999", "delay takes"),
            ("rcpt:*=550 a\rb", "control"),
        ] {
            let e = Rule::parse(bad).expect_err(bad);
            assert_eq!(e.rule, bad);
            let text = e.to_string();
            assert!(text.contains(&format!("{bad:?}")), "{text}");
            assert!(text.contains(why), "{bad}: {text}");
        }
    }

    #[test]
    fn globs_are_case_insensitive_and_anchored() {
        let r = rule("rcpt:*@Bounce.example=550");
        assert!(r.matches(1, Some("User@BOUNCE.example")));
        assert!(r.matches(1, Some("@bounce.example")));
        assert!(!r.matches(1, Some("user@bounce.example.org")));
        assert!(!r.matches(1, Some("user@notbounce.exampl")));
        assert!(!r.matches(1, None));
        let r = rule("rcpt:a?c*@*x=550");
        assert!(r.matches(1, Some("abc@x")));
        assert!(r.matches(1, Some("axcdef@yyx")));
        assert!(!r.matches(1, Some("ac@x")));
        assert!(rule("helo:*.test=550").matches(1, Some("client.TEST")));
        assert!(glob("**a", "a"));
        assert!(!glob("a", ""));
        assert!(glob("*", ""));
        assert!(glob("*é*", "xéy"));
        assert!(glob("x?y", "xéy"));
    }

    #[test]
    fn nth_and_every_count_arrivals() {
        let nth = rule("mail:nth 2=550");
        let every = rule("mail:every 3=550");
        let hits = |r: &Rule| {
            (1..=10)
                .filter(|&n| r.matches(n, Some("a@x")))
                .collect::<Vec<_>>()
        };
        assert_eq!(hits(&nth), [2]);
        assert_eq!(hits(&every), [3, 6, 9]);
        assert_eq!(hits(&rule("mail:*=550")).len(), 10);
    }

    struct Counts(Mutex<[u64; 5]>);
    impl Counter for Counts {
        fn arrive(&self, stage: Stage) -> u64 {
            let mut c = self.0.lock().unwrap();
            c[stage.index()] += 1;
            c[stage.index()]
        }
    }

    #[test]
    fn first_match_wins_in_order_and_stages_count_apart() {
        let rules = Rules::parse(&[
            "rcpt:vip@*=delay 1",
            "rcpt:every 2=451 4.3.0 Later",
            "rcpt:*@x=550",
            "mail:nth 1=drop",
        ])
        .unwrap();
        let counts = Counts(Mutex::new([0; 5]));
        let fired = |stage, s: &str| {
            rules
                .arrive(&counts, stage, Some(s))
                .map(|(r, _)| r.text.clone())
        };
        assert_eq!(
            fired(Stage::Rcpt, "vip@x").as_deref(),
            Some("rcpt:vip@*=delay 1")
        ); // n=1
        assert_eq!(
            fired(Stage::Rcpt, "vip@x").as_deref(),
            Some("rcpt:vip@*=delay 1")
        ); // n=2
        assert_eq!(fired(Stage::Rcpt, "a@y"), None); // n=3
        assert_eq!(
            fired(Stage::Rcpt, "a@y").as_deref(),
            Some("rcpt:every 2=451 4.3.0 Later")
        ); // n=4
        assert_eq!(fired(Stage::Rcpt, "a@x").as_deref(), Some("rcpt:*@x=550")); // n=5
        assert_eq!(
            fired(Stage::Mail, "a@x").as_deref(),
            Some("mail:nth 1=drop")
        );
        assert_eq!(fired(Stage::Mail, "a@x"), None);
        // No rule names helo: nothing is counted there.
        assert_eq!(fired(Stage::Helo, "h"), None);
        assert_eq!(*counts.0.lock().unwrap(), [0, 0, 2, 5, 0]);
    }

    #[test]
    fn no_rules_is_empty() {
        let rules = Rules::parse::<&str>(&[]).unwrap();
        assert!(rules.is_empty());
        assert!(!rules.has(Stage::Connect));
    }
}

/// The rules applied by a session, and the refusals it reports.
#[cfg(test)]
mod session_tests {
    use super::super::transcript::{Outcome, limits, run};
    use super::super::{Session, Step};
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Counts(Mutex<[u64; 5]>);
    impl Counter for Counts {
        fn arrive(&self, stage: Stage) -> u64 {
            let mut c = self.0.lock().unwrap();
            c[stage.index()] += 1;
            c[stage.index()]
        }
    }

    fn session(rules: &[&str], counts: &Arc<Counts>) -> Session {
        let rules = Arc::new(Rules::parse(rules).unwrap());
        let counter: Arc<dyn Counter> = counts.clone();
        let hooks = Hooks {
            fail: Some((rules, counter)),
            report: true,
        };
        let mut limits = limits();
        limits.domains = vec!["y".into()];
        Session::new("mx.test", limits, false).with_hooks(hooks)
    }

    /// A fresh session under `rules`, sent `input`: the session and what it
    /// replied and stored.
    fn under(rules: &[&str], input: &[u8]) -> (Session, Outcome) {
        let mut s = session(rules, &Arc::new(Counts::default()));
        let out = run(&mut s, input, &[], 64);
        (s, out)
    }

    /// Sends `input`; returns the replies and the refusal it left, if any.
    fn say(s: &mut Session, input: &str) -> (String, Option<Refusal>) {
        let out = run(s, input.as_bytes(), &[], 64);
        (out.replies, s.take_refusal())
    }

    fn refusal(
        stage: Stage,
        reply: &str,
        from: Option<&str>,
        to: &[&str],
        address: Option<&str>,
    ) -> Option<Refusal> {
        let line = reply.strip_suffix("\r\n").unwrap();
        let rule = Rule::parse(&format!("mail:*={line}")).unwrap();
        let Action::Reply(reply) = rule.action else {
            panic!()
        };
        Some(Refusal {
            stage,
            reply,
            from: from.map(str::to_string),
            to: to.iter().map(|s| s.to_string()).collect(),
            address: address.map(str::to_string),
        })
    }

    #[test]
    fn data_rules_fire_at_the_last_bdat_chunk() {
        let input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 2\r\nhiBDAT 1 LAST\r\n!";
        let (mut s, out) = under(&["data:nth 1=452 4.3.1 Full"], input);
        assert!(
            out.replies
                .ends_with("250 2.0.0 2 octets received\r\n452 4.3.1 Full\r\n"),
            "{}",
            out.replies
        );
        assert!(out.stored.is_empty());
        assert_eq!(s.take_refusal().map(|r| r.stage), Some(Stage::Data));
    }

    #[test]
    fn injected_replies_at_each_stage_are_reported() {
        let counts = Arc::new(Counts::default());
        let mut s = session(
            &[
                "helo:bad.*=550 5.7.1 Go away",
                "mail:nth 2=451 4.3.0 Later",
                "rcpt:*@bounce.y=550 5.1.1 No such user",
                "data:nth 1=452 4.3.1 Full",
            ],
            &counts,
        );
        let (r, e) = say(&mut s, "EHLO bad.host\r\n");
        assert_eq!(r, "550 5.7.1 Go away\r\n");
        assert_eq!(
            e,
            refusal(Stage::Helo, "550 5.7.1 Go away\r\n", None, &[], None)
        );
        assert_eq!(
            s.take_injection().unwrap().rule,
            "helo:bad.*=550 5.7.1 Go away"
        );
        let (r, _) = say(&mut s, "MAIL FROM:<a@x>\r\n");
        assert!(
            r.starts_with("503 5.5.1"),
            "the refused HELO did not count: {r}"
        );
        say(&mut s, "EHLO good.host\r\n");
        let (r, e) = say(&mut s, "MAIL FROM:<a@x>\r\n");
        assert_eq!((r.as_str(), e), ("250 2.1.0 Ok\r\n", None));
        say(&mut s, "RSET\r\n");
        let (r, e) = say(&mut s, "MAIL FROM:<a@x>\r\n");
        assert_eq!(r, "451 4.3.0 Later\r\n");
        assert_eq!(e, refusal(Stage::Mail, &r, None, &[], Some("a@x")));
        say(&mut s, "MAIL FROM:<a@x>\r\n");
        say(&mut s, "RCPT TO:<b@y>\r\n");
        let (r, e) = say(&mut s, "RCPT TO:<c@BOUNCE.y>\r\n");
        assert_eq!(r, "550 5.1.1 No such user\r\n");
        assert_eq!(
            e,
            refusal(Stage::Rcpt, &r, Some("a@x"), &["b@y"], Some("c@BOUNCE.y"))
        );
        let out = run(&mut s, b"DATA\r\nhi\r\n.\r\n", &[], 64);
        assert_eq!(
            out.replies,
            "354 End data with <CR><LF>.<CR><LF>\r\n452 4.3.1 Full\r\n"
        );
        assert!(out.stored.is_empty(), "a refused data stores nothing");
        assert_eq!(
            s.take_refusal(),
            refusal(
                Stage::Data,
                "452 4.3.1 Full\r\n",
                Some("a@x"),
                &["b@y"],
                None
            )
        );
        // The next message is stored (nth 1 fired once).
        let out = run(
            &mut s,
            b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\n",
            &[],
            64,
        );
        assert_eq!(out.stored.len(), 1);
        assert_eq!(*counts.0.lock().unwrap(), [0, 2, 4, 3, 2]);
    }

    #[test]
    fn every_rcpt_refused_by_a_rule_makes_data_a_554() {
        let (mut s, out) = under(
            &["rcpt:*=550"],
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
        );
        assert!(
            out.replies
                .ends_with("550 5.0.0 Rejected\r\n554 5.5.1 Error: no valid recipients\r\n"),
            "{}",
            out.replies
        );
        // The last refusal kept is RCPT's: the 554 added none.
        assert_eq!(
            s.take_refusal().map(|e| e.stage),
            Some(Stage::Rcpt),
            "DATA refused for want of recipients is no event"
        );
    }

    #[test]
    fn an_injected_421_closes_and_drop_closes_silently() {
        let (_, out) = under(
            &["rcpt:*=421 4.3.2 Bye now"],
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nNOOP\r\n",
        );
        assert!(out.closed);
        assert!(
            out.replies
                .ends_with("250 2.1.0 Ok\r\n421 4.3.2 Bye now\r\n"),
            "{}",
            out.replies
        );
        let (mut s, out) = under(
            &["data:*=drop"],
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n",
        );
        assert!(out.closed && out.stored.is_empty());
        assert!(
            out.replies
                .ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
            "{}",
            out.replies
        );
        assert_eq!(s.take_refusal(), None, "a drop is no event");
    }

    #[test]
    fn connect_rules_replace_the_greeting() {
        let counts = Arc::new(Counts::default());
        let rules = [
            "connect:nth 2=554 5.7.1 Not you",
            "connect:nth 3=delay 1.5",
            "connect:nth 4=drop",
        ];
        let greeting = Step::Reply(Reply::plain(220, "mx.test ESMTP mailsink"));
        assert_eq!(session(&rules, &counts).open(), greeting);
        let mut s = session(&rules, &counts);
        let refused = Reply::new(554, (5, 7, 1), "Not you");
        assert_eq!(s.open(), Step::Close(vec![refused.clone()]));
        assert_eq!(
            s.take_refusal(),
            Some(Refusal {
                stage: Stage::Connect,
                reply: refused,
                from: None,
                to: vec![],
                address: None
            })
        );
        let delayed = Step::Delay(Duration::from_millis(1500), Box::new(greeting));
        assert_eq!(session(&rules, &counts).open(), delayed);
        assert_eq!(session(&rules, &counts).open(), Step::Drop);
    }

    #[test]
    fn a_delay_holds_the_normal_step() {
        let counts = Arc::new(Counts::default());
        let mut s = session(&["rcpt:slow@*=delay 2"], &counts);
        run(&mut s, b"EHLO c\r\nMAIL FROM:<a@x>\r\n", &[], 64);
        let mut body = Vec::new();
        let step = s.feed(
            b"RCPT TO:<slow@y>\r\n",
            super::super::LineEnd::CrLf,
            false,
            &mut body,
        );
        let ok = Step::Reply(Reply::new(250, (2, 1, 5), "Ok"));
        assert_eq!(step, Step::Delay(Duration::from_secs(2), Box::new(ok)));
    }

    #[test]
    fn policy_refusals_are_reported_and_syntax_errors_are_not() {
        let counts = Arc::new(Counts::default());
        let mut s = session(&[], &counts);
        for (line, reported) in [
            ("BOGUS\r\n", false),           // 500
            ("MAIL FROM:<a@x>\r\n", false), // 503 before EHLO
            ("EHLO\r\n", false),            // 501
            ("EHLO c\r\n", false),
            ("RCPT TO:<b@y>\r\n", false),            // 503
            ("MAIL FROM:<a@x> SIZE=5000\r\n", true), // 552
            ("MAIL FROM:<a@x> FOO=1\r\n", false),    // 555
            ("MAIL FROM:<a b>\r\n", false),          // 501
            ("MAIL FROM:<a@x>\r\n", false),
            ("RCPT TO:<b@elsewhere>\r\n", true), // 550 5.7.1 --domain
            ("DATA\r\n", false),                 // 554 no valid recipients
        ] {
            let (r, e) = say(&mut s, line);
            assert_eq!(e.is_some(), reported, "{line:?} → {r:?}: {e:?}");
        }
        let (_, e) = say(&mut s, "RCPT TO:<b@elsewhere>\r\n");
        let e = e.unwrap();
        assert_eq!(
            (e.stage, e.from.as_deref(), e.address.as_deref()),
            (Stage::Rcpt, Some("a@x"), Some("b@elsewhere"))
        );
        say(&mut s, "RCPT TO:<b@y>\r\n");
        let body = format!("DATA\r\n{}\r\n.\r\n", "x".repeat(1200));
        let (r, e) = say(&mut s, &body);
        assert!(
            r.ends_with("552 5.3.4 Error: message file too big\r\n"),
            "{r}"
        );
        assert_eq!(
            e.map(|e| (e.stage, e.to)),
            Some((Stage::Data, vec!["b@y".to_string()]))
        );
    }
}
