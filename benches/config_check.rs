//! Checking a configuration with 100,000 sites: the first stage of every start and reload.
//!
//! `Config::from_str` parses the TOML and runs every stage-1 check (names, references,
//! binding conflicts) over the text held in memory, so no file system work is measured.
//! Sites use `respond`, which needs no files; certificate loading (stage 2) is measured end
//! to end by `bench/run`'s startup figures instead.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portico::config::{Config, Report};

// The server's own allocator, so the figure is what `portico` spends (glibc's malloc and
// free were a quarter of this benchmark's samples).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SITES: usize = 100_000;

fn config_text(sites: usize) -> String {
    let mut text = String::with_capacity(sites * 120);
    text.push_str("[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:18443\"\n\n");
    for i in 0..sites {
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "[[site]]\nname = \"s{i}\"\nhosts = [\"s{i}.bench.test\", \"www.s{i}.bench.test\"]\n\
             respond = {{ status = 200, body = \"ok\\n\" }}\n\n"
        );
    }
    text.push_str("[limits]\nmax_connections = 100000\n");
    text
}

fn bench(c: &mut Criterion) {
    let text = config_text(SITES);
    let file = Path::new("/nonexistent/portico-bench.toml");
    {
        let mut report = Report::default();
        let config = Config::from_str(&text, file, &mut report);
        assert!(
            config.is_some() && !report.has_errors(),
            "the generated configuration must be valid:\n{report}"
        );
    }
    let mut group = c.benchmark_group("config_check");
    // One iteration takes a good fraction of a second: few, long samples.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("from_str_100k_sites", |b| {
        b.iter(|| {
            let mut report = Report::default();
            let config = Config::from_str(black_box(&text), file, &mut report);
            black_box((config.map(|c| c.sites.len()), report.items.len()))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
