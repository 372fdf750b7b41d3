//! A real nginx on loopback (the Debian package), run in the foreground with its own
//! configuration in a test directory, and stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!(
            "nginx did not stop on SIGTERM; logs in {}",
            self.dir.display()
        );
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Starts nginx with `servers` (the `server { ... }` blocks) inside its `http` block, and
/// waits until it accepts on 127.0.0.1:`port`. Its files go into `dir`.
pub async fn start(dir: &Path, port: u16, servers: &str) -> Nginx {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} is missing: install the Debian package nginx (.ci/run installs it)"
    );
    let t = |sub: &str| p(&dir.join(sub));
    let conf = format!(
        "user root;\nworker_processes 1;\ndaemon off;\npid {pid};\nerror_log {log};\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {};\n  proxy_temp_path {};\n  fastcgi_temp_path {};\n  uwsgi_temp_path {};\n  scgi_temp_path {};\n{servers}}}\n",
        t("client_body"),
        t("proxy"),
        t("fastcgi"),
        t("uwsgi"),
        t("scgi"),
        pid = t("nginx.pid"),
        log = t("error.log"),
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut nginx = Nginx {
        child,
        dir: dir.to_path_buf(),
    };
    // Wait until it accepts; a deadline only to fail clearly if it never does.
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return nginx;
        }
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited ({status}):\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    panic!("nginx does not accept on 127.0.0.1:{port}:\n{log}");
}
