#!/usr/bin/env python3
"""Load for scripts/cluster: COUNT messages through HOST:PORT from THREADS
threads, a few per SMTP session, each attempt with its own Message-ID
<RUN.SEQ.ATTEMPT@cluster.test> and a body checksum header. A message whose
attempt fails before the 250 (reset, timeout, 4xx) is retried on a new
connection under a new Message-ID, as a client would retry elsewhere.

Writes OUT/acked (one Message-ID per 250, flushed at once, so the caller
can follow progress with wc -l) and OUT/failed (Message-ID and reason of
every attempt that got no 250). Exit 0 when every message was acknowledged.
"""
import hashlib
import os
import random
import smtplib
import sys
import threading
import time

HOST, PORT, COUNT, THREADS, OUT, RUN = sys.argv[1:7]
PORT, COUNT, THREADS = int(PORT), int(COUNT), int(THREADS)
PER_SESSION = 5
MAX_ATTEMPTS = 50

lock = threading.Lock()
next_seq = 0
acked = open(os.path.join(OUT, "acked"), "a", buffering=1)
failed = open(os.path.join(OUT, "failed"), "a", buffering=1)
gave_up = []


def take():
    global next_seq
    with lock:
        if next_seq >= COUNT:
            return None
        next_seq += 1
        return next_seq


def message(msgid, rng):
    # Lines of 76 characters, 1 to 16 KiB in all.
    lines = []
    for _ in range(rng.randint(14, 215)):
        lines.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(76)))
    body = "\r\n".join(lines) + "\r\n"
    digest = hashlib.sha256(body.encode()).hexdigest()
    head = (
        f"From: load@cluster.test\r\nTo: sink@cluster.test\r\n"
        f"Subject: cluster {msgid}\r\nMessage-ID: {msgid}\r\n"
        f"X-Body-SHA256: {digest}\r\n\r\n"
    )
    return head + body


def worker(n):
    rng = random.Random(n)
    smtp = None
    sent = 0
    seq = take()
    attempt = 0
    while seq is not None:
        attempt += 1
        msgid = f"<{RUN}.{seq}.{attempt}@cluster.test>"
        try:
            if smtp is None:
                smtp = smtplib.SMTP(HOST, PORT, timeout=15)
                smtp.ehlo("load.cluster.test")
                sent = 0
            smtp.sendmail("load@cluster.test", ["sink@cluster.test"], message(msgid, rng))
            acked.write(msgid + "\n")
            sent += 1
            seq, attempt = take(), 0
            if sent >= PER_SESSION:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    pass
                smtp = None
        except (smtplib.SMTPException, OSError) as e:
            failed.write(f"{msgid} {type(e).__name__}: {str(e)[:80]!r}\n")
            try:
                if smtp is not None:
                    smtp.close()
            except OSError:
                pass
            smtp = None
            if attempt >= MAX_ATTEMPTS:
                gave_up.append(seq)
                seq, attempt = take(), 0
            else:
                time.sleep(0.05 * attempt)
    if smtp is not None:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass


threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if gave_up:
    print(f"load: gave up on {len(gave_up)} messages", file=sys.stderr)
    sys.exit(1)
