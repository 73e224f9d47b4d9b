//! SPEC SMTP "Paths" and "ESMTP parameters", the header-like rule and the
//! bare Delivered-To, through the real binary: the six lines of issue 8,
//! each of which the server before it got wrong.

use crate::harness::{Server, split_stored};

#[test]
fn size_of_twenty_digits_is_too_big_not_malformed() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd(
        "MAIL FROM:<a@example.com> SIZE=99999999999999999999",
        "552 5.3.4 ",
    );
    c.cmd(
        "MAIL FROM:<a@example.com> SIZE=123456789012345678901",
        "501 5.5.4 ",
    );
    c.cmd("MAIL FROM:<a@example.com> SIZE=1000", "250 2.1.0");
}

#[test]
fn a_parameter_given_twice_is_refused() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@example.com> SIZE=1 SIZE=2", "501 5.5.4 ");
    c.cmd("MAIL FROM:<a@example.com> size=1 Body=7BIT", "250 2.1.0");
}

#[test]
fn two_unquoted_ats_are_refused_and_the_state_stays() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@b@example.com>", "501 5.1.7 ");
    c.cmd("RCPT TO:<b@y.test>", "503 5.5.1 "); // still no transaction
    c.cmd("MAIL FROM:<a@example.com>", "250 2.1.0");
    c.cmd("RCPT TO:<a@b@example.com>", "501 5.1.3 ");
    c.cmd("RCPT TO:<x@a..b>", "501 5.1.3 ");
    c.cmd("DATA", "503 5.5.1 "); // no recipient was added
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("x\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let (head, _) = split_stored(&server.new_files()[0]);
    assert!(head.contains("Delivered-To: b@y.test\n"), "{head}");
}

#[test]
fn a_quoted_local_part_may_hold_a_closing_bracket() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd(r#"MAIL FROM:<"a b"@[192.0.2.1]>"#, "250 2.1.0");
    c.cmd(r#"RCPT TO:<"a>d"@example.com>"#, "250 2.1.5");
    c.cmd("RCPT TO:<@relay.test:c@[IPv6:2001:db8::1]>", "250 2.1.5");
    c.cmd("RCPT TO:<e..f@example.com>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("x\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let (head, _) = split_stored(&server.new_files()[0]);
    assert!(
        head.starts_with(
            "Return-Path: <\"a b\"@[192.0.2.1]>\nDelivered-To: \"a>d\"@example.com\nDelivered-To: c@[IPv6:2001:db8::1]\nDelivered-To: e..f@example.com\n"
        ),
        "{head}"
    ); // Logged as sent too, the log's escaping aside (`"` is written `\"`).
    let logged = r#"from=<\"a b\"@[192.0.2.1]> to=<\"a>d\"@example.com>,<c@[IPv6:2001:db8::1]>,<e..f@example.com>"#;
    assert!(
        server.wait_log(logged, std::time::Duration::from_secs(5)),
        "{}",
        server.log()
    );
}

#[test]
fn a_header_like_first_line_closes() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.expect("220 ");
    c.send("content-type:text/plain\r\n");
    c.expect("221 2.7.0 ");
    assert_eq!(c.read_to_end(), "");
}

#[test]
fn delivered_to_carries_the_bare_address() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.mail(
        "alice@example.com",
        &["bob@example.com"],
        "Subject: hi\r\n\r\nx\r\n",
    );
    let (head, _) = split_stored(&server.new_files()[0]);
    assert!(
        head.starts_with(
            "Return-Path: <alice@example.com>\nDelivered-To: bob@example.com\nReceived: "
        ),
        "{head}"
    );
    assert!(head.contains("\tfor <bob@example.com>;"), "{head}");
}

#[test]
fn path_edges_refused_or_stored_as_sent() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test", "501 5.1.7 "); // no closing `>`
    c.cmd("MAIL FROM:<a@.x.test>", "501 5.1.7 "); // empty domain label
    c.cmd("MAIL FROM:<a\x01b@x.test>", "501 "); // a control character
    c.cmd(r#"MAIL FROM:<"a\"b"@x.test>"#, "250 2.1.0");
    c.cmd("RCPT TO:<a\x7fb@y.test>", "501 ");
    c.cmd("RCPT TO:<.a@y.test>", "250 2.1.5");
    c.cmd("RCPT TO:<a.@y.test>", "250 2.1.5");
    let long = "l".repeat(70);
    c.cmd(
        &format!("RCPT TO:<@a.test,@b.test:{long}@y.test>"),
        "250 2.1.5",
    );
    c.cmd("DATA", "354");
    c.send("x\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let (head, _) = split_stored(&server.new_files()[0]);
    let want = format!(
        "Return-Path: <\"a\\\"b\"@x.test>\nDelivered-To: .a@y.test\nDelivered-To: a.@y.test\nDelivered-To: {long}@y.test\n"
    );
    assert!(head.starts_with(&want), "{head}");
}
