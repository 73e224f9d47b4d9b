# shellcheck shell=bash
# Sourced by scripts/interop (issue 8): Exim as a real BDAT client.
# Uses its helpers (begin, end, verify, fail, skip, stop_sink) and
# variables (WORK, FROM, SINK_PORT, SINK_HOST, MD).

# Exim's SMTP transport sends BDAT whenever CHUNKING is offered
# (hosts_try_chunking defaults to *). Its Debian package conflicts with
# Postfix's, so the binary is unpacked from the .deb into $WORK with
# apt-get download + dpkg -x and run from there with its own
# configuration: a manualroute router to 127.0.0.1 and the sink's port. The
# compiled-in user Debian-exim is supplied by nss_wrapper (unpacked the same
# way), so no system user is created; the unpacked exim loses its setuid
# bit so that LD_PRELOAD reaches the delivery process it re-executes.
EXIM=
setup_exim() {
    local dir="$WORK/exim" deb uid gid
    [ -n "$EXIM" ] && return 0
    { command -v apt-get && command -v dpkg; } >/dev/null 2>&1 || return 1
    mkdir -p "$dir/debs" "$dir/root"
    (cd "$dir/debs" && apt-get download exim4-daemon-light exim4-base libnss-wrapper) \
        >"$WORK/log/exim-download.log" 2>&1 || return 1
    for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root" || return 1; done
    [ -x "$dir/root/usr/sbin/exim4" ] || return 1
    NSS_WRAPPER_LIB=$(find "$dir/root" -name libnss_wrapper.so | head -n 1)
    [ -n "$NSS_WRAPPER_LIB" ] || return 1
    chmod u-s "$dir/root/usr/sbin/exim4"
    if [ "$(id -u)" -eq 0 ]; then uid=65534 gid=65534; else uid=$(id -u) gid=$(id -g); fi
    printf 'root:x:0:0:root:/root:/bin/sh\nDebian-exim:x:%s:%s:exim:/nonexistent:/usr/sbin/nologin\n' \
        "$uid" "$gid" >"$dir/passwd"
    printf 'root:x:0:\nDebian-exim:x:%s:\n' "$gid" >"$dir/group"
    EXIM="$dir/root/usr/sbin/exim4"
}

# exim_send LOG SENDER RCPT... < message: deliver one message at once
# (-odf), verbose, appending the SMTP dialogue to LOG.
exim_send() {
    local log=$1
    shift
    LD_PRELOAD="$NSS_WRAPPER_LIB" NSS_WRAPPER_PASSWD="$WORK/exim/passwd" \
        NSS_WRAPPER_GROUP="$WORK/exim/group" \
        timeout 60 "$EXIM" -C "$WORK/exim/exim.conf" -odf -oi -v -f "$@" >>"$log" 2>&1
}

# exim_message FILE SUBJECT LINES: a message with its own Date and
# Message-ID (so Exim adds only its Received header) and LINES body lines
# of random text with dot lines and command text at the end.
exim_message() {
    python3 - "$@" "$FROM" <<'PY'
import random, sys
path, subject, n, sender = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
random.seed(n)
lines = ["From: exim user <%s>" % sender, "To: one@interop.test, two@interop.test",
         "Subject: %s" % subject, "Date: Sun, 01 Mar 2026 10:00:00 +0100",
         "Message-ID: <exim-%d@interop.test>" % n, ""]
for _ in range(n):
    lines.append("".join(random.choice("abcdefghij. ") for _ in range(random.randint(0, 70))))
lines += [".", "..", ".x", "BDAT 5 LAST", "QUIT", "end"]
open(path, "w").write("\n".join(lines) + "\n")
PY
}

check_exim() {
    local name=exim
    if ! setup_exim; then
        skip "$name" "could not fetch and unpack exim4-daemon-light (apt-get download + dpkg -x)"
        return
    fi
    begin "$name" python3 || return
    local spool="$WORK/exim/spool" log="$WORK/log/$name.exim"
    local small="$WORK/msg/exim-small.eml" big="$WORK/msg/exim-big.eml"
    rm -rf "$spool"
    mkdir -p "$spool/log"
    [ "$(id -u)" -eq 0 ] && chown -R 65534:65534 "$spool"
    cat >"$WORK/exim/exim.conf" <<CONF
primary_hostname = exim.interop.test
exim_path = $EXIM
spool_directory = $spool
log_file_path = $spool/log/%slog
exim_user = Debian-exim
exim_group = Debian-exim
keep_environment = LD_PRELOAD : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP
log_selector = +all
begin routers
to_sink:
  driver = manualroute
  route_list = * 127.0.0.1
  self = send
  transport = to_sink
begin transports
to_sink:
  driver = smtp
  port = $SINK_PORT
  hosts_avoid_tls = *
begin retry
* * F,1m,1m
CONF
    # A small message goes in one chunk; about 700 kB goes as a chunk of
    # headers and a chunk of body.
    exim_message "$small" "exim sends BDAT" 3
    exim_message "$big" "exim sends a large message in chunks" 20000
    : >"$log"
    if ! exim_send "$log" "$FROM" one@interop.test two@interop.test <"$small" \
            || ! exim_send "$log" "$FROM" one@interop.test two@interop.test <"$big"; then
        stop_sink
        fail "$name" "exim failed" "$(tail -n 30 "$log")"
        return
    fi
    end || return
    # Proof that the client spoke CHUNKING: Exim's dialogue shows BDAT (the
    # last chunk of each message LAST), and its delivery lines carry K.
    local bdat last k
    bdat=$(grep -c 'SMTP+> BDAT [0-9]' "$log")
    last=$(grep -c 'SMTP+> BDAT [0-9]* LAST' "$log")
    k=$(grep -cE '^  => .* K C="250 2\.0\.0 Ok: queued as' "$log")
    if [ "$last" -ne 2 ] || [ "$bdat" -lt 3 ] || [ "$k" -ne 2 ]; then
        fail "$name" "Exim did not deliver both messages with BDAT ($bdat BDAT, $last LAST, $k K)" \
            "$(grep -E 'SMTP|=>|\*\*' "$log" | tail -n 40)"
        return
    fi
    verify "$name" --maildir "$MD" --count 2 --sender "$FROM" \
        --rcpt one@interop.test --rcpt two@interop.test --mode suffix --expect "$small" --expect "$big" \
        --helo exim.interop.test --hostname "$SINK_HOST" --proto ESMTP
}

