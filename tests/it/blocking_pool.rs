//! The threads of `portico serve` under static load: the binary is run (its runtime is
//! built by the serve command, not by the test harness) and its threads are counted in
//! `/proc/PID/task` while concurrent requests arrive and after they end.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::client::{connect, Http, Opts};
use portico::cli::serve::MAX_BLOCKING_THREADS;

use crate::support::{eventually, free_port, Running};

/// How many requests are in flight at once.
const CONCURRENT: usize = 64;

/// The most threads `portico serve` may add to those it had after answering one request,
/// while it answers [`CONCURRENT`] requests for one small file at once: the one blocking
/// task that reads the file, the certificate watcher's pass, and one spare for a pool
/// thread that had timed out and is started again.
const BURST_GROWTH: usize = 3;

/// The most blocking-pool threads the server keeps once the load is over: the
/// certificate watcher wakes one every second, which keeps up to about keep-alive /
/// one second of them alive (see `cli/serve.rs`).
const IDLE_GROWTH: usize = 2;

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Counts the process's threads every millisecond until dropped; keeps the highest count.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(threads(pid)));
        let thread = std::thread::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(threads(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Sampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the highest count seen.
    fn peak(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// One HTTP/2 connection to the site and [`CONCURRENT`] GETs of `paths(i)` sent on it at
/// once, each expected to answer 200.
async fn burst(port: u16, path: impl Fn(usize) -> String) {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let (tls, _) = connect(addr, &Opts::sni("www.test"))
        .await
        .expect("handshake");
    let Http::H2(send) = Http::over(tls).await else {
        panic!("the server chose HTTP/2");
    };
    let requests: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let mut http = Http::H2(send.clone());
            let path = path(i);
            tokio::spawn(async move { http.get("www.test", &path).await })
        })
        .collect();
    for r in requests {
        let reply = r.await.expect("request task");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

fn write_site(dir: &Path) -> (std::path::PathBuf, u16) {
    let root = dir.join("www");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("warm.txt"), "warm").expect("write");
    std::fs::write(root.join("small.html"), "<p>small</p>".repeat(300)).expect("write");
    for i in 0..CONCURRENT {
        std::fs::write(
            root.join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(100),
        )
        .expect("write");
    }
    let port = free_port();
    let config = dir.join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[site]]\nname = \"www\"\nhosts = [\"www.test\"]\ntls = \"internal\"\nroot = \"www\"\n"
        ),
    )
    .expect("write config");
    (config, port)
}

#[test]
fn static_requests_do_not_grow_the_blocking_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = write_site(dir.path());
    let child = Running::serve(&config);
    let pid = child.0.id();
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    eventually("the server answers", || {
        rt.block_on(async {
            let (tls, _) = connect(addr, &Opts::sni("www.test")).await.ok()?;
            let reply = Http::over(tls)
                .await
                .try_get("www.test", "/warm.txt")
                .await?;
            (reply.status == 200).then_some(())
        })
    });
    // Its main thread, the workers, and the blocking threads it used to start and to
    // answer one request.
    let baseline = threads(pid);

    // Every request for one small file that is not in the cache yet: one read, whose
    // result the others wait for, not one blocking task (and thread) each.
    let sampler = Sampler::start(pid);
    rt.block_on(burst(port, |_| "/small.html".to_string()));
    let one_file = sampler.peak();
    assert!(
        one_file <= baseline + BURST_GROWTH,
        "{CONCURRENT} concurrent requests for one small file took the server from \
         {baseline} to {one_file} threads"
    );

    // Distinct files need a read each: the pool grows, but only to its bound ...
    let sampler = Sampler::start(pid);
    rt.block_on(burst(port, |i| format!("/f{i}.txt")));
    let peak = sampler.peak();
    assert!(
        peak <= baseline + MAX_BLOCKING_THREADS,
        "{CONCURRENT} concurrent requests for distinct files took the server from \
         {baseline} to {peak} threads"
    );
    // ... and the threads it started go once the load is over, although the certificate
    // watcher hands the pool a task every second.
    let mut now = threads(pid);
    let waiting = Instant::now();
    while now > baseline + IDLE_GROWTH && waiting.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        now = threads(pid);
    }
    eprintln!(
        "threads: {baseline} after one request; at the peak {one_file} for one file, \
         {peak} for distinct files; {now} after the load"
    );
    assert!(
        now <= baseline + IDLE_GROWTH,
        "the server kept {now} threads after the load ({baseline} before it, {peak} at \
         its peak)"
    );
}
