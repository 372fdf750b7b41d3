//! Reloads without a failed request: runtime swaps under load, `portico reload` through the
//! control socket, new and removed listener addresses, and certificate files replaced on disk.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico::runtime::Shared;

use crate::support::client::{connect, Http, Opts};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{build, eventually, free_port, serve, subject, Running};

const BIN: &str = env!("CARGO_BIN_EXE_portico");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let port = free_port();
    let write = |generation: usize| {
        let (cert, key) = pki.leaf(
            &format!("stable-{generation}"),
            &["stable.test"],
            Key::Ecdsa,
            Validity::Current,
        );
        let mut toml = format!(
            "[[listener]]\naddress = \"127.0.0.1:{port}\"\n[[site]]\nname = \"stable\"\nhosts = [\"stable.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nrespond = {{ body = \"stable\" }}\n",
            cert.display(),
            key.display()
        );
        // Every other generation has an extra site, so sites come and go.
        if generation % 2 == 1 {
            toml += &format!("[[site]]\nname = \"extra\"\nhosts = [\"extra{generation}.test\"]\ntls = \"internal\"\nrespond = {{ body = \"extra\" }}\n");
        }
        std::fs::write(dir.path().join("portico.toml"), toml).expect("write config");
    };
    write(0);
    let toml = std::fs::read_to_string(dir.path().join("portico.toml")).expect("read");
    let mut server = serve(dir.path(), &toml).await;
    let addr = server.addr("127.0.0.1");

    let stop = Arc::new(AtomicUsize::new(0));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for keep_alive in [false, true, false, true] {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let opts = Opts::sni("stable.test");
            let mut http: Option<Http> = None;
            // Bounded: at most 2000 requests per client, and it stops when told.
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) == 1 {
                    break;
                }
                if http.is_none() || !keep_alive {
                    match connect(addr, &opts).await {
                        Ok((tls, _)) => http = Some(Http::over(tls).await),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                let Some(h) = http.as_mut() else { continue };
                match h.try_get("stable.test", "/").await {
                    Some(r) if r.status == 200 && r.text() == "stable" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // A keep-alive connection closed by a reload between requests is not a
                    // failed request: the client reconnects, as browsers do.
                    None if keep_alive => http = None,
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let shared = Shared::new();
    for generation in 1..=20 {
        write(generation);
        let rt = build(&dir.path().join("portico.toml"), &shared);
        server
            .server
            .as_mut()
            .expect("running")
            .install(rt)
            .expect("install");
        // The next new handshake sees the new certificate.
        let (_, presented) = connect(addr, &Opts::sni("stable.test"))
            .await
            .expect("handshake after reload");
        assert_eq!(presented.subject, format!("CN=stable-{generation} Ecdsa"));
        let extra = connect(addr, &Opts::sni(&format!("extra{generation}.test"))).await;
        assert_eq!(
            extra.is_ok(),
            generation % 2 == 1,
            "sites come and go with the reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(1, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    assert!(ok.load(Ordering::Relaxed) > 0, "the load ran");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during 20 reloads"
    );
}

fn reload(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["reload", "-c"])
        .arg(config)
        .output()
        .expect("reload runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn portico_reload_reports_and_binds_new_addresses() {
    reload_reports_and_binds_new_addresses(Running::serve);
}

/// The same with one CPU, where one thread runs the connections and the reload's build
/// runs on the blocking pool.
#[test]
fn portico_reload_on_one_cpu() {
    reload_reports_and_binds_new_addresses(Running::serve_on_one_cpu);
}

fn reload_reports_and_binds_new_addresses(start: fn(&std::path::Path) -> Running) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (free_port(), free_port());
    let config = dir.path().join("portico.toml");
    let site = "[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = { body = \"a\" }\n";
    std::fs::write(
        &config,
        format!("[[listener]]\naddress = \"127.0.0.1:{a}\"\n{site}"),
    )
    .expect("write");
    let _child = start(&config);
    let socket = dir.path().join("state/portico.sock");
    eventually("control socket", || socket.exists().then_some(()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    eventually("serving on a", || subject(a, "a.test"));

    // Move the listener to another port: the new one is bound, the old one stops.
    std::fs::write(
        &config,
        format!("[[listener]]\naddress = \"127.0.0.1:{b}\"\n{site}"),
    )
    .expect("write");
    let (ok, text) = reload(&config);
    assert!(ok, "{text}");
    assert!(
        text.trim_end()
            .ends_with("OK reloaded: 1 listeners, 1 sites"),
        "{text}"
    );
    assert!(
        subject(b, "a.test").is_some(),
        "the new address answers at once"
    );
    eventually("old address closed", || {
        std::net::TcpStream::connect(("127.0.0.1", a))
            .is_err()
            .then_some(())
    });

    // A broken configuration: every problem printed, exit 1, the old one keeps serving.
    std::fs::write(&config, format!("[[listener]]\naddress = \"127.0.0.1:{b}\"\nbogus = 1\n{site}[[site]]\nhosts = [\"a.test\"]\nrespond = {{ body = \"x\" }}\n")).expect("write");
    let (ok, text) = reload(&config);
    assert!(!ok, "{text}");
    assert!(
        text.contains("listener[0].bogus") && text.contains("site[1].hosts[0]"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("the previous configuration keeps serving"),
        "{text}"
    );
    assert!(subject(b, "a.test").is_some());
}

#[test]
fn replaced_certificate_files_are_served_without_a_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let port = free_port();
    let (c1, k1) = pki.leaf("v1", &["rot.test"], Key::Ecdsa, Validity::Current);
    let (c2, k2) = pki.leaf("v2", &["rot.test"], Key::Ecdsa, Validity::Current);
    let (c3, k3) = pki.leaf("v3", &["rot.test"], Key::Ecdsa, Validity::Current);
    // The configuration names stable paths; what is behind them changes.
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).expect("mkdir");
    std::fs::copy(&c1, live.join("cert.pem")).expect("copy");
    std::fs::copy(&k1, live.join("key.pem")).expect("copy");
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n[[certificate]]\ncert = \"live/cert.pem\"\nkey = \"live/key.pem\"\n[[site]]\nhosts = [\"rot.test\"]\nrespond = {{ body = \"r\" }}\n"),
    )
    .expect("write");
    let _child = Running::serve(&config);
    eventually("v1 served", || {
        subject(port, "rot.test").filter(|s| s.contains("v1"))
    });

    // An atomic rename, as certbot-style tools do: key first, then certificate.
    std::fs::copy(&k2, live.join("key.tmp")).expect("copy");
    std::fs::rename(live.join("key.tmp"), live.join("key.pem")).expect("rename");
    std::fs::copy(&c2, live.join("cert.tmp")).expect("copy");
    std::fs::rename(live.join("cert.tmp"), live.join("cert.pem")).expect("rename");
    eventually("v2 served after a rename", || {
        subject(port, "rot.test").filter(|s| s.contains("v2"))
    });

    // A symlink swap, as with Kubernetes secrets or `ln -sfn`.
    std::fs::remove_file(live.join("cert.pem")).expect("rm");
    std::fs::remove_file(live.join("key.pem")).expect("rm");
    std::os::unix::fs::symlink(&c2, live.join("cert.pem")).expect("symlink");
    std::os::unix::fs::symlink(&k2, live.join("key.pem")).expect("symlink");
    std::thread::sleep(Duration::from_millis(2500));
    std::os::unix::fs::symlink(&k3, live.join("key.new")).expect("symlink");
    std::fs::rename(live.join("key.new"), live.join("key.pem")).expect("swap");
    std::os::unix::fs::symlink(&c3, live.join("cert.new")).expect("symlink");
    std::fs::rename(live.join("cert.new"), live.join("cert.pem")).expect("swap");
    eventually("v3 served after a symlink swap", || {
        subject(port, "rot.test").filter(|s| s.contains("v3"))
    });

    // A bad replacement keeps the old certificate.
    std::fs::remove_file(live.join("cert.pem")).expect("rm");
    std::fs::write(live.join("cert.pem"), "not a certificate").expect("write");
    std::thread::sleep(Duration::from_millis(3000));
    assert!(
        subject(port, "rot.test").is_some_and(|s| s.contains("v3")),
        "a broken file changes nothing"
    );
}

#[test]
fn a_reload_shares_unchanged_certificates_and_reloads_changed_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (ac, ak) = pki.leaf("a", &["a.test"], Key::Ecdsa, Validity::Current);
    let (bc, bk) = pki.leaf("b", &["b.test"], Key::Ecdsa, Validity::Current);
    let file = dir.path().join("portico.toml");
    std::fs::write(
        &file,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{}\"\n[[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n[[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n[[site]]\nhosts = [\"a.test\", \"b.test\"]\nrespond = {{ body = \"x\" }}\n",
            free_port(),
            ac.display(),
            ak.display(),
            bc.display(),
            bk.display()
        ),
    )
    .expect("write");
    let shared = Shared::new();
    // The pool's certificates in file order (a.pem, b.pem).
    let certs = |rt: &portico::runtime::Runtime| {
        let mut v: Vec<Arc<portico::tls::load::Cert>> = rt.pool().certs().cloned().collect();
        v.sort_by(|a, b| a.cert_file.cmp(&b.cert_file));
        v
    };
    let first = certs(&build(&file, &shared));
    let second = certs(&build(&file, &shared));
    for (x, y) in first.iter().zip(&second) {
        assert!(
            Arc::ptr_eq(x, y),
            "an unchanged certificate is the same allocation in both runtimes"
        );
    }
    // Replace b's files: only b is loaded again.
    std::thread::sleep(Duration::from_millis(10));
    pki.leaf("b", &["b.test"], Key::Ecdsa, Validity::Current);
    let third = certs(&build(&file, &shared));
    assert!(Arc::ptr_eq(&second[0], &third[0]));
    assert!(!Arc::ptr_eq(&second[1], &third[1]));
    assert_ne!(second[1].sha256, third[1].sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_under_load_refuses_no_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n[[site]]\nhosts = [\"up.test\"]\ntls = \"internal\"\nrespond = {{ body = \"up\" }}\n"),
    )
    .expect("write");
    let mut old = Running::serve(&config);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let socket = dir.path().join("state/portico.sock");
    let start = Instant::now();
    while connect(addr, &Opts::sni("up.test")).await.is_err() || !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicUsize::new(0));
    let (ok, refused, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    // What went wrong, for the assertion messages.
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, ok, refused, failed) =
            (stop.clone(), ok.clone(), refused.clone(), failed.clone());
        let errors = errors.clone();
        load.push(tokio::spawn(async move {
            // Bounded: at most 3000 new connections per client.
            for _ in 0..3000 {
                if stop.load(Ordering::Relaxed) == 1 {
                    break;
                }
                let tls = match connect(addr, &Opts::sni("up.test")).await {
                    Ok((tls, _)) => tls,
                    Err(e) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        errors.lock().expect("errors").push(format!("connect: {e}"));
                        continue;
                    }
                };
                match Http::over(tls).await.try_get("up.test", "/").await {
                    Some(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config2 = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["upgrade", "-c"])
            .arg(&config2)
            .output()
            .expect("upgrade runs")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "upgrade: {text}");
    let pid: u32 = text
        .split_whitespace()
        .skip_while(|w| *w != "process")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    // The old process drains and exits by itself.
    let exited = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            if let Some(status) = old.0.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the old process did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("join");
    assert!(
        exited.success(),
        "the old process exits cleanly: {exited:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(1, Ordering::Relaxed);
    for l in load {
        l.await.expect("load");
    }
    // The new process serves and owns the control socket.
    let config3 = config.clone();
    let reload = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["reload", "-c"])
            .arg(&config3)
            .output()
            .expect("reload")
    })
    .await
    .expect("join");
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status();
    assert!(
        reload.status.success(),
        "the new process answers on the control socket: {}",
        String::from_utf8_lossy(&reload.stdout)
    );
    assert!(ok.load(Ordering::Relaxed) > 0, "the load ran");
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "no connection refused during the upgrade: {:?}",
        errors.lock().expect("errors")
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the upgrade"
    );
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
