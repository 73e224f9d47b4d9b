#!/usr/bin/env python3
"""Helpers for scripts/interop: send with smtplib, and check what mailsink stored.

Subcommands (each prints problems as "  - ..." lines and exits 1 on any):
  verify      check every file of one Maildir: name, size, mode, the prepended
              Return-Path / Delivered-To / Received headers, and the content
  swaks-data  extract the DATA that swaks sent from its transcript
  attachment  check that a stored message carries a file as an attachment
  smtplib     send with Python's smtplib (sendmail, or send_message + SMTPUTF8)
  pymailbox   parse Maildirs with mailbox.Maildir + email.policy.default
  dovecot     compare `doveadm -f json fetch` output with the Maildir files
"""
import argparse
import email
import email.policy
import email.utils
import json
import mailbox
import os
import re
import smtplib
import stat
import sys

problems = []


def problem(msg):
    problems.append(msg)


def finish(count=None):
    for p in problems[:40]:
        print("  - " + p)
    if len(problems) > 40:
        print("  - ... and %d more" % (len(problems) - 40))
    if count is not None:
        print("count=%d" % count)
    sys.exit(1 if problems else 0)


def lf(data):
    return data.replace(b"\r\n", b"\n")


NAME_RE = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)R([0-9a-f]+)\.(.+),S=(\d+)$")
RECEIVED_RE = re.compile(
    r"^Received: from (?P<helo>\S+) \((?P<ip>[0-9.]+|[0-9a-fA-F:]+)\) "
    r"(?:\(using (?P<tls>TLSv1\.[23] with cipher \S+)\) )?by (?P<host>\S+) "
    r"\(mailsink\) with (?P<proto>(?:SMTP|ESMTP|UTF8SMTP)S?A?) id (?P<id>\S+?)"
    r"(?: for <(?P<for>[^>]*)>)?; (?P<date>.+)$")


def escape_host(h):
    return h.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")


def same_addr(a, b):
    """Local part exact, domain case-insensitive; optional angle brackets."""
    a = a.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1]
    if "@" in a and "@" in b:
        la, da = a.rsplit("@", 1)
        lb, db = b.rsplit("@", 1)
        return la == lb and da.lower() == db.lower()
    return a == b


def maildir_files(root):
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(root, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in sorted(os.listdir(d)) if not f.startswith(".")]
    return out


def split_prepended(data, where):
    """Return (return_path, [delivered_to], received_unfolded, received_raw, rest)."""
    lines = data.split(b"\n")
    i = 0
    rp = lines[0].decode("utf-8", "replace") if lines else ""
    i = 1
    dts = []
    while i < len(lines) and lines[i].startswith(b"Delivered-To:"):
        dts.append(lines[i][len(b"Delivered-To:"):].decode("utf-8", "replace").strip())
        i += 1
    rec_lines = []
    if i < len(lines) and lines[i].startswith(b"Received:"):
        rec_lines.append(lines[i])
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            rec_lines.append(lines[i])
            i += 1
    else:
        problem("%s: no Received: header right after the Delivered-To lines (line %d: %r)"
                % (where, i + 1, lines[i][:80] if i < len(lines) else b""))
    raw = b"\n".join(rec_lines)
    for l in rec_lines:
        if len(l) > 998:
            problem("%s: Received line longer than 998 octets" % where)
    unfolded = re.sub(rb"\n[ \t]+", b" ", raw).decode("utf-8", "replace")
    rest = b"\n".join(lines[i:])
    return rp, dts, unfolded, raw, rest


def is_header_block(data):
    for line in data.split(b"\n"):
        if line == b"":
            continue
        if line[:1] in (b" ", b"\t"):
            continue
        if not re.match(rb"^[!-9;-~]+:", line):
            return False
    return True


def cmd_verify(a):
    files = maildir_files(a.maildir)
    tmpd = os.path.join(a.maildir, "tmp")
    if not os.path.isdir(os.path.join(a.maildir, "new")):
        problem("%s: no new/ directory" % a.maildir)
    if os.path.isdir(tmpd) and os.listdir(tmpd):
        problem("tmp/ is not empty: %s" % os.listdir(tmpd)[:5])
    if len(files) != a.count:
        problem("expected %d message(s) in %s, found %d" % (a.count, a.maildir, len(files)))
    expects = []
    for e in a.expect or []:
        with open(e, "rb") as f:
            expects.append(lf(f.read()))
    used = [0] * len(expects)
    qids = set()
    for path in files:
        name = os.path.basename(path)
        where = name
        st = os.stat(path)
        with open(path, "rb") as f:
            data = f.read()
        m = NAME_RE.match(name.split(":2,")[0])
        if not m:
            problem("%s: file name does not match <secs>.M<usec>P<pid>Q<seq>R<hex>.<host>,S=<size>" % where)
        else:
            if int(m.group(7)) != st.st_size:
                problem("%s: ,S=%s but the file has %d bytes" % (where, m.group(7), st.st_size))
            if a.hostname and m.group(6) != escape_host(a.hostname):
                problem("%s: host part %r, expected %r" % (where, m.group(6), escape_host(a.hostname)))
        if stat.S_IMODE(st.st_mode) != 0o600:
            problem("%s: mode %o, expected 600" % (where, stat.S_IMODE(st.st_mode)))
        if b"\r\n" in data:
            problem("%s: stored file has CRLF line endings" % where)
        rp, dts, rec, rec_raw, rest = split_prepended(data, where)
        want_rp = "Return-Path: <%s>" % a.sender
        if rp != want_rp:
            problem("%s: first line %r, expected %r" % (where, rp, want_rp))
        if len(dts) != len(a.rcpt) or not all(same_addr(x, y) for x, y in zip(dts, a.rcpt)):
            problem("%s: Delivered-To %r, expected %r" % (where, dts, a.rcpt))
        if any(x.startswith("<") or x.endswith(">") for x in dts):
            problem("%s: Delivered-To %r has angle brackets; SPEC: the bare address" % (where, dts))
        rm = RECEIVED_RE.match(rec)
        if not rm:
            problem("%s: Received header not in the documented form: %r" % (where, rec))
        else:
            if a.helo is not None and rm.group("helo") != a.helo:
                problem("%s: Received from %r, expected HELO name %r" % (where, rm.group("helo"), a.helo))
            if rm.group("ip") != "127.0.0.1":
                problem("%s: Received peer %r, expected 127.0.0.1" % (where, rm.group("ip")))
            if a.hostname and rm.group("host") != a.hostname:
                problem("%s: Received by %r, expected %r" % (where, rm.group("host"), a.hostname))
            if bool(rm.group("tls")) != a.tls:
                problem("%s: Received TLS clause %r, expected %s" % (where, rm.group("tls"), "one" if a.tls else "none"))
            if a.proto and rm.group("proto") != a.proto:
                problem("%s: Received with %s, expected %s" % (where, rm.group("proto"), a.proto))
            if len(a.rcpt) == 1:
                if rm.group("for") is None or not same_addr(rm.group("for"), a.rcpt[0]):
                    problem("%s: Received 'for <%s>' missing or wrong (got %r)" % (where, a.rcpt[0], rm.group("for")))
            elif rm.group("for") is not None:
                problem("%s: Received has 'for' although the copy has %d recipients" % (where, len(a.rcpt)))
            try:
                dt = email.utils.parsedate_to_datetime(rm.group("date"))
                if dt.tzinfo is None or not re.search(r"[+-]\d{4}\s*$", rm.group("date")):
                    problem("%s: Received date has no numeric zone: %r" % (where, rm.group("date")))
            except Exception:
                problem("%s: Received date does not parse: %r" % (where, rm.group("date")))
            qids.add(rm.group("id"))
        if expects and a.mode != "none":
            hit = None
            for i, expected in enumerate(expects):
                if a.mode == "exact" and rest == expected:
                    hit = i
                elif (a.mode == "suffix" and rest.endswith(expected)
                      and is_header_block(rest[:len(rest) - len(expected)])):
                    hit = i
                if hit is not None:
                    used[i] += 1
                    break
            if hit is None:
                problem("%s: content differs from what was sent (%s)\n%s"
                        % (where, "exactly" if a.mode == "exact" else "as the end of the stored message",
                           diff(closest(expects, rest), rest)))
        if a.contains:
            for c in a.contains:
                if c.encode() not in rest:
                    problem("%s: content lacks %r" % (where, c))
    if expects and a.mode != "none" and not problems:
        for i, n in enumerate(used):
            if len(expects) > 1 and n != a.count // len(expects):
                problem("%s stored %d times, expected %d" % (a.expect[i], n, a.count // len(expects)))
    if a.unique_ids and len(qids) != len(files):
        problem("queue ids in Received headers are not unique: %d ids for %d files" % (len(qids), len(files)))
    finish(len(files))


def closest(expects, got):
    import difflib
    return max(expects, key=lambda e: difflib.SequenceMatcher(None, e, got).quick_ratio())


def diff(want, got):
    import difflib
    d = difflib.unified_diff(want.decode("utf-8", "replace").split("\n"),
                             got.decode("utf-8", "replace").split("\n"),
                             "sent", "stored", lineterm="", n=1)
    return "\n".join("      " + l for l in list(d)[:30])


def cmd_swaks_data(a):
    """swaks shows every line it sends as ' -> line' (dot-stuffed); over
    TLS as ' ~> line', and what it reads as '<~ '."""
    with open(a.transcript, "r", encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().split("\n")
    lines = [" -> " + l[4:] if l.startswith(" ~> ") else
             "<-  " + l[4:] if l.startswith("<~  ") else l for l in lines]
    out, state = [], 0
    for l in lines:
        if state == 0 and l == " -> DATA":
            state = 1
        elif state == 1 and l.startswith("<-  354"):
            state = 2
        elif state == 2:
            if l == " -> .":
                state = 3
                break
            if l.startswith(" -> "):
                s = l[4:]
                out.append(s[1:] if s.startswith(".") else s)
    if state != 3:
        problem("no complete DATA phase in the swaks transcript %s" % a.transcript)
        finish()
    with open(a.out, "wb") as f:
        f.write(("\n".join(out) + "\n").encode("utf-8", "surrogateescape"))
    finish()


def cmd_attachment(a):
    files = maildir_files(a.maildir)
    with open(a.file, "rb") as f:
        want = f.read()
    found = 0
    for path in files:
        with open(path, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        for part in msg.iter_attachments():
            if part.get_filename() == os.path.basename(a.file):
                got = part.get_payload(decode=True)
                if got != want:
                    problem("%s: attachment %s decodes to %d bytes, differing from the %d sent"
                            % (os.path.basename(path), a.file, len(got or b""), len(want)))
                found += 1
    if found != len(files) or not files:
        problem("attachment %s found in %d of %d messages" % (os.path.basename(a.file), found, len(files)))
    finish(found)


class CapturingSMTP(smtplib.SMTP):
    """Records the message bytes exactly as smtplib hands them to sendmail()."""
    captured = None

    def sendmail(self, from_addr, to_addrs, msg, mail_options=(), rcpt_options=()):
        if isinstance(msg, str):
            msg = smtplib._fix_eols(msg).encode("ascii")
        CapturingSMTP.captured = msg
        return super().sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)


def cmd_smtplib(a):
    s = CapturingSMTP("127.0.0.1", a.port, local_hostname="python.interop.test", timeout=30)
    try:
        if a.kind == "sendmail":
            body = (
                "From: Python <py@interop.test>\r\n"
                "To: one@interop.test, two@interop.test\r\n"
                "Cc: three@interop.test\r\n"
                "Subject: smtplib sendmail to several recipients\r\n"
                "Message-ID: <smtplib-sendmail@interop.test>\r\n"
                "Date: Sun, 01 Mar 2026 10:00:00 +0100\r\n"
                "\r\n"
                "A line.\r\n"
                ".A line that starts with a dot.\r\n"
                ".\r\n"
                "..\r\n"
                "Trailing spaces kept   \r\n"
                "\r\n"
                "Last line.\r\n").encode()
            refused = s.sendmail(a.sender, a.rcpt, body)
            if refused:
                problem("refused recipients: %r" % refused)
        else:
            from email.message import EmailMessage
            msg = EmailMessage()
            msg["From"] = "Jörg Ünïcode <%s>" % a.sender
            msg["To"] = ", ".join(a.rcpt)
            msg["Subject"] = "SMTPUTF8: grüße, 你好"
            msg["Message-ID"] = "<smtputf8@interop.test>"
            msg["Date"] = "Sun, 01 Mar 2026 10:00:00 +0100"
            msg.set_content("Grüße aus Köln.\n.ein Punkt am Anfang\n")
            # send_message adds SMTPUTF8 and BODY=8BITMIME itself for a
            # non-ASCII address; passing SMTPUTF8 in mail_options as well
            # would send it twice, which SPEC refuses (501 5.5.4).
            refused = s.send_message(msg, a.sender, a.rcpt)
            if refused:
                problem("refused recipients: %r" % refused)
        s.quit()
    except Exception as e:
        problem("smtplib %s failed: %r" % (a.kind, e))
        finish()
    with open(a.out, "wb") as f:
        f.write(CapturingSMTP.captured)
    finish()


def cmd_pymailbox(a):
    count = 0
    for root in a.maildirs:
        md = mailbox.Maildir(root, factory=None, create=False)
        keys = list(md.keys())
        for key in keys:
            with md.get_file(key) as f:
                msg = email.message_from_binary_file(f, policy=email.policy.default)
            where = "%s/%s" % (root, key)
            if msg.defects:
                problem("%s: defects %r" % (where, msg.defects))
            for part in msg.walk():
                if part is not msg and part.defects:
                    problem("%s: part defects %r" % (where, part.defects))
            for (name, raw), value in zip(msg.raw_items(), msg.values()):
                # Raw UTF-8 headers (SMTPUTF8 mail) always carry defects in
                # Python's parser; judge only ASCII ones.
                if raw.isascii() and getattr(value, "defects", None):
                    problem("%s: header %s defects %r" % (where, name, value.defects))
            if msg.get("Return-Path") is None or msg.get("Received") is None:
                problem("%s: Return-Path or Received not parsed" % where)
            # the body must be readable too
            body = msg.get_body(("plain", "html"))
            if body is not None:
                body.get_content()
            # mailbox's own message class agrees on the headers
            mm = md.get_message(key)
            rp = msg.get("Return-Path")
            if str(rp).isascii() and mm.get("Return-Path") != rp:
                problem("%s: mailbox.MaildirMessage disagrees on Return-Path" % where)
            count += 1
    finish(count)


def cmd_dovecot(a):
    with open(a.json, "rb") as f:
        raw = f.read()
    try:
        rows = json.loads(raw.decode("utf-8", "surrogateescape"))
    except Exception as e:
        problem("doveadm output is not JSON: %r: %r" % (e, raw[:200]))
        finish()
    files = {}
    for path in maildir_files(a.maildir):
        files[os.path.basename(path).split(":2,")[0]] = path
    if len(rows) != len(files):
        problem("doveadm lists %d messages, the Maildir has %d files" % (len(rows), len(files)))
    for row in rows:
        guid = row.get("guid", "")
        path = files.get(guid)
        if path is None:
            problem("doveadm guid %r matches no file" % guid)
            continue
        with open(path, "rb") as f:
            data = f.read()
        m = re.search(r",S=(\d+)", guid)
        phys = int(row.get("size.physical", -1))
        virt = int(row.get("size.virtual", -1))
        if not m or phys != int(m.group(1)) or phys != len(data):
            problem("%s: doveadm size.physical %d, name says %s, file has %d"
                    % (guid, phys, m and m.group(1), len(data)))
        if virt != len(data) + data.count(b"\n") - data.count(b"\r\n"):
            problem("%s: doveadm size.virtual %d, expected %d" % (guid, virt, len(data) + data.count(b"\n")))
        text = row.get("text", "").encode("utf-8", "surrogateescape")
        if lf(text) != data:
            problem("%s: doveadm text differs from the file\n%s" % (guid, diff(data, lf(text))))
    finish(len(rows))


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    v = sp.add_parser("verify")
    v.add_argument("--maildir", required=True)
    v.add_argument("--count", type=int, required=True)
    v.add_argument("--sender", required=True)
    v.add_argument("--rcpt", action="append", default=[])
    v.add_argument("--expect", action="append")
    v.add_argument("--mode", choices=["exact", "suffix", "none"], default="exact")
    v.add_argument("--contains", action="append")
    v.add_argument("--helo")
    v.add_argument("--hostname")
    v.add_argument("--proto")
    v.add_argument("--tls", action="store_true", help="Received must say (using TLSv1.x with cipher ...)")
    v.add_argument("--unique-ids", action="store_true")
    v.set_defaults(fn=cmd_verify)
    s = sp.add_parser("swaks-data")
    s.add_argument("transcript")
    s.add_argument("out")
    s.set_defaults(fn=cmd_swaks_data)
    t = sp.add_parser("attachment")
    t.add_argument("maildir")
    t.add_argument("file")
    t.set_defaults(fn=cmd_attachment)
    p = sp.add_parser("smtplib")
    p.add_argument("kind", choices=["sendmail", "utf8"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sender", required=True)
    p.add_argument("--rcpt", action="append", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_smtplib)
    m = sp.add_parser("pymailbox")
    m.add_argument("maildirs", nargs="+")
    m.set_defaults(fn=cmd_pymailbox)
    d = sp.add_parser("dovecot")
    d.add_argument("maildir")
    d.add_argument("json")
    d.set_defaults(fn=cmd_dovecot)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
