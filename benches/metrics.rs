//! Rendering `/metrics` at 100,000 sites (issue 13: a scrape answers in under a second).
//!
//! The runtime is built in check mode (internal certificates count as covered and none is
//! issued, so no certificate series are rendered: at 100,000 certificates add one line
//! each). Every site has served a request, so every site renders a request counter; the
//! latency histograms are per listener at this size, as by default above 1,000 sites.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portico::config::{Config, Report};
use portico::metrics::Protocol;
use portico::runtime::{build, Mode, Shared};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SITES: usize = 100_000;

fn config_text(sites: usize) -> String {
    let mut text = String::with_capacity(sites * 110);
    text.push_str("[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:18443\"\n\n");
    for i in 0..sites {
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "[[site]]\nname = \"s{i}\"\nhosts = [\"s{i}.bench.test\"]\ntls = \"internal\"\n\
             respond = {{ status = 200, body = \"ok\\n\" }}\n\n"
        );
    }
    text
}

fn bench(c: &mut Criterion) {
    let mut report = Report::default();
    let config = Config::from_str(
        &config_text(SITES),
        Path::new("/nonexistent/m.toml"),
        &mut report,
    )
    .unwrap_or_else(|| panic!("the generated configuration is valid:\n{report}"));
    let shared = Shared::new();
    let (rt, report) = build(config, Mode::Check, &shared);
    let rt = rt.unwrap_or_else(|| panic!("the runtime builds:\n{report}"));
    for site in &rt.sites {
        site.metrics.request(Protocol::H2, http::StatusCode::OK);
    }
    let text = rt.metrics.render(&rt);
    assert!(
        text.lines().count() > SITES,
        "every site's series is rendered"
    );
    let mut group = c.benchmark_group("metrics");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("render_100k_sites", |b| {
        b.iter(|| black_box(rt.metrics.render(black_box(&rt)).len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
