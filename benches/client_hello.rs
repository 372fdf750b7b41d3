//! ClientHello parsing: the work Portico does on every connection before it can route it.
//!
//! Runs `tls::client_hello::parse` over each captured hello in
//! `tests/fixtures/client_hello/` (see the README there for what each one is). The
//! fixtures are real client bytes, so the figures reflect what real clients cost, from a
//! 215-byte TLS 1.2 hello to a 1.9 KB post-quantum Chromium one split over nothing, and a
//! 1.1 KB one fragmented over three records.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portico::tls::client_hello::parse;

const FIXTURES: &[(&str, &[u8])] = &[
    (
        "curl_openssl3",
        include_bytes!("../tests/fixtures/client_hello/curl_openssl3.bin"),
    ),
    (
        "openssl_tls12_sni",
        include_bytes!("../tests/fixtures/client_hello/openssl_tls12_sni.bin"),
    ),
    (
        "openssl_no_sni",
        include_bytes!("../tests/fixtures/client_hello/openssl_no_sni.bin"),
    ),
    (
        "openssl_fragmented",
        include_bytes!("../tests/fixtures/client_hello/openssl_fragmented.bin"),
    ),
    (
        "chromium_pq",
        include_bytes!("../tests/fixtures/client_hello/chromium_pq.bin"),
    ),
];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_hello_parse");
    for (name, bytes) in FIXTURES {
        // A fixture that does not parse would make the figure meaningless.
        assert!(matches!(parse(bytes), Ok(Some(_))), "{name} does not parse");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(*name, |b| b.iter(|| parse(black_box(bytes))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
