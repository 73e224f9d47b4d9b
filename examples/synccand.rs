//! The sync candidates of issue 13, measured apart from SMTP: rounds of
//! `--batch` 1 KiB files written to DIR/tmp, made durable, moved into
//! DIR/new and new/ made durable, pipelined as mailsink's writer does (a
//! round syncs its own files and the moves of the round before). Prints
//! files/s and the p50/p99 round time.
//!
//!     cargo run --release --example synccand -- DIR STRATEGY [--batch 32] [--rounds 300] [--threads 4]
//!
//! STRATEGY: syncfs | fsync | fdatasync | fadvise (fadvise(DONTNEED) on
//! every file first, which starts their writeback, then fdatasync).
//! With --threads T > 1 the file syncs are spread over T threads.

use rustix::fs::{Advice, fadvise, fdatasync, syncfs};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: synccand DIR STRATEGY [--batch N] [--rounds N] [--threads N]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let strategy = args[2].clone();
    let opt = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let (batch, rounds, threads) = (
        opt("--batch", 32),
        opt("--rounds", 300),
        opt("--threads", 4),
    );
    for sub in ["tmp", "new"] {
        fs::create_dir_all(dir.join(sub)).expect("create the directories");
    }
    let new_dir = dir.join("new");
    let body = vec![b'x'; 1024];
    let mut last: Vec<PathBuf> = Vec::new();
    let mut times = Vec::with_capacity(rounds);
    let start = Instant::now();
    for round in 0..rounds {
        let t = Instant::now();
        let mut files = Vec::with_capacity(batch);
        for i in 0..batch {
            let path = dir.join(format!("tmp/{round}.{i}"));
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .expect("create a file");
            f.write_all(&body).expect("write");
            files.push((f, path));
        }
        for path in last.drain(..) {
            let name = path.file_name().expect("a name");
            fs::rename(&path, new_dir.join(name)).expect("rename");
        }
        sync(&strategy, threads, &files, &new_dir);
        last = files.into_iter().map(|(_, p)| p).collect();
        times.push(t.elapsed());
    }
    let total = start.elapsed();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{strategy} threads={threads} batch={batch}: {:.0} files/s, round p50 {:.2} ms p99 {:.2} ms",
        (batch * rounds) as f64 / total.as_secs_f64(),
        ms(times[times.len() / 2]),
        ms(times[times.len() * 99 / 100]),
    );
}

fn sync(strategy: &str, threads: usize, files: &[(File, PathBuf)], new_dir: &Path) {
    let dir = File::open(new_dir).expect("open new/");
    if strategy == "syncfs" {
        syncfs(&dir).expect("syncfs");
        return;
    }
    if strategy == "fadvise" {
        for (f, _) in files {
            fadvise(f, 0, None, Advice::DontNeed).expect("fadvise");
        }
    }
    let one = |f: &File| match strategy {
        "fsync" => f.sync_all().expect("fsync"),
        _ => fdatasync(f).expect("fdatasync"),
    };
    let per = files.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for part in files.chunks(per).skip(1) {
            s.spawn(move || part.iter().for_each(|(f, _)| one(f)));
        }
        s.spawn(|| dir.sync_all().expect("fsync new/"));
        files
            .chunks(per)
            .next()
            .into_iter()
            .flatten()
            .for_each(|(f, _)| one(f));
    });
}
