//! Every row of SPEC's SMTP table, case, sequence errors and enhanced
//! status codes, spoken over a real socket to the real binary.

use crate::harness::{Client, Server, split_stored};

/// The enhanced status code at the start of a reply line's text, if any
/// (`250 2.1.0 Ok` → `2.1.0`).
fn enhanced_code(line: &str) -> Option<&str> {
    let code = line.get(4..)?.split(' ').next()?;
    let parts: Vec<&str> = code.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
    (parts.len() == 3 && parts.iter().all(numeric)).then_some(code)
}

/// True when every line of `reply` carries an enhanced status code whose
/// class matches the reply code (RFC 3463: `2.x.x` on 2xx, ...).
fn has_enhanced(reply: &str) -> bool {
    !reply.is_empty()
        && reply
            .lines()
            .all(|line| enhanced_code(line).is_some_and(|code| code[..1] == line[..1]))
}

/// True when no line of `reply` carries anything like an enhanced code.
fn lacks_enhanced(reply: &str) -> bool {
    reply.lines().all(|line| enhanced_code(line).is_none())
}

/// The client sees EOF: the server closed the connection.
fn assert_closed(c: &mut Client) {
    assert_eq!(c.read_to_end(), "", "server did not close");
}

#[test]
fn greeting_and_helo_have_no_enhanced_codes() {
    let server = Server::start(&[]);
    let mut c = server.client();
    assert_eq!(c.reply(), "220 mx.test ESMTP mailsink\r\n");
    assert_eq!(c.cmd("HELO client.test", "250"), "250 mx.test\r\n");
    let bad = c.cmd("HELO", "501 ");
    assert!(
        lacks_enhanced(&bad),
        "HELO reply with an enhanced code: {bad}"
    );
    let bad = c.cmd("EHLO", "501 ");
    assert!(
        lacks_enhanced(&bad),
        "EHLO reply with an enhanced code: {bad}"
    );
    let bad = c.cmd("HELO a\x01b", "501 ");
    assert!(lacks_enhanced(&bad), "{bad}");
    // The refused HELO left the first one in place.
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
}

#[test]
fn ehlo_lists_the_extensions_with_the_size_limit() {
    let server = Server::start(&["--max-size", "12345"]);
    let mut c = Client::greeted(server.addr);
    let reply = c.cmd("EHLO client.test", "250-");
    assert_eq!(
        reply,
        "250-mx.test\r\n250-SIZE 12345\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
         250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 HELP\r\n"
    );
}

#[test]
fn ehlo_resets_the_transaction() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("EHLO again.test", "250-mx.test");
    c.cmd("DATA", "503 5.5.1");
    c.cmd("RCPT TO:<b@y.test>", "503 5.5.1");
    let reply = c.mail("c@x.test", &["d@y.test"], "after\r\n");
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let (head, body) = split_stored(&server.new_files()[0]);
    assert!(
        head.starts_with("Return-Path: <c@x.test>\nDelivered-To: d@y.test\n"),
        "{head}"
    );
    assert!(head.contains("from again.test (127.0.0.1)"), "{head}");
    assert_eq!(body, b"after\n");
}

#[test]
fn mail_accepts_size_body_and_smtputf8_parameters() {
    let server = Server::start(&["--max-size", "1000"]);
    let mut c = server.ehlo();
    for line in [
        "MAIL FROM:<a@x.test> SIZE=1000",
        "MAIL FROM:<a@x.test> BODY=8BITMIME",
        "MAIL FROM:<a@x.test> BODY=7BIT",
        "MAIL FROM:<a@x.test> SMTPUTF8",
        "MAIL FROM:<a@x.test> SIZE=10 BODY=8BITMIME SMTPUTF8",
        "mail from:<a@x.test> size=0 body=8bitmime smtputf8",
        "MAIL FROM:<>",
        "MAIL FROM:<> SIZE=5",
        "MAIL FROM: <a@x.test>",
    ] {
        c.cmd(line, "250 2.1.0 ");
        c.cmd("RSET", "250 2.0.0");
    }
}

#[test]
fn mail_parameter_errors_leave_no_transaction() {
    let server = Server::start(&["--max-size", "1000"]);
    let mut c = server.ehlo();
    for (line, want) in [
        ("MAIL FROM:<a@x.test> FOO=1", "555 5.5.4 "),
        ("MAIL FROM:<a@x.test> RET=HDRS", "555 5.5.4 "),
        ("MAIL FROM:<a@x.test> SIZE=abc", "501 5.5.4 "),
        ("MAIL FROM:<a@x.test> SIZE=", "501 5.5.4 "),
        ("MAIL FROM:<a@x.test> SIZE=-1", "501 5.5.4 "),
        (
            "MAIL FROM:<a@x.test> SIZE=99999999999999999999999",
            "501 5.5.4 ",
        ),
        ("MAIL FROM:<a@x.test> SIZE=1001", "552 5.3.4 "),
        ("MAIL FROM:<a@x.test> BODY=9BIT", "501 5.5.4 "),
        ("MAIL TO:<a@x.test>", "501 5.5.4 "),
        ("MAIL", "501 5.5.4 "),
    ] {
        c.cmd(line, want);
        // Nothing was opened: the next MAIL is not nested.
        c.cmd("MAIL FROM:<a@x.test> SIZE=1000", "250 2.1.0");
        c.cmd("RSET", "250 2.0.0");
    }
    c.cmd("RCPT TO:<b@y.test>", "503 5.5.1 ");
}

#[test]
fn second_mail_is_refused_and_the_first_stands() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<first@x.test>", "250 2.1.0");
    c.cmd("MAIL FROM:<second@x.test>", "503 5.5.1 ");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("MAIL FROM:<third@x.test>", "503 5.5.1 ");
    c.cmd("DATA", "354 ");
    c.send("hi\r\n.\r\n");
    c.expect("250 2.0.0 Ok: queued as ");
    let (head, _) = split_stored(&server.new_files()[0]);
    assert!(head.starts_with("Return-Path: <first@x.test>\n"), "{head}");
}

#[test]
fn null_sender_is_stored_as_empty_return_path() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let reply = c.mail("", &["b@y.test"], "bounce\r\n");
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let (head, _) = split_stored(&server.new_files()[0]);
    assert!(head.starts_with("Return-Path: <>\n"), "{head}");
}

#[test]
fn rcpt_is_repeatable_up_to_max_recipients() {
    let server = Server::start(&["--max-recipients", "3"]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    for r in ["r1@y.test", "r2@y.test", "r3@y.test"] {
        c.cmd(&format!("RCPT TO:<{r}>"), "250 2.1.5 ");
    }
    for r in ["r4@y.test", "r5@y.test"] {
        c.cmd(&format!("RCPT TO:<{r}>"), "452 4.5.3 ");
    }
    c.cmd("DATA", "354");
    c.send("three\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let (head, _) = split_stored(&server.new_files()[0]);
    let delivered: Vec<&str> = head
        .lines()
        .filter(|l| l.starts_with("Delivered-To:"))
        .collect();
    assert_eq!(
        delivered,
        [
            "Delivered-To: r1@y.test",
            "Delivered-To: r2@y.test",
            "Delivered-To: r3@y.test"
        ]
    );
    // The limit is per message: the next transaction starts afresh.
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    for r in ["r4@y.test", "r5@y.test", "r6@y.test"] {
        c.cmd(&format!("RCPT TO:<{r}>"), "250 2.1.5 ");
    }
}

#[test]
fn domain_limits_recipients_but_postmaster_always_passes() {
    let server = Server::start(&["--domain", "Example.com", "--domain", "b.test"]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@elsewhere.test>", "250 2.1.0");
    c.cmd("RCPT TO:<u@other.test>", "550 5.7.1 ");
    c.cmd("RCPT TO:<u@example.com.evil.test>", "550 5.7.1 ");
    c.cmd("RCPT TO:<u@sub.example.com>", "550 5.7.1 ");
    c.cmd("RCPT TO:<Mixed@EXAMPLE.COM>", "250 2.1.5 ");
    c.cmd("RCPT TO:<v@b.test>", "250 2.1.5 ");
    c.cmd("RCPT TO:<postmaster>", "250 2.1.5 ");
    c.cmd("RCPT TO:<PostMaster>", "250 2.1.5 ");
    c.cmd("RCPT TO:<POSTMASTER@other.test>", "250 2.1.5 ");
    c.cmd("DATA", "354");
    c.send("x\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let (head, _) = split_stored(&server.new_files()[0]);
    let delivered: Vec<&str> = head
        .lines()
        .filter(|l| l.starts_with("Delivered-To:"))
        .collect();
    assert_eq!(
        delivered,
        [
            "Delivered-To: Mixed@EXAMPLE.COM",
            "Delivered-To: v@b.test",
            "Delivered-To: postmaster",
            "Delivered-To: PostMaster",
            "Delivered-To: POSTMASTER@other.test",
        ]
    );
}

#[test]
fn data_without_a_transaction_is_503() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("DATA", "503 5.5.1 ");
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("DATA", "503 5.5.1 ");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("DATA", "354 ");
}

#[test]
fn data_after_every_recipient_refused_is_554() {
    let server = Server::start(&["--domain", "example.com"]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<u@other.test>", "550 5.7.1 ");
    c.cmd("RCPT TO:<v@other.test>", "550 5.7.1 ");
    c.cmd("DATA", "554 5.5.1 ");
    // The session goes on; the transaction is still open for a good RCPT.
    c.cmd("RCPT TO:<w@example.com>", "250 2.1.5");
    c.cmd("DATA", "354 ");
    c.send("late\r\n.\r\n");
    c.expect("250 2.0.0 ");
    assert_eq!(server.new_files().len(), 1);
}

#[test]
fn rset_clears_the_transaction_and_keeps_ehlo() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    assert_eq!(c.cmd("RSET", "250"), "250 2.0.0 Ok\r\n");
    c.cmd("DATA", "503 5.5.1 ");
    c.cmd("RCPT TO:<b@y.test>", "503 5.5.1 ");
    c.cmd("RSET", "250 2.0.0");
    // No HELO needed again, and the session is still ESMTP.
    c.mail("c@x.test", &["d@y.test"], "after rset\r\n");
    let files = server.new_files();
    assert_eq!(files.len(), 1);
    let (head, body) = split_stored(&files[0]);
    assert!(head.contains(" with ESMTP id "), "{head}");
    assert!(head.starts_with("Return-Path: <c@x.test>\nDelivered-To: d@y.test\n"));
    assert_eq!(body, b"after rset\n");
}

#[test]
fn noop_vrfy_help_answer_before_and_after_helo() {
    let server = Server::start(&[]);
    let mut c = Client::greeted(server.addr);
    for _ in 0..2 {
        assert_eq!(c.cmd("NOOP", "250"), "250 2.0.0 Ok\r\n");
        c.cmd("NOOP ignored argument", "250 2.0.0 ");
        c.cmd("VRFY root", "252 2.0.0 ");
        c.cmd("VRFY <nobody@y.test>", "252 2.0.0 ");
        c.cmd("HELP", "214 2.0.0 ");
        c.cmd("HELP MAIL", "214 2.0.0 ");
        c.cmd("RSET", "250 2.0.0 ");
        c.cmd("HELO client.test", "250 mx.test");
    }
}

#[test]
fn quit_says_221_and_closes() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    assert_eq!(c.cmd("QUIT", "221"), "221 2.0.0 Bye\r\n");
    assert_closed(&mut c);
    assert!(server.new_files().is_empty());
}

#[test]
fn commands_not_offered_are_502() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    for line in [
        "EXPN staff",
        "STARTTLS",
        "AUTH PLAIN AGFhAGI=",
        "TURN",
        "ETRN example.com",
        "starttls",
    ] {
        c.cmd(line, "502 5.5.1 ");
    }
    c.cmd("NOOP", "250 2.0.0");
}

#[test]
fn unknown_command_is_500() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("FROB", "500 5.5.2 ");
    // Not "MAILFROM:<..>": SPEC makes a first colon before any space header-like.
    c.cmd("MAILFROM <a@x.test>", "500 5.5.2 ");
    c.cmd("XYZZY plugh", "500 5.5.2 ");
    c.cmd("NOOP", "250 2.0.0");
}

#[test]
fn arguments_to_data_rset_quit_are_501() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("DATA now", "501 5.5.4 ");
    c.cmd("RSET please", "501 5.5.4 ");
    c.cmd("QUIT now", "501 5.5.4 ");
    // None of them acted: the transaction is intact and the line open.
    c.cmd("DATA", "354 ");
    c.send("kept\r\n.\r\n");
    c.expect("250 2.0.0 ");
    assert_eq!(split_stored(&server.new_files()[0]).1, b"kept\n");
}

#[test]
fn commands_are_case_insensitive_and_local_parts_keep_case() {
    let server = Server::start(&[]);
    let mut c = Client::greeted(server.addr);
    c.cmd("ehlo client.test", "250-mx.test");
    c.cmd("mail from:<Joe.Q@Example.TEST>", "250 2.1.0");
    c.cmd("Rcpt To:<Bob.Smith@Y.test>", "250 2.1.5");
    c.cmd("nOoP", "250 2.0.0");
    c.cmd("dAtA", "354");
    c.send("case\r\n.\r\n");
    c.expect("250 2.0.0 ");
    c.cmd("rset", "250 2.0.0");
    c.cmd("vrfy x", "252 2.0.0");
    c.cmd("help", "214 2.0.0");
    c.cmd("Helo client.test", "250 mx.test");
    c.cmd("quit", "221 2.0.0");
    let (head, _) = split_stored(&server.new_files()[0]);
    assert!(
        head.starts_with("Return-Path: <Joe.Q@Example.TEST>\nDelivered-To: Bob.Smith@Y.test\n"),
        "{head}"
    );
}

#[test]
fn out_of_order_commands_are_503_and_change_nothing() {
    let server = Server::start(&[]);
    let mut c = Client::greeted(server.addr);
    // Before HELO/EHLO.
    c.cmd("MAIL FROM:<a@x.test>", "503 5.5.1 ");
    c.cmd("RCPT TO:<b@y.test>", "503 5.5.1 ");
    c.cmd("DATA", "503 5.5.1 ");
    c.cmd("EHLO client.test", "250-");
    // RCPT before MAIL, DATA before MAIL.
    c.cmd("RCPT TO:<b@y.test>", "503 5.5.1 ");
    c.cmd("DATA", "503 5.5.1 ");
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    // DATA before RCPT: the MAIL stays.
    c.cmd("DATA", "503 5.5.1 ");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("MAIL FROM:<z@x.test>", "503 5.5.1 ");
    c.cmd("RCPT TO:<c@y.test>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("in order\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let files = server.new_files();
    assert_eq!(files.len(), 1);
    let (head, body) = split_stored(&files[0]);
    assert!(
        head.starts_with(
            "Return-Path: <a@x.test>\nDelivered-To: b@y.test\nDelivered-To: c@y.test\n"
        ),
        "{head}"
    );
    assert_eq!(body, b"in order\n");
}

#[test]
fn every_2xx_4xx_5xx_reply_has_an_enhanced_code() {
    let server = Server::start(&[
        "--max-size",
        "100",
        "--max-recipients",
        "1",
        "--domain",
        "y.test",
    ]);
    let mut c = Client::greeted(server.addr);
    let mut replies: Vec<(String, String)> = Vec::new();
    let say = |c: &mut Client, replies: &mut Vec<(String, String)>, line: &str| {
        c.send(format!("{line}\r\n"));
        let reply = c.reply();
        replies.push((line.to_string(), reply.clone()));
        reply
    };
    for line in [
        "NOOP",
        "RSET",
        "VRFY x",
        "HELP",
        "MAIL FROM:<a@x.test>",
        "FROB",
    ] {
        say(&mut c, &mut replies, line);
    }
    // EHLO and HELO are exempt; their replies are checked elsewhere.
    c.cmd("HELO client.test", "250 ");
    for line in [
        "RCPT TO:<b@y.test>",
        "DATA",
        "MAIL FROM:<a@x.test> SIZE=101",
        "MAIL FROM:<a@x.test> SIZE=x",
        "MAIL FROM:<a@x.test> X=1",
        "MAIL FROM:<jörg@x.test>",
        "MAIL FROM:<a@x.test>",
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<b@z.test>",
        "RCPT TO:<b@y.test>",
        "RCPT TO:<c@y.test>",
        "RCPT TO:<bad>",
        "DATA x",
        "RSET x",
        "QUIT x",
        "EXPN x",
        "AUTH LOGIN",
    ] {
        say(&mut c, &mut replies, line);
    }
    assert!(say(&mut c, &mut replies, "DATA").starts_with("354 "));
    c.send(format!("{}\r\n.\r\n", "x".repeat(200)));
    replies.push(("(too big)".into(), c.expect("552 5.3.4 ")));
    assert!(say(&mut c, &mut replies, "MAIL FROM:<a@x.test>").starts_with("250 "));
    say(&mut c, &mut replies, "RCPT TO:<b@y.test>");
    assert!(say(&mut c, &mut replies, "DATA").starts_with("354 "));
    c.send("ok\r\n.\r\n");
    replies.push(("(stored)".into(), c.expect("250 2.0.0 ")));
    say(&mut c, &mut replies, "QUIT");
    let mut codes = std::collections::BTreeSet::new();
    for (line, reply) in &replies {
        if reply.starts_with("354 ") {
            assert!(lacks_enhanced(reply), "354 with an enhanced code: {reply}");
            continue;
        }
        assert!(has_enhanced(reply), "{line:?} got {reply:?}");
        codes.insert(reply[..3].to_string());
    }
    // The walk reached a good spread of replies.
    for code in [
        "214", "221", "250", "252", "452", "500", "501", "503", "550", "552", "555",
    ] {
        assert!(codes.contains(code), "{code} never seen: {replies:#?}");
    }
}

#[test]
fn smtputf8_addresses_are_accepted_with_the_parameter() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<jörg@bücher.example> SMTPUTF8", "250 2.1.0");
    c.cmd("RCPT TO:<用户@例子.测试>", "250 2.1.5");
    c.cmd("RCPT TO:<ascii@y.test>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("Subject: Grüße\r\n\r\nÄÖÜ ß 用户\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let (head, body) = split_stored(&server.new_files()[0]);
    assert!(
        head.starts_with(
            "Return-Path: <jörg@bücher.example>\nDelivered-To: 用户@例子.测试\nDelivered-To: ascii@y.test\n"
        ),
        "{head}"
    );
    assert!(head.contains(" with UTF8SMTP id "), "{head}");
    assert_eq!(body, "Subject: Grüße\n\nÄÖÜ ß 用户\n".as_bytes());
}

#[test]
fn non_ascii_addresses_need_smtputf8() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<jörg@bücher.example>", "550 5.6.7 ");
    c.cmd(
        "MAIL FROM:<jörg@bücher.example> BODY=8BITMIME",
        "550 5.6.7 ",
    );
    c.cmd("MAIL FROM:<a@x.test> BODY=8BITMIME", "250 2.1.0");
    c.cmd("RCPT TO:<用户@例子.测试>", "553 5.6.7 ");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("DATA", "354");
    // 8-bit text is fine in an 8BITMIME body without SMTPUTF8.
    c.send("caf\u{e9} \u{fc}ber\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let (head, body) = split_stored(&server.new_files()[0]);
    assert!(head.contains(" with ESMTP id "), "{head}");
    assert!(!head.contains("用户"), "{head}");
    assert_eq!(body, "caf\u{e9} \u{fc}ber\n".as_bytes());
}

#[test]
fn invalid_utf8_and_control_characters_are_refused() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.send(b"MAIL FROM:<j\xf6rg@x.test> SMTPUTF8\r\n");
    c.expect("500 5.5.2 ");
    c.send(b"NOOP \xff\xfe\r\n");
    c.expect("500 5.5.2 ");
    c.cmd("MAIL FROM:<a\x01b@x.test>", "501 ");
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b\x1b[31m@y.test>", "501 ");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
}

#[test]
fn helo_session_is_stored_as_smtp() {
    let server = Server::start(&[]);
    let mut c = Client::greeted(server.addr);
    c.cmd("HELO old.client", "250 mx.test");
    c.mail("a@x.test", &["b@y.test"], "plain\r\n");
    let (head, _) = split_stored(&server.new_files()[0]);
    assert!(
        head.contains(
            "Received: from old.client (127.0.0.1)\n\tby mx.test (mailsink) with SMTP id "
        ),
        "{head}"
    );
}
