//! A real Apache httpd on loopback (the Debian package `apache2`), run in the foreground
//! with its own ServerRoot, PidFile and logs in a test directory, and stopped when dropped.
//! The test writes the sites; [`start`] writes the main file around them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const APACHE: &str = "/usr/sbin/apache2";

/// Debian's module directory (a directory, not a program: not a `const` of the kind
/// setup.rs collects program paths from).
fn modules() -> &'static str {
    "/usr/lib/apache2/modules"
}

pub struct Apache {
    child: Child,
    dir: PathBuf,
}

impl Drop for Apache {
    fn drop(&mut self) {
        // SIGTERM stops the children too; SIGKILL would orphan them.
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
            "apache2 did not stop on SIGTERM; logs in {}",
            self.dir.display()
        );
    }
}

/// Writes `dir/apache2.conf` (ServerRoot `dir`, listening on 127.0.0.1:`port`, mod_ssl)
/// with `body` after the modules, starts apache2 with it, and waits until it accepts.
pub async fn start(dir: &Path, port: u16, body: &str) -> (Apache, PathBuf) {
    assert!(
        Path::new(APACHE).exists(),
        "{APACHE} is missing: install the Debian package apache2 (scripts/test installs it)"
    );
    let d = dir.display();
    let m = modules();
    // As root, Apache's children run as User; the test user otherwise. Everything they read
    // was read by the parent before it forked.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let user = if root {
        "User daemon\nGroup daemon\n"
    } else {
        ""
    };
    let conf = format!(
        "ServerRoot {d}\nServerName localhost\nPidFile {d}/apache2.pid\nErrorLog {d}/error.log\nLogLevel warn\nDefaultRuntimeDir {d}\nMutex file:{d} default\n{user}\
LoadModule mpm_event_module {m}/mod_mpm_event.so\n\
LoadModule authz_core_module {m}/mod_authz_core.so\n\
LoadModule ssl_module {m}/mod_ssl.so\n\
LoadModule rewrite_module {m}/mod_rewrite.so\n\
Listen 127.0.0.1:{port}\n\
{body}"
    );
    let file = dir.join("apache2.conf");
    std::fs::write(&file, conf).expect("write apache2.conf");
    let child = Command::new(APACHE)
        .arg("-f")
        .arg(&file)
        .arg("-DFOREGROUND")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start apache2");
    let mut apache = Apache {
        child,
        dir: dir.to_path_buf(),
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (apache, file);
        }
        if let Ok(Some(status)) = apache.child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = apache.child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("apache2 exited ({status}):\n{err}\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    panic!("apache2 does not accept on 127.0.0.1:{port}:\n{log}");
}
