#!/usr/bin/env python3
"""Counts for scripts/cluster: what load.py was acknowledged (OUT/acked)
against what is in MAILDIR/new, by Message-ID of this RUN. Every file in
new/ must be whole: its body matches its X-Body-SHA256 header.

Prints one line of counts and per-instance totals (the "by" host of the
Received header); exit 1 if anything acknowledged is missing, any id is
stored twice, or any file is partial.
"""
import collections
import email.parser
import hashlib
import os
import re
import sys

MAILDIR, OUT, RUN = sys.argv[1:4]
acked = [l.strip() for l in open(os.path.join(OUT, "acked")) if l.strip()]
failed = [l.split()[0] for l in open(os.path.join(OUT, "failed")) if l.strip()]
ours = re.compile(r"^<" + re.escape(RUN) + r"\.\d+\.\d+@cluster\.test>$")

stored = collections.Counter()
by_host = collections.Counter()
partial = []
other = 0
new = os.path.join(MAILDIR, "new")
for name in os.listdir(new):
    raw = open(os.path.join(new, name), "rb").read()
    head, sep, body = raw.partition(b"\n\n")
    msg = email.parser.BytesHeaderParser().parsebytes(head + b"\n\n")
    mid = (msg.get("Message-ID") or "").strip()
    if not ours.match(mid):
        other += 1
        continue
    stored[mid] += 1
    want = msg.get("X-Body-SHA256", "")
    # Stored with LF line ends; the checksum is over the CRLF text sent.
    got = hashlib.sha256(body.replace(b"\n", b"\r\n")).hexdigest()
    if not sep or got != want:
        partial.append(name)
    m = re.search(r"by (\S+) \(mailsink\)", msg.get("Received", ""))
    by_host[m.group(1) if m else "?"] += 1

acked_set = set(acked)
lost = sorted(acked_set - set(stored))
duplicated = sorted(m for m, n in stored.items() if n > 1)
unacked = sorted(set(stored) - acked_set)
unexplained = [m for m in unacked if m not in set(failed)]
tmp = len(os.listdir(os.path.join(MAILDIR, "tmp")))
print(
    f"acknowledged {len(acked)}, stored {sum(stored.values())}, duplicated {len(duplicated)}, "
    f"lost {len(lost)}, partial {len(partial)}; stored without a 250 {len(unacked)} "
    f"(each an attempt whose client saw its connection fail), attempts without a 250 {len(failed)}, "
    f"tmp/ leftovers {tmp}, other files {other}"
)
print("per instance: " + ", ".join(f"{h} {n}" for h, n in sorted(by_host.items())))
bad = False
for label, items in [("lost", lost), ("duplicated", duplicated), ("partial", partial),
                     ("stored without a 250 and no failed attempt", unexplained),
                     ("acknowledged twice", [m for m, n in collections.Counter(acked).items() if n > 1])]:
    if items:
        bad = True
        print(f"FAIL {label}: {items[:5]}", file=sys.stderr)
sys.exit(1 if bad else 0)
