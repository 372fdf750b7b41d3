//! SNI resolution with a million names: what one handshake pays to find its site.
//!
//! The table holds 900,000 exact names and 100,000 wildcards, as a large shared host might.
//! Each benchmark resolves names spread over the whole table (not one hot entry), through
//! `route::Table::resolve_sni`, which is what the TLS resolver calls: normalizing the SNI as
//! sent, the exact lookup, the parent-wildcard lookup, and building the refusal on a miss.
//! The DESIGN target is under 1 µs per resolution with 1M names.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use portico::config::UnknownSni;
use portico::names::HostName;
use portico::route::{Binding, CertFrom, Table};

const EXACT: usize = 900_000;
const WILDCARDS: usize = 100_000;
/// How many distinct names each benchmark cycles through: enough to defeat a hot cache
/// line, few enough that building them is not what is measured.
const PROBES: usize = 4096;

fn host(name: &str) -> HostName {
    // The names are generated below and always valid.
    HostName::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn binding(name: HostName, site: usize) -> (HostName, Binding) {
    // Certificates do not take part in name resolution, so bindings carry none: the
    // benchmark measures the lookup, not certificate choice.
    let b = Binding {
        host: name.clone(),
        site,
        certs: CertFrom::Nothing,
        https_port: None,
    };
    (name, b)
}

fn table() -> Table {
    let mut map = HashMap::with_capacity(EXACT + WILDCARDS);
    for i in 0..EXACT {
        let (k, v) = binding(host(&format!("s{i}.bench.test")), i);
        map.insert(k, v);
    }
    for j in 0..WILDCARDS {
        let (k, v) = binding(host(&format!("*.w{j}.bench.test")), EXACT + j);
        map.insert(k, v);
    }
    Table::new(map, None, UnknownSni::Reject)
}

/// `PROBES` names from `make`, spread evenly over `0..range`.
fn spread(range: usize, make: impl Fn(usize) -> String) -> Vec<String> {
    (0..PROBES).map(|k| make(k * (range / PROBES))).collect()
}

fn bench(c: &mut Criterion) {
    let table = table();
    assert_eq!(table.len(), EXACT + WILDCARDS);
    // Mixed case, as clients may send it, so normalization is part of the cost.
    let exact = spread(EXACT, |i| format!("S{i}.Bench.Test"));
    let wildcard = spread(WILDCARDS, |j| format!("www.w{j}.bench.test"));
    let miss = spread(EXACT, |i| format!("nope{i}.bench.test"));

    let mut group = c.benchmark_group("sni_1M");
    for (what, names, hit) in [
        ("exact_hit", &exact, true),
        ("wildcard_hit", &wildcard, true),
        ("miss", &miss, false),
    ] {
        // Each iteration resolves the next name of the set, so a run visits all of them.
        let mut next = names.iter().cycle();
        group.bench_function(what, |b| {
            b.iter_batched(
                || next.next().map(String::as_str),
                |name| {
                    let r = table.resolve_sni(black_box(name));
                    assert_eq!(r.is_ok(), hit);
                    black_box(r.map(|r| r.binding.site)).ok()
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
