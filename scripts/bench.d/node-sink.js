#!/usr/bin/env node
// Peer for scripts/bench: nodemailer's smtp-server storing each accepted
// message in a Maildir the way mailsink's SPEC asks: a file created in tmp/
// (O_EXCL, mode 0600), every write checked, fsync, close, link into new/
// (never replacing), unlink the tmp name, fsync new/, and only then 250.
// Stored files use LF line endings and get Return-Path, Delivered-To and
// Received headers, so the work per message is close to mailsink's.
//
// usage: node node-sink.js --listen 127.0.0.1:0 --maildir DIR [--max-size BYTES]
//                          [--tls-key FILE --tls-cert FILE]   (STARTTLS, issue 9)
// Logs "listening on 127.0.0.1:PORT" to stderr; on SIGTERM/SIGINT it stops
// accepting, logs "shutdown: stored N messages, M fsyncs" and exits 0.
'use strict';

const fs = require('fs');
const fsp = fs.promises;
const os = require('os');
const path = require('path');
const crypto = require('crypto');
const { SMTPServer } = require('smtp-server');

function parseArgs(argv) {
    const opts = { listen: '127.0.0.1:0', maildir: './Maildir', maxSize: 26214400 };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const v = argv[i + 1];
        if (a === '--listen') { opts.listen = v; i++; }
        else if (a === '--maildir') { opts.maildir = v; i++; }
        else if (a === '--max-size') { opts.maxSize = Number(v); i++; }
        else if (a === '--tls-key') { opts.tlsKey = v; i++; }
        else if (a === '--tls-cert') { opts.tlsCert = v; i++; }
        else { process.stderr.write(`node-sink: unknown argument ${a}\n`); process.exit(2); }
    }
    return opts;
}

const opts = parseArgs(process.argv.slice(2));
const maildir = path.resolve(opts.maildir);
for (const sub of ['tmp', 'new', 'cur']) {
    fs.mkdirSync(path.join(maildir, sub), { recursive: true, mode: 0o700 });
}
const hostname = os.hostname().replace(/\//g, '\\057').replace(/:/g, '\\072').replace(/,/g, '\\054');
const newDir = path.join(maildir, 'new');
let seq = 0;
let stored = 0;
let fsyncs = 0;

function rfc5322Date(d) {
    const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
    const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
    const p = (n) => String(n).padStart(2, '0');
    return `${days[d.getUTCDay()]}, ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
        `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

// CRLF -> LF across chunk boundaries: a trailing CR is held back until the
// next chunk shows whether an LF follows it.
function makeCrlfToLf() {
    let heldCr = false;
    return {
        push(buf) {
            let s = buf.toString('latin1');
            if (heldCr) { s = '\r' + s; heldCr = false; }
            if (s.endsWith('\r')) { heldCr = true; s = s.slice(0, -1); }
            return Buffer.from(s.replace(/\r\n/g, '\n'), 'latin1');
        },
        end() {
            return heldCr ? Buffer.from('\r', 'latin1') : Buffer.alloc(0);
        },
    };
}

async function writeAll(fh, buf) {
    let off = 0;
    while (off < buf.length) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off);
        if (bytesWritten <= 0) throw new Error('short write');
        off += bytesWritten;
    }
}

async function fsyncDir(dir) {
    const dh = await fsp.open(dir, 'r');
    try { await dh.sync(); fsyncs++; } finally { await dh.close(); }
}

async function store(stream, session) {
    const now = new Date();
    const ms = now.getTime();
    const secs = Math.floor(ms / 1000);
    const usec = (ms % 1000) * 1000;
    seq++;
    const queueId = `${secs.toString(16).toUpperCase()}${process.pid.toString(16)}${seq.toString(16)}`;
    const base = `${secs}.M${usec}P${process.pid}Q${seq}R${crypto.randomBytes(8).toString('hex')}.${hostname}`;
    const tmpPath = path.join(maildir, 'tmp', base);
    const env = session.envelope;
    const sender = env.mailFrom && env.mailFrom.address ? env.mailFrom.address : '';
    const rcpts = env.rcptTo.map((r) => r.address);
    let head = `Return-Path: <${sender}>\n`;
    for (const r of rcpts) head += `Delivered-To: ${r}\n`;
    const helo = String(session.hostNameAppearsAs || '').replace(/[\x00-\x1f\x7f]/g, '?');
    head += `Received: from ${helo} (${session.remoteAddress})\n\tby ${os.hostname()} (node-sink) with ESMTP id ${queueId}` +
        (rcpts.length === 1 ? `\n\tfor <${rcpts[0]}>` : '') + `;\n\t${rfc5322Date(now)}\n`;

    const fh = await fsp.open(tmpPath, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    let size = 0;
    let ok = false;
    try {
        const conv = makeCrlfToLf();
        const hb = Buffer.from(head, 'utf8');
        await writeAll(fh, hb);
        size += hb.length;
        for await (const chunk of stream) {
            const out = conv.push(chunk);
            if (out.length) { await writeAll(fh, out); size += out.length; }
        }
        const tail = conv.end();
        if (tail.length) { await writeAll(fh, tail); size += tail.length; }
        if (stream.sizeExceeded) {
            const err = new Error('Error: message exceeds fixed maximum message size');
            err.responseCode = 552;
            throw err;
        }
        await fh.sync();
        fsyncs++;
        ok = true;
    } finally {
        await fh.close();
        if (!ok) await fsp.unlink(tmpPath).catch(() => {});
    }
    const finalPath = path.join(newDir, `${base},S=${size}`);
    try {
        await fsp.link(tmpPath, finalPath);
    } finally {
        await fsp.unlink(tmpPath).catch(() => {});
    }
    await fsyncDir(newDir);
    stored++;
    return queueId;
}

// With --tls-key/--tls-cert: STARTTLS offered (the TLS benchmark).
const tls = opts.tlsKey && opts.tlsCert
    ? { key: fs.readFileSync(opts.tlsKey), cert: fs.readFileSync(opts.tlsCert) }
    : {};
const server = new SMTPServer({
    ...tls,
    secure: false,
    authOptional: true,
    disabledCommands: opts.tlsKey ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    size: opts.maxSize,
    banner: 'node-sink',
    logger: false,
    onData(stream, session, callback) {
        store(stream, session).then(
            (id) => callback(null, `Ok: queued as ${id}`),
            (err) => {
                // drain whatever is left so the session stays in sync
                stream.resume();
                stream.on('end', () => {
                    if (!err.responseCode) err.responseCode = 451;
                    callback(err);
                });
                if (stream.readableEnded) stream.emit('end');
            },
        );
    },
});
server.on('error', (err) => process.stderr.write(`node-sink: ${err.message}\n`));

const idx = opts.listen.lastIndexOf(':');
const host = opts.listen.slice(0, idx);
const port = Number(opts.listen.slice(idx + 1));
server.listen(port, host, () => {
    const a = server.server.address();
    process.stderr.write(`node-sink: listening on ${a.address}:${a.port}\n`);
});

let stopping = false;
function shutdown() {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`node-sink: shutdown: stored ${stored} messages, ${fsyncs} fsyncs\n`);
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
