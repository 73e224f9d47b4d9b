#!/usr/bin/env python3
"""Counts for scripts/cluster: what load.py was acknowledged (OUT/acked)
against what is in MAILDIR/new, by Message-ID of this RUN. Every file in
new/ must be whole: its size is the S= of its name, and a load.py body
matches its X-Body-SHA256 header.

OUT/source-batches lists the smtp-source runs made during the kill, one
"PID EXIT-STATUS COUNT" line each; smtp-source's Message-Id starts with its
pid in hex. A run that exited 0 had every message acknowledged: all COUNT
must be stored, once. A run cut short by the kill may have stored fewer,
never one twice.

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

batches = {}
try:
    for line in open(os.path.join(OUT, "source-batches")):
        pid, rc, count = line.split()
        batches[format(int(pid), "04x")] = (int(rc), int(count))
except FileNotFoundError:
    pass
source_ids = collections.defaultdict(collections.Counter)
sized_wrong = []
source_sizes = collections.defaultdict(list)

stored = collections.Counter()
by_host = collections.Counter()
partial = []
other = 0
new = os.path.join(MAILDIR, "new")
for name in os.listdir(new):
    raw = open(os.path.join(new, name), "rb").read()
    size = re.search(r",S=(\d+)", name)
    if not size or int(size.group(1)) != len(raw):
        sized_wrong.append(name)
    head, sep, body = raw.partition(b"\n\n")
    msg = email.parser.BytesHeaderParser().parsebytes(head + b"\n\n")
    mid = (msg.get("Message-ID") or "").strip()
    batch = re.match(r"^<([0-9a-f]+)\.", mid)
    if batch and batch.group(1) in batches and "src2@" in (msg.get("Return-Path") or ""):
        source_ids[batch.group(1)][mid] += 1
        # Lines of a number and X's; every run's messages are one size.
        if not sep or not re.fullmatch(rb"(\d*X*\n)+", body):
            partial.append(name)
        source_sizes[len(body)].append(name)
        continue
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

if source_sizes:
    usual = max(source_sizes, key=lambda n: len(source_sizes[n]))
    partial += [name for n, names in source_sizes.items() if n != usual for name in names]
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
whole = [b for b, (rc, _) in batches.items() if rc == 0]
source_stored = sum(sum(c.values()) for c in source_ids.values())
source_lost = sum(batches[b][1] - sum(source_ids[b].values()) for b in whole)
source_dups = sum(1 for c in source_ids.values() for n in c.values() if n > 1)
if batches:
    print(
        f"smtp-source during the kill: {len(batches)} runs, {len(whole)} completed "
        f"({sum(batches[b][1] for b in whole)} messages acknowledged: lost {source_lost}), "
        f"{len(batches) - len(whole)} cut short by the kill; stored {source_stored}, duplicated {source_dups}"
    )
print("load.py per instance: " + ", ".join(f"{h} {n}" for h, n in sorted(by_host.items())))
bad = False
for label, items in [("lost", lost), ("duplicated", duplicated), ("partial", partial),
                     ("size not the S= of the name", sized_wrong),
                     ("smtp-source lost", [source_lost] if source_lost else []),
                     ("smtp-source duplicated", [source_dups] if source_dups else []),
                     ("stored without a 250 and no failed attempt", unexplained),
                     ("acknowledged twice", [m for m, n in collections.Counter(acked).items() if n > 1])]:
    if items:
        bad = True
        print(f"FAIL {label}: {items[:5]}", file=sys.stderr)
sys.exit(1 if bad else 0)
