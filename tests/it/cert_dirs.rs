//! `[[certificate]] dir`: every NAME.pem + NAME.key pair of a directory joins the pool, and
//! pairs added, replaced or removed are served without a reload, within 2 s (inotify).

use std::time::{Duration, Instant};

use crate::support::admin::Logged;
use crate::support::pki::Pki;
use crate::support::{eventually, free_port, portico_check, subject};

/// Waits until `name` is served with a certificate whose subject holds `stem`, and
/// returns how long that took from `since`.
fn served(port: u16, name: &str, stem: &str, since: Instant) -> Duration {
    eventually(&format!("{name} served with {stem}"), || {
        subject(port, name).filter(|s| s.contains(stem))
    });
    since.elapsed()
}

#[test]
fn a_directory_of_pairs_is_the_pool_and_its_changes_are_served_within_2_s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    pki.put_pair(&certs, "wildcard", "wild-v1", &["*.dir.test"]);
    // An operator's names need not be the admin API's: upper case is fine here.
    pki.put_pair(&certs, "A.dir.test", "a-v1", &["a.dir.test"]);
    pki.put_pair(&certs, "c", "c-v1", &["c.other.test"]);
    std::fs::write(certs.join("README"), "not a certificate").expect("write");
    let port = free_port();
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[certificate]]\ndir = \"certs\"\n\
             [[site]]\nhosts = [\"a.dir.test\", \"b.dir.test\", \"c.other.test\"]\nrespond = {{ body = \"d\" }}\n"
        ),
    )
    .expect("write");
    let (code, text) = portico_check(&config);
    assert_eq!(code, Some(0), "{text}");

    let node = Logged::serve(&config);
    let t = Instant::now();
    served(port, "a.dir.test", "a-v1", t);
    served(port, "b.dir.test", "wild-v1", t);

    // Added: an exact certificate for b beats the wildcard.
    let t = Instant::now();
    pki.put_pair(&certs, "b", "b-v1", &["b.dir.test"]);
    let took = served(port, "b.dir.test", "b-v1", t);
    assert!(took < Duration::from_secs(2), "an added pair took {took:?}");

    // Replaced.
    let t = Instant::now();
    pki.put_pair(&certs, "A.dir.test", "a-v2", &["a.dir.test"]);
    let took = served(port, "a.dir.test", "a-v2", t);
    assert!(
        took < Duration::from_secs(2),
        "a replaced pair took {took:?}"
    );

    // Removed: b falls back to the wildcard.
    let t = Instant::now();
    std::fs::remove_file(certs.join("b.pem")).expect("rm");
    std::fs::remove_file(certs.join("b.key")).expect("rm");
    let took = served(port, "b.dir.test", "wild-v1", t);
    assert!(
        took < Duration::from_secs(2),
        "a removed pair took {took:?}"
    );

    // A removal that would leave a host without a certificate changes nothing, and the log
    // says why.
    std::fs::remove_file(certs.join("c.pem")).expect("rm");
    std::fs::remove_file(certs.join("c.key")).expect("rm");
    eventually("the refused change logged", || {
        node.stderr
            .lock()
            .expect("lock")
            .contains("certificate change not applied")
            .then_some(())
    });
    assert!(
        subject(port, "c.other.test").is_some_and(|s| s.contains("c-v1")),
        "c.other.test keeps its certificate\n{}",
        node.stderr.lock().expect("lock")
    );
    let log = node.stderr.lock().expect("lock").clone();
    assert!(
        log.contains("c.other.test"),
        "the log names the host\n{log}"
    );
    // Each change patched the pool of the runtime serving: no new runtime was built.
    assert!(
        log.contains("certificate directory changed") && !log.contains("reloaded"),
        "pool patches, not rebuilds\n{log}"
    );
}

#[test]
fn check_names_a_missing_directory_and_half_pairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    pki.put_pair(&certs, "a", "a", &["a.dir.test"]);
    std::fs::copy(certs.join("a.pem"), certs.join("lonely.pem")).expect("copy");
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:1\"\n\
         [[certificate]]\ndir = \"certs\"\n\
         [[certificate]]\ndir = \"missing\"\n\
         [[certificate]]\ndir = \"certs\"\ncert = \"certs/a.pem\"\n\
         [[site]]\nhosts = [\"a.dir.test\"]\nrespond = { body = \"d\" }\n",
    )
    .expect("write");
    let (code, out) = portico_check(&config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("certificate[2]") && out.contains("dir cannot be combined with cert or key"),
        "{out}"
    );
    assert!(
        out.contains("certificate[1].dir") && out.contains("cannot read the certificate directory"),
        "{out}"
    );
    assert!(
        out.contains("certificate[0].dir") && out.contains("lonely.pem has no key file"),
        "{out}"
    );
}

/// With room for two certificates, six are still each served with their own; and a pair
/// whose files turn to garbage after it was evicted is refused at the handshake with a log
/// line naming the file, never replaced by another certificate (rule 4).
#[test]
fn an_evicted_certificate_is_read_again_and_a_corrupt_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    let names: Vec<String> = (0..6).map(|i| format!("n{i}.cache.test")).collect();
    for (i, name) in names.iter().enumerate() {
        pki.put_pair(&certs, &format!("n{i}"), &format!("stem-{i}"), &[name]);
    }
    // A wildcard that also covers every name: a refused pair must not fall back to it.
    pki.put_pair(&certs, "wild", "wild", &["*.cache.test"]);
    let port = free_port();
    let config = dir.path().join("portico.toml");
    let hosts = names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[limits]\ncertificate_cache = 2\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[certificate]]\ndir = \"certs\"\n\
             [[site]]\nhosts = [{hosts}]\nrespond = {{ body = \"d\" }}\n"
        ),
    )
    .expect("write");
    let node = Logged::serve(&config);
    eventually("serving", || subject(port, &names[0]));
    for round in 0..2 {
        for (i, name) in names.iter().enumerate() {
            let got = subject(port, name).unwrap_or_default();
            assert!(
                got.contains(&format!("stem-{i}")),
                "round {round}: {name} got {got:?}"
            );
        }
    }
    // With a cache of two, the last two names used hold their chain and key, the others
    // not: `explain --live` says which.
    let live = |extra: &[&str], name: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["explain", name, "--live"])
            .args(extra)
            .arg("-c")
            .arg(&config)
            .output()
            .expect("explain runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (i, held) in [(0, false), (5, true)] {
        let name = &names[i];
        let out = live(&["--json"], name);
        assert!(
            out.contains(&format!("\"in_memory\": {held}")),
            "{name}: in_memory {held}:\n{out}"
        );
        // The line after the certificate's own file says so when it is not held (the
        // wildcard candidate, never used, is not held either).
        let text = live(&[], name);
        let mut lines = text
            .lines()
            .skip_while(|l| !l.ends_with(&format!("/n{i}.pem")));
        assert!(lines.next().is_some(), "{name}: its file:\n{text}");
        let next = lines.next().unwrap_or_default();
        assert_eq!(
            !held,
            next.contains("not in memory: its files are read at its next handshake"),
            "{name}:\n{text}"
        );
    }
    // n1 was evicted by the names used after it. Its key turns to garbage in place: the
    // watcher cannot load the pair and keeps the listed certificate (a refused change), and
    // the next handshake for n1, reading the evicted pair again, is refused and logged.
    std::fs::write(
        certs.join("n1.key"),
        "-----BEGIN PRIVATE KEY-----\ngarbage\n",
    )
    .expect("write");
    eventually("the refusal logged", || {
        let _ = subject(port, &names[1]);
        let log = node.stderr.lock().expect("lock");
        (log.contains("the certificate cannot be loaded") && log.contains("n1.pem")).then_some(())
    });
    let got = subject(port, &names[1]);
    assert!(
        got.as_deref().is_none_or(|s| !s.contains("wild")),
        "n1 must not get the wildcard: {got:?}"
    );
    assert!(
        subject(port, &names[2]).is_some_and(|s| s.contains("stem-2")),
        "other names are unaffected"
    );
}

/// A restart parses only the certificates whose files changed since the last run: the
/// others are known from state_dir/names.cache, and still served with their own
/// certificate (read from their files at the first handshake). The changed ones are found
/// once serving has started and patched in. A cache that does not read costs only the
/// parsing.
#[test]
fn a_restart_parses_only_what_changed_thanks_to_the_names_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    for i in 0..5 {
        pki.put_pair(
            &certs,
            &format!("n{i}"),
            &format!("v1-{i}"),
            &[&format!("n{i}.names.test")],
        );
    }
    let port = free_port();
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[certificate]]\ndir = \"certs\"\n\
             [[site]]\nname = \"all\"\nhosts = [\"*\"]\nrespond = {{ body = \"d\" }}\n"
        ),
    )
    .expect("write");
    let cache = dir.path().join("state/names.cache");
    let first = Logged::serve(&config);
    first.line_containing("parsed=5");
    eventually("the names cache written", || {
        let text = std::fs::read_to_string(&cache).ok()?;
        (text.lines().count() == 6).then_some(())
    });
    drop(first);

    // While stopped, one pair is replaced. The start takes every pair as the cache says
    // (nothing parsed before serving), then looks at the files and patches in the one
    // that changed; the cache gets one line for it, appended.
    pki.put_pair(&certs, "n2", "v2-2", &["n2.names.test"]);
    let second = Logged::serve(&config);
    second.line_containing("parsed=0");
    let line = second.line_containing("changed while Portico was stopped");
    assert!(line.contains("pairs=1"), "{line}");
    served(port, "n2.names.test", "v2-2", Instant::now());
    eventually("the replaced pair appended to the names cache", || {
        let text = std::fs::read_to_string(&cache).ok()?;
        (text.lines().filter(|l| !l.is_empty()).count() == 7 && text.contains("v2-2")).then_some(())
    });
    for i in [0, 1, 3, 4] {
        served(
            port,
            &format!("n{i}.names.test"),
            &format!("v1-{i}"),
            Instant::now(),
        );
    }
    drop(second);

    // A cache that does not read is no cache.
    std::fs::write(&cache, "portico names cache 1\ngarbage\tline\n").expect("write");
    let third = Logged::serve(&config);
    third.line_containing("parsed=5");
    served(port, "n3.names.test", "v1-3", Instant::now());
}
