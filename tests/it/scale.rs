//! Scale: many sites and certificates. Ignored by default (it generates thousands of keys);
//! run with `cargo test --release --test it scale -- --ignored --nocapture`. It prints how
//! long loading took and asserts only correctness: timings belong in benchmarks.

use std::time::Instant;

use rcgen::{CertificateParams, KeyPair};

use portico::config::Config;
use portico::names::HostName;
use portico::runtime::{self, Mode, Shared};

#[test]
#[ignore = "generates many certificates; run on demand"]
fn many_certificates_load_and_resolve() {
    let n: usize = std::env::var("PORTICO_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    let started = Instant::now();
    let mut toml = String::from("[[listener]]\naddress = \"127.0.0.1:18443\"\n");
    for i in 0..n {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![format!("site{i}.scale.test")])
            .expect("params")
            .self_signed(&key)
            .expect("sign");
        std::fs::write(certs.join(format!("{i}.pem")), cert.pem()).expect("write");
        std::fs::write(certs.join(format!("{i}.key")), key.serialize_pem()).expect("write");
        toml += &format!("[[certificate]]\ncert = \"certs/{i}.pem\"\nkey = \"certs/{i}.key\"\n[[site]]\nname = \"s{i}\"\nhosts = [\"site{i}.scale.test\"]\nrespond = {{ body = \"{i}\" }}\n");
    }
    let file = dir.path().join("portico.toml");
    std::fs::write(&file, toml).expect("write config");
    eprintln!("generated {n} certificates in {:?}", started.elapsed());

    let started = Instant::now();
    let (config, report) = Config::load(&file);
    let config = config.unwrap_or_else(|| panic!("{report}"));
    let parsed = started.elapsed();
    let (rt, report) = runtime::build(config, Mode::Check, &Shared::new());
    let rt = rt.unwrap_or_else(|| panic!("{report}"));
    eprintln!(
        "{n} sites: config parsed and checked in {parsed:?}, runtime built in {:?}",
        started.elapsed()
    );

    let table = &rt.listeners[0].table;
    assert_eq!(table.len(), n);
    assert_eq!(rt.pool().len(), n);
    let started = Instant::now();
    for i in (0..n).step_by(7) {
        let r = table
            .resolve_sni(Some(&format!("site{i}.scale.test")))
            .expect("bound");
        assert_eq!(rt.sites[r.binding.site].name, format!("s{i}"));
        let choice = rt.certs_of(r.binding).expect("certificates");
        let cert = choice.preferred().expect("certificate");
        assert!(cert.covers(&HostName::parse(&format!("site{i}.scale.test")).expect("name")));
    }
    eprintln!(
        "resolved {} names in {:?}",
        n.div_ceil(7),
        started.elapsed()
    );
}
