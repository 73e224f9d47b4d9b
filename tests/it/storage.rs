//! What lands in the Maildir: content, prepended headers, names, sizes.

use crate::harness::{Server, split_stored};

#[test]
fn message_round_trips_with_prepended_headers() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.expect("220 mx.test ESMTP mailsink");
    c.cmd("EHLO client.test", "250-mx.test");
    let reply = c.mail("a@x.test", &["b@y.test"], "Subject: hi\r\n\r\n..dotted\r\nline\r\n");
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let files = server.new_files();
    assert_eq!(files.len(), 1);
    let (head, body) = split_stored(&files[0]);
    assert!(head.starts_with("Return-Path: <a@x.test>\nDelivered-To: <b@y.test>\nReceived: from client.test (127.0.0.1)\n\tby mx.test (mailsink) with ESMTP id "), "{head}");
    assert!(head.contains("\n\tfor <b@y.test>;\n"), "{head}");
    assert_eq!(body, b"Subject: hi\n\n.dotted\nline\n");
    let size = std::fs::metadata(&files[0]).unwrap().len();
    assert!(files[0].to_str().unwrap().ends_with(&format!(",S={size}")));
    assert!(crate::harness::files_in(&server.maildir().join("tmp")).is_empty());
}
