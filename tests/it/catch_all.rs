//! `hosts = ["*"]`: a site that takes every name no other site binds on the listener, each
//! served with the pool's certificate for it (a directory of customer certificates), and a
//! name the pool does not cover refused as unknown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::AlertDescription;

use crate::support::admin::Logged;
use crate::support::client::{alert, connect, get, Http, Opts};
use crate::support::pki::Pki;
use crate::support::{eventually, free_port, portico_check};

const BIN: &str = env!("CARGO_BIN_EXE_portico");

fn opts(pki: &Pki, name: &str) -> Opts {
    let mut o = Opts::sni(name);
    o.root = Some(pki.root_der());
    o
}

#[tokio::test]
async fn the_catch_all_site_serves_every_name_the_pool_covers_and_refuses_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    pki.put_pair(&certs, "a", "a", &["a.catch.test"]);
    pki.put_pair(&certs, "b", "b", &["b.catch.test", "b2.catch.test"]);
    pki.put_pair(&certs, "w", "w", &["*.w.catch.test"]);
    let port = free_port();
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[certificate]]\ndir = \"certs\"\n\
             [[site]]\nname = \"explicit\"\nhosts = [\"a.catch.test\"]\nrespond = {{ body = \"explicit\" }}\n\
             [[site]]\nname = \"customers\"\nhosts = [\"*\"]\nrespond = {{ body = \"customers\" }}\n"
        ),
    )
    .expect("write");
    let (code, text) = portico_check(&config);
    assert_eq!(code, Some(0), "{text}");
    let node = Logged::serve(&config);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    eventually("serving", || std::net::TcpStream::connect(addr).ok());

    // An explicit binding beats the catch-all; every other covered name is the catch-all's.
    for (name, san, body) in [
        ("a.catch.test", "a.catch.test", "explicit"),
        ("b.catch.test", "b.catch.test", "customers"),
        ("b2.catch.test", "b.catch.test", "customers"),
        ("x.w.catch.test", "*.w.catch.test", "customers"),
    ] {
        let (presented, reply) = get(addr, &opts(&pki, name), name, "/").await;
        assert_eq!(
            presented.sans.first().map(String::as_str),
            Some(san),
            "{name}"
        );
        assert_eq!(reply.text(), body, "{name}");
    }
    // A name the pool does not cover is unknown: unrecognized_name, as without a catch-all.
    let Err(e) = connect(addr, &opts(&pki, "nobody.test")).await else {
        panic!("nobody.test was served");
    };
    assert_eq!(alert(&e), Some(AlertDescription::UnrecognisedName), "{e}");
    // On b's connection, a Host b's certificate does not cover is misdirected.
    let (tls, _) = connect(addr, &opts(&pki, "b.catch.test")).await.expect("b");
    let mut http = Http::over(tls).await;
    assert_eq!(http.get("x.w.catch.test", "/").await.status, 421);
    assert_eq!(http.get("b2.catch.test", "/").await.text(), "customers");

    // A customer's certificate added to the directory is served within 2 s.
    let t = Instant::now();
    pki.put_pair(&certs, "c", "c", &["c.catch.test"]);
    while connect(addr, &opts(&pki, "c.catch.test")).await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "c was never served\n{}",
            node.stderr.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = t.elapsed();
    let (_, reply) = get(addr, &opts(&pki, "c.catch.test"), "c.catch.test", "/").await;
    assert_eq!(reply.text(), "customers");
    assert!(
        took < Duration::from_secs(2),
        "an added customer took {took:?}"
    );

    // explain says how the name found its site.
    let out = std::process::Command::new(BIN)
        .args(["explain", "-c"])
        .arg(&config)
        .arg("b2.catch.test")
        .output()
        .expect("explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("catch-all"), "{text}");
}

#[test]
fn the_catch_all_host_needs_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:1\"\n\
         [[site]]\nhosts = [\"*\"]\ntls = \"internal\"\nrespond = { body = \"x\" }\n\
         [[site]]\nname = \"two\"\nhosts = [\"*\"]\nrespond = { body = \"y\" }\n",
    )
    .expect("write");
    let (code, text) = portico_check(&config);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("site[0].hosts[0]") && text.contains("from the pool"),
        "{text}"
    );
    assert!(
        text.contains("site[1].hosts[0]") && text.contains("host * is claimed by"),
        "two catch-all sites conflict: {text}"
    );
}
