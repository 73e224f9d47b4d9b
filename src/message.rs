//! What mailsink adds to a message: the queue id and the prepended
//! `Return-Path`, `Delivered-To` and `Received` headers. Pure: the clock,
//! host name and peer address are arguments.

use crate::smtp::Envelope;
use std::fmt::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A queue id: start second, process id and a per-process sequence number,
/// in upper-case hex, so ids never repeat across restarts or processes.
pub fn queue_id(now: SystemTime, pid: u32, seq: u64) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    format!("{secs:X}{:04X}{seq:06X}", pid & 0xFFFF)
}

/// Where and when a message was received.
#[derive(Debug, Clone)]
pub struct Trace {
    pub id: String,
    pub peer: IpAddr,
    pub host: String,
    pub received: SystemTime,
    /// `TLSv1.3 with cipher ...` when the session ran over TLS.
    pub tls: Option<String>,
}

/// The header block prepended to one stored copy, with LF line ends.
/// `rcpts` are the recipients of this copy.
pub fn prepended(env: &Envelope, rcpts: &[String], trace: &Trace) -> Vec<u8> {
    let mut h = String::with_capacity(256);
    let _ = writeln!(h, "Return-Path: <{}>", env.from);
    for rcpt in rcpts {
        let _ = writeln!(h, "Delivered-To: {rcpt}");
    }
    let helo: String = env
        .helo
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    // Folded at natural points so that no line reaches 998 octets
    // (RFC 5322 §2.1.1): each piece is bounded by the command line limit.
    let _ = write!(h, "Received: from {helo} ({})", trace.peer);
    if let Some(tls) = &trace.tls {
        let _ = write!(h, "\n\t(using {tls})"); // SPEC: Postfix's form
    }
    let _ = write!(
        h,
        "\n\tby {} (mailsink) with {} id {}",
        trace.host, env.protocol, trace.id
    );
    if let [only] = rcpts {
        let _ = write!(h, "\n\tfor <{only}>");
    }
    let _ = writeln!(h, ";\n\t{}", rfc5322_date(trace.received));
    h.into_bytes()
}

/// An RFC 5322 date in UTC with a numeric zone: `Sun, 29 Nov 2026 11:41:54 +0000`.
fn rfc5322_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An RFC 3339 time in UTC with milliseconds: `2026-11-29T11:41:54.123Z`
/// (the `time` of `--events` lines).
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::smtp::MailParams;

    /// A test envelope from the null sender (also the writer's tests').
    pub(crate) fn env(helo: &str, rcpts: &[&str]) -> Envelope {
        Envelope {
            from: String::new(),
            rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
            params: MailParams::default(),
            helo: helo.into(),
            protocol: "ESMTP",
            refused: 0,
            size: 0,
            user: None,
        }
    }

    /// A test trace at a fixed time (also the writer's tests').
    pub(crate) fn trace() -> Trace {
        Trace {
            id: "ABC".into(),
            peer: "127.0.0.1".parse().unwrap(),
            host: "mx.test".into(),
            received: UNIX_EPOCH + Duration::from_secs(1_795_952_514),
            tls: None,
        }
    }

    #[test]
    fn rfc3339_times_are_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_039_314_007);
        assert_eq!(rfc3339(t), "2026-11-30T11:48:34.007Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn dates_are_rfc5322_with_numeric_zone() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_795_952_514)),
            "Sun, 29 Nov 2026 11:41:54 +0000"
        );
        assert_eq!(
            rfc5322_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }

    #[test]
    fn one_recipient_gets_a_for_clause() {
        let e = env("client", &["b@y"]);
        let text = String::from_utf8(prepended(&e, &e.rcpts, &trace())).unwrap();
        assert_eq!(
            text,
            "Return-Path: <>\nDelivered-To: b@y\nReceived: from client (127.0.0.1)\n\tby mx.test (mailsink) with ESMTP id ABC\n\tfor <b@y>;\n\tSun, 29 Nov 2026 11:41:54 +0000\n"
        );
    }

    #[test]
    fn tls_goes_into_received() {
        let mut e = env("client", &["b@y"]);
        e.protocol = "ESMTPSA";
        let mut t = trace();
        t.tls = Some("TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384".into());
        let text = String::from_utf8(prepended(&e, &e.rcpts, &t)).unwrap();
        assert!(text.contains("Received: from client (127.0.0.1)\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\n\tby mx.test (mailsink) with ESMTPSA id ABC\n"), "{text}");
    }

    #[test]
    fn several_recipients_and_a_dirty_helo() {
        let e = env("evil\x1b[31m\x7f", &["a@x", "b@y"]);
        let text = String::from_utf8(prepended(&e, &e.rcpts, &trace())).unwrap();
        assert!(text.contains("Delivered-To: a@x\nDelivered-To: b@y\n"));
        assert!(!text.contains("for <"));
        assert!(text.contains("from evil?[31m? (127.0.0.1)"));
        assert!(text.lines().all(|l| l.len() < 998));
    }

    #[test]
    fn queue_ids_differ_by_sequence() {
        let now = UNIX_EPOCH + Duration::from_secs(0x6000_0000);
        assert_eq!(queue_id(now, 0x12345, 7), "600000002345000007");
        assert_ne!(queue_id(now, 0x12345, 7), queue_id(now, 0x12345, 8));
    }
}
