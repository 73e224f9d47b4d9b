"""pytest with mailsink as the mail sink: a fixture starts it on port 0 with
--events, a test sends with smtplib and reads the line that the 250 promises.

    MAILSINK=path/to/mailsink python3 -m pytest contrib/ci/test_mailsink.py
"""
import json
import os
import re
import signal
import smtplib
import subprocess
import time

import pytest

MAILSINK = os.environ.get("MAILSINK", "mailsink")


class Sink:
    def __init__(self, tmp_path, *args):
        self.events = tmp_path / "events.jsonl"
        self.maildir = tmp_path / "Maildir"
        self.proc = subprocess.Popen(
            [MAILSINK, "--listen", "127.0.0.1:0", "--maildir", str(self.maildir),
             "--events", str(self.events), *args],
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        for line in self.proc.stderr:  # the log: wait for the bound port
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
            assert time.monotonic() < deadline, "mailsink did not start"
        raise RuntimeError("mailsink exited at start")

    def lines(self, event=None):
        with open(self.events) as f:
            all = [json.loads(line) for line in f]
        return [e for e in all if event is None or e["event"] == event]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


@pytest.fixture
def sink(tmp_path):
    s = Sink(tmp_path, "--fail", "data:nth 1=451 4.3.0 Try again")
    yield s
    assert s.stop() == 0


def send(port, to, subject):
    smtp = smtplib.SMTP("127.0.0.1", port)
    try:
        smtp.sendmail("app@app.test", [to], f"Subject: {subject}\r\n\r\nHello\r\n")
    finally:
        smtp.close()  # no QUIT: after --exit-after's last message it would get 421


def test_the_first_attempt_fails_and_the_retry_is_stored(sink):
    # What an application's retry logic must handle: a temporary failure.
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(sink.port, "user@example.test", "Reset your password")
    assert e.value.smtp_code == 451
    send(sink.port, "user@example.test", "Reset your password")
    # No sleep: the line is written before the 250 is sent.
    [stored] = sink.lines("stored")
    assert stored["to"] == ["user@example.test"]
    assert stored["subject"] == "Reset your password"
    assert (sink.maildir / stored["files"][0]).is_file()
    [refused] = sink.lines("refused")
    assert (refused["stage"], refused["reply"]) == ("data", "451 4.3.0 Try again")


def test_exit_after_ends_the_run(tmp_path):
    s = Sink(tmp_path, "--exit-after", "1")
    send(s.port, "a@example.test", "only one")
    assert s.proc.wait(timeout=10) == 0  # stopped by itself, as at SIGTERM
    assert len(s.lines("stored")) == 1
