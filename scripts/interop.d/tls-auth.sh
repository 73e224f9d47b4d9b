# scripts/interop.d/tls-auth.sh: real clients over TLS (STARTTLS and
# implicit) with AUTH PLAIN and LOGIN against mailsink, each message checked
# as stored (Received with "(using TLSv1.x with cipher ...)" and ESMTPSA).
# Sourced by scripts/interop, which provides begin/end/client/verify/fail/ok.
#
#   swaks --tls / --tlsc with --auth PLAIN|LOGIN; curl --ssl-reqd smtp:// and
#   smtps:// with --user; Python smtplib starttls()+login() and SMTP_SSL;
#   msmtp --tls=on with and without --tls-starttls=off; openssl s_client
#   -starttls smtp; the private Postfix relay with smtp_tls_security_level =
#   encrypt and SASL. The password file is made by `htpasswd -B`; the
#   certificates by openssl (PKCS#1 RSA and SEC1 EC keys) or --tls-self-signed.
#   Last: the password appears in nothing mailsink wrote.

TA_USER=alice
TA_PW='Interop-s3cret-9'
TA_NAMES=()

ta_have() {
    case "$1" in
        openssl|htpasswd) command -v "$1" >/dev/null 2>&1 ;;
        sasl) ls /usr/lib/*/sasl2/libplain.so* >/dev/null 2>&1 || ls /usr/lib/sasl2/libplain.so* >/dev/null 2>&1 ;;
        *) have "$1" ;;
    esac
}

ta_install() {
    local pkgs=()
    ta_have openssl || pkgs+=(openssl)
    ta_have htpasswd || pkgs+=(apache2-utils)
    ta_have sasl || pkgs+=(libsasl2-modules) # PLAIN/LOGIN for Postfix's SMTP client
    [ ${#pkgs[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "interop: missing ${pkgs[*]} and cannot apt-get install them here" >&2
        return 0
    fi
    echo "interop: installing ${pkgs[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends "${pkgs[@]}" >"$WORK/log/apt-install-tls.log" 2>&1 \
        || tail -n 20 "$WORK/log/apt-install-tls.log" >&2
}

# The --tls-listen port of the running sink.
ta_tls_port() {
    grep -aoE 'listening on 127\.0\.0\.1:[0-9]+ \(TLS\)' "$SINK_LOG" | tail -n 1 | sed -E 's/.*:([0-9]+) \(TLS\)/\1/'
}

# ta_begin NAME TOOL...: a sink with TLS (self-signed), --tls-listen and the
# htpasswd file, unless TA_OPTS says otherwise.
ta_begin() {
    local name=$1
    shift
    TA_NAMES+=("$name")
    SINK_OPTS=("${TA_OPTS[@]}")
    begin "$name" "$@" || { SINK_OPTS=(); return 1; }
    SINK_OPTS=()
    TLS_PORT=$(ta_tls_port)
    return 0
}

# ta_verify NAME HELO EXPECT [verify options...]
ta_verify() {
    local name=$1 helo=$2 expect=$3
    shift 3
    verify "$name" --maildir "$MD" --count 1 --sender "$FROM" --rcpt rcpt@interop.test \
        --expect "$expect" --helo "$helo" --hostname "$SINK_HOST" --proto ESMTPSA --tls "$@"
}

ta_swaks() { # NAME TLS-FLAG MECHANISM
    local name=$1 flag=$2 mech=$3 port
    ta_begin "$name" swaks || return
    port=$SINK_PORT
    [ "$flag" = --tlsc ] && port=$TLS_PORT
    ta_swaks_send "$name" "$port" "$mech" "$flag"
}

# ta_swaks_send NAME PORT MECHANISM [swaks TLS options...]: one message
# through the running sink, then stop it and check the stored copy.
ta_swaks_send() {
    local name=$1 port=$2 mech=$3
    shift 3
    if client "$name" "$WORK/log/$name.swaks" swaks --server "127.0.0.1:$port" "$@" \
            --auth "$mech" --auth-user "$TA_USER" --auth-password "$TA_PW" --helo swaks.interop.test \
            --timeout 30 -f "$FROM" -t rcpt@interop.test --data "@$WORK/msg/swaks.eml"; then
        end || return
        ta_swaks_verify "$name"
    else
        stop_sink
    fi
}

# swaks adds a line end of its own before the final dot: compare with the
# DATA its transcript shows.
ta_swaks_verify() {
    local name=$1
    if python3 "$CHECK" swaks-data "$WORK/log/$name.swaks" "$WORK/msg/$name.sent" \
            >"$WORK/log/$name.extract" 2>&1; then
        ta_verify "$name" swaks.interop.test "$WORK/msg/$name.sent"
    else
        fail "$name" "could not read the DATA from the swaks transcript" "$(cat "$WORK/log/$name.extract")"
    fi
}

ta_curl() { # NAME smtp|smtps
    local name=$1 scheme=$2 port
    ta_begin "$name" curl || return
    port=$SINK_PORT
    [ "$scheme" = smtps ] && port=$TLS_PORT
    if client "$name" "$WORK/log/$name.curl" curl -sS --max-time 60 --ssl-reqd -k \
            "$scheme://127.0.0.1:$port/curl.interop.test" --user "$TA_USER:$TA_PW" \
            --mail-from "$FROM" --mail-rcpt rcpt@interop.test --upload-file "$WORK/msg/curl-crlf.eml"; then
        end || return
        ta_verify "$name" curl.interop.test "$WORK/msg/curl-crlf.eml"
    else
        stop_sink
    fi
}

ta_smtplib() { # NAME starttls|ssl
    local name=$1 mode=$2 port
    ta_begin "$name" python3 || return
    port=$SINK_PORT
    [ "$mode" = ssl ] && port=$TLS_PORT
    if client "$name" "$WORK/log/$name.py" python3 "$HERE/interop.d/tls_auth.py" "$mode" \
            --port "$port" --user "$TA_USER" --password "$TA_PW" --out "$WORK/msg/$name.sent"; then
        end || return
        verify "$name" --maildir "$MD" --count 1 --sender sender@interop.test --rcpt rcpt@interop.test \
            --expect "$WORK/msg/$name.sent" --helo python.interop.test --hostname "$SINK_HOST" \
            --proto ESMTPSA --tls
    else
        stop_sink
    fi
}

ta_msmtp() { # NAME on|off(starttls) plain|login
    local name=$1 starttls=$2 mech=$3 port msg="$WORK/msg/msmtp-tls.eml"
    ta_begin "$name" msmtp || return
    port=$SINK_PORT
    [ "$starttls" = off ] && port=$TLS_PORT
    printf '%s\n' "From: <$FROM>" "To: rcpt@interop.test" "Subject: msmtp over TLS" \
        "Date: Sun, 01 Mar 2026 10:00:00 +0100" "Message-ID: <msmtp-tls@interop.test>" "" \
        "Body." ".a dot first" "end" >"$msg"
    : >"$WORK/msmtprc"
    chmod 600 "$WORK/msmtprc"
    if client "$name" "$WORK/log/$name.msmtp" sh -c 'exec msmtp -C "$1" --host=127.0.0.1 --port="$2" \
            --from="$3" --auth="$4" --user="$5" --passwordeval="printf %s $8" \
            --tls=on --tls-starttls="$6" --tls-certcheck=off --domain=msmtp.interop.test \
            rcpt@interop.test <"$7"' sh "$WORK/msmtprc" "$port" "$FROM" "$mech" "$TA_USER" \
            "$starttls" "$msg" "$TA_PW"; then
        end || return
        ta_verify "$name" msmtp.interop.test "$msg"
    else
        stop_sink
    fi
}

ta_openssl() {
    local name=openssl-starttls msg="$WORK/msg/openssl.eml" plain
    ta_begin "$name" openssl || return
    printf '%s\n' "From: <$FROM>" "To: rcpt@interop.test" "Subject: typed through openssl s_client" \
        "" "Hello over STARTTLS." ".a dot first" "end" >"$msg"
    plain=$(printf '\0%s\0%s' "$TA_USER" "$TA_PW" | base64 -w0)
    {
        sleep 1
        printf 'EHLO openssl.interop.test\r\n'; sleep 0.3
        printf 'AUTH PLAIN %s\r\n' "$plain"; sleep 0.5
        printf 'MAIL FROM:<%s>\r\nRCPT TO:<rcpt@interop.test>\r\n' "$FROM"; sleep 0.3
        printf 'DATA\r\n'; sleep 0.3
        sed -e 's/^\./../' -e 's/$/\r/' "$msg"
        printf '.\r\n'; sleep 0.5
        printf 'QUIT\r\n'; sleep 0.5
    } | timeout 30 openssl s_client -starttls smtp -connect "127.0.0.1:$SINK_PORT" -quiet \
        -nocommands -servername localhost >"$WORK/log/$name.transcript" 2>&1
    end || return
    if ! grep -q '^235 2\.7\.0' "$WORK/log/$name.transcript" \
            || ! grep -q '^250 2\.0\.0 Ok: queued' "$WORK/log/$name.transcript"; then
        fail "$name" "unexpected replies" "$(cat "$WORK/log/$name.transcript")"
        return
    fi
    ta_verify "$name" openssl.interop.test "$msg"
}

# Certificates made by openssl: an RSA key in PKCS#1 and an EC key in SEC1.
ta_cert_files() { # NAME KEYKIND
    local name=$1 kind=$2 dir="$WORK/tls/$1"
    mkdir -p "$dir"
    case "$kind" in
        pkcs1) openssl genrsa -traditional -out "$dir/key.pem" 2048 ;;
        sec1) openssl ecparam -name prime256v1 -genkey -noout -out "$dir/key.pem" ;;
    esac >"$WORK/log/$name.openssl" 2>&1 || return 1
    openssl req -x509 -new -key "$dir/key.pem" -subj "/CN=$SINK_HOST" -days 2 \
        -addext "subjectAltName=DNS:$SINK_HOST,IP:127.0.0.1" -out "$dir/cert.pem" \
        >>"$WORK/log/$name.openssl" 2>&1
}

ta_cert() { # NAME KEYKIND: swaks verifies the chain against the file
    local name=$1 kind=$2 dir="$WORK/tls/$1"
    ta_have openssl || { skip "$name" "openssl is not installed"; return; }
    if ! ta_cert_files "$name" "$kind"; then
        fail "$name" "openssl could not make the certificate" "$(cat "$WORK/log/$name.openssl")"
        return
    fi
    local keep=("${TA_OPTS[@]}")
    TA_OPTS=(--tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" --auth-any)
    ta_begin "$name" swaks || { TA_OPTS=("${keep[@]}"); return; }
    TA_OPTS=("${keep[@]}")
    if ! grep -q "BEGIN $([ "$kind" = pkcs1 ] && echo RSA || echo EC) PRIVATE KEY" "$dir/key.pem"; then
        stop_sink; fail "$name" "openssl did not write a $kind key"; return
    fi
    ta_swaks_send "$name" "$SINK_PORT" PLAIN --tls \
        --tls-verify --tls-ca-path "$dir/cert.pem" --tls-sni "$SINK_HOST"
}

ta_postfix() {
    local name=postfix-relay-tls-sasl pf="$WORK/postfix"
    if [ "$(id -u)" -ne 0 ]; then skip "$name" "needs root to run a private Postfix instance"; return; fi
    ta_have sasl || { skip "$name" "libsasl2-modules is not installed"; return; }
    ta_begin "$name" postfix || return
    if ! pf_setup "$SINK_PORT"; then
        stop_sink
        fail "$name" "private Postfix instance did not start" \
            "$(cat "$WORK/log/postfix-check.log" "$WORK/log/postfix-start.log" 2>/dev/null | tail -n 30)"
        return
    fi
    # TLS is required (tlsmgr feeds the TLS engine), and the relay logs in
    # with SASL (a static map).
    echo "tlsmgr    unix  -       -       n       1000?   1       tlsmgr" >>"$PF_CONF/master.cf"
    postconf -c "$PF_CONF" -e "smtp_tls_security_level = encrypt" \
        "smtp_sasl_auth_enable = yes" "smtp_sasl_password_maps = static:$TA_USER:$TA_PW" \
        "smtp_sasl_security_options = noanonymous" "smtp_sasl_tls_security_options = noanonymous" \
        "smtp_sasl_mechanism_filter = plain, login"
    postfix -c "$PF_CONF" reload >>"$WORK/log/postfix-start.log" 2>&1
    pf_message relay-tls "$WORK/msg/relay-tls.eml"
    local why=""
    if ! pf_submit relay-tls "$WORK/msg/relay-tls.eml" rcpt@interop.test; then
        why="sendmail -C $PF_CONF failed"
    elif ! wait_for 30 has_files "$MD" 1 || ! wait_for 10 pf_queue_empty; then
        why="not delivered within 30 s"
    fi
    postfix -c "$PF_CONF" stop >/dev/null 2>&1
    if [ -n "$why" ]; then
        stop_sink
        fail "$name" "$why" "$(postqueue -c "$PF_CONF" -p 2>&1; tail -n 15 "$pf/maillog")"
        return
    fi
    end || return
    ta_verify "$name" relay.interop.test "$WORK/msg/relay-tls.eml" --mode suffix
}

# Nothing mailsink wrote holds the password, plain or base64.
ta_password_check() {
    local name=password-never-written files=() n total=0 found=""
    for n in "${TA_NAMES[@]}"; do
        files+=("$WORK"/log/"$n".mailsink.*.log)
        [ -d "$WORK/md/$n" ] && { files+=("$WORK/md/$n"); total=$((total + $(count_files "$WORK/md/$n"))); }
    done
    if [ ${#TA_NAMES[@]} -eq 0 ]; then
        skip "$name" "no TLS/AUTH check ran"
        return
    fi
    for n in "$TA_PW" "$(printf %s "$TA_PW" | base64 -w0)" \
            "$(printf '\0%s\0%s' "$TA_USER" "$TA_PW" | base64 -w0)"; do
        if grep -rqF -- "$n" "${files[@]}" 2>/dev/null; then
            found+="$n in: $(grep -rlF -- "$n" "${files[@]}" 2>/dev/null | tr '\n' ' ')"$'\n'
        fi
    done
    if [ -n "$found" ]; then fail "$name" "the password was written" "$found"; else ok "$name" "$total"; fi
}

tls_auth_checks() {
    ta_install
    if ! ta_have htpasswd; then
        skip tls-auth "htpasswd (apache2-utils) is not installed"
        return
    fi
    mkdir -p "$WORK/tls"
    htpasswd -B -b -c "$WORK/tls/users" "$TA_USER" "$TA_PW" >"$WORK/log/htpasswd.log" 2>&1
    TA_OPTS=(--tls-self-signed --tls-listen 127.0.0.1:0 --auth-file "$WORK/tls/users")
    ta_swaks swaks-starttls-plain --tls PLAIN
    ta_swaks swaks-starttls-login --tls LOGIN
    ta_swaks swaks-tlsc-login --tlsc LOGIN
    ta_swaks swaks-tlsc-plain --tlsc PLAIN
    ta_curl curl-ssl-reqd smtp
    ta_curl curl-smtps smtps
    ta_smtplib smtplib-starttls-login starttls
    ta_smtplib smtplib-ssl-login ssl
    ta_msmtp msmtp-starttls on plain
    ta_msmtp msmtp-implicit-tls off login
    ta_openssl
    ta_cert tls-cert-pkcs1 pkcs1
    ta_cert tls-cert-sec1 sec1
    ta_postfix
    ta_password_check
}
