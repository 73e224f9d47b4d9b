#!/usr/bin/env python3
"""smtplib over TLS with AUTH, as applications do it (issue 9).

    tls_auth.py starttls|ssl --port N --user U --password P --out FILE

starttls: SMTP() + starttls() + login(); ssl: SMTP_SSL() + login(). The
certificate is not verified (a sink's self-signed one). Writes the message
bytes as sent to FILE (LF line ends, as mailsink stores them)."""
import argparse
import smtplib
import ssl
import sys
from email.message import EmailMessage

ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["starttls", "ssl"])
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--user", required=True)
ap.add_argument("--password", required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

msg = EmailMessage()
msg["From"] = "Python <py@interop.test>"
msg["To"] = "rcpt@interop.test"
msg["Subject"] = "smtplib %s with login" % a.mode
msg["Message-ID"] = "<smtplib-%s@interop.test>" % a.mode
msg["Date"] = "Sun, 01 Mar 2026 10:00:00 +0100"
msg.set_content("Sent over TLS after AUTH.\n.a dot first\n")
from email import policy
data = msg.as_bytes(policy=policy.SMTP)  # CRLF, as smtplib expects bytes

try:
    if a.mode == "starttls":
        s = smtplib.SMTP("127.0.0.1", a.port, local_hostname="python.interop.test", timeout=30)
        s.starttls(context=ctx)
    else:
        s = smtplib.SMTP_SSL("127.0.0.1", a.port, local_hostname="python.interop.test",
                             timeout=30, context=ctx)
    s.login(a.user, a.password)
    refused = s.sendmail("sender@interop.test", ["rcpt@interop.test"], data)
    s.quit()
except Exception as e:  # the script's output is the interop transcript
    print("smtplib %s failed: %r" % (a.mode, e), file=sys.stderr)
    sys.exit(1)
if refused:
    print("refused: %r" % refused, file=sys.stderr)
    sys.exit(1)
with open(a.out, "wb") as f:
    f.write(data.replace(b"\r\n", b"\n"))
