//! The Debian package, built by `scripts/deb` from the binary under test and installed on
//! this machine with dpkg: its files are where they belong, the installed configuration
//! checks, systemd accepts the unit (and scores its hardening as docs/install.md says),
//! nothing starts, and a purge leaves nothing behind.
//!
//! It changes the machine, so it runs only when asked: as root, with dpkg, and with
//! PORTICO_TEST_INSTALL=1 (scripts/test sets it). Otherwise it says it was skipped; asked
//! but unable, it fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_portico");
const ASK: &str = "PORTICO_TEST_INSTALL";
// A static: setup.rs reads a `const` naming a path under /usr as a program a test starts.
static UNIT: &str = "/usr/lib/systemd/system/portico.service";
const CONFIG: &str = "/etc/portico/portico.toml";
const STATE: &str = "/var/lib/portico";

/// Every file the package installs, checked present after the install and gone after the
/// purge.
const FILES: &[&str] = &[
    "/usr/bin/portico",
    CONFIG,
    UNIT,
    "/usr/share/man/man1/portico.1.gz",
    "/usr/share/man/man1/portico-serve.1.gz",
    "/usr/share/bash-completion/completions/portico",
    "/usr/share/zsh/vendor-completions/_portico",
    "/usr/share/fish/vendor_completions.d/portico.fish",
    "/usr/share/doc/portico/copyright",
    "/usr/share/doc/portico/install.md",
    "/usr/share/doc/portico/examples/portico.socket",
];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", "portico"])
        .stdout
        .starts_with(b"install ok installed")
}

fn user(name: &str) -> Option<String> {
    let out = run("getent", &["passwd", name]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn group_exists(name: &str) -> bool {
    run("getent", &["group", name]).status.success()
}

/// Whether a process runs the installed binary.
fn installed_binary_running() -> bool {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_link(e.path().join("exe"))
                    .is_ok_and(|exe| exe == Path::new("/usr/bin/portico"))
            })
        })
        .unwrap_or(false)
}

/// Whether this machine's dpkg is told not to install `path` (`path-exclude=` in
/// /etc/dpkg/dpkg.cfg.d, as slim container images do for /usr/share/doc and man pages);
/// the last rule that matches decides, as in dpkg.
fn excluded_by_dpkg(path: &str) -> bool {
    let mut excluded = false;
    let Ok(entries) = std::fs::read_dir("/etc/dpkg/dpkg.cfg.d") else {
        return false;
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().map(str::trim) {
            if let Some(p) = line.strip_prefix("path-exclude=") {
                excluded |= glob(p.trim().as_bytes(), path.as_bytes());
            } else if let Some(p) = line.strip_prefix("path-include=") {
                excluded &= !glob(p.trim().as_bytes(), path.as_bytes());
            }
        }
    }
    excluded
}

/// fnmatch without FNM_PATHNAME, as dpkg's filters use it: `*` also matches `/`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Purges the package when dropped, so that a failed assertion leaves the machine clean.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "portico"]);
    }
}

#[test]
fn package_installs_checks_and_purges_without_a_trace() {
    if std::env::var(ASK).as_deref() != Ok("1") {
        // Written to stderr directly, past the test harness's capture: a skip is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED package_installs_checks_and_purges_without_a_trace: set {ASK}=1 (as root, with dpkg) to install the package on this machine; scripts/test does"
        );
        assert_ne!(std::env::var(ASK).as_deref(), Ok("1"), "the guard is off");
        return;
    }
    assert_eq!(
        ok("id", &["-u"]).trim(),
        "0",
        "{ASK}=1 needs root: dpkg installs into /"
    );
    assert!(
        !installed(),
        "portico is already installed on this machine; the test would remove it"
    );
    assert!(
        user("portico").is_none(),
        "a portico user exists already; the test cannot tell what the package made"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = tempfile::tempdir().expect("tempdir");
    let deb = ok(
        root.join("scripts/deb").to_str().expect("utf-8 path"),
        &[
            "--fast",
            "--out",
            out_dir.path().to_str().expect("utf-8"),
            BIN,
        ],
    );
    let deb = deb.trim();
    assert!(deb.ends_with(".deb") && Path::new(deb).exists(), "{deb}");

    let contents = ok("dpkg-deb", &["--contents", deb]);
    for file in FILES {
        assert!(
            contents.contains(&format!(".{file}\n")),
            "the package holds {file}:\n{contents}"
        );
    }

    let _purge = Purge;
    ok("dpkg", &["--install", deb]);
    assert!(installed());

    for file in FILES.iter().filter(|f| !excluded_by_dpkg(f)) {
        assert!(Path::new(file).is_file(), "{file} is installed");
    }
    let mode = std::fs::metadata("/usr/bin/portico")
        .expect("binary")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "the binary is executable");
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "portico"]);
    assert!(
        conffiles.contains(CONFIG),
        "the configuration is a conffile: {conffiles}"
    );

    // The system user, and its state directory.
    let entry = user("portico").expect("the portico user is created");
    assert!(
        entry.ends_with(":/var/lib/portico:/usr/sbin/nologin"),
        "{entry}"
    );
    let uid: u32 = entry
        .split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .expect("uid");
    assert!(uid < 1000, "a system user: {entry}");
    let state = std::fs::metadata(STATE).expect("the state directory");
    assert!(state.is_dir());
    assert_eq!(state.uid(), uid, "portico owns {STATE}");
    assert_eq!(state.mode() & 0o777, 0o750);

    // The version carries the commit.
    let version = ok("/usr/bin/portico", &["--version"]);
    assert!(
        version.starts_with(&format!("portico {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // The example configuration checks as installed, run by the service's own user.
    let gid = entry.split(':').nth(3).expect("gid");
    let check = run(
        "setpriv",
        &[
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "/usr/bin/portico",
            "check",
            "-c",
            CONFIG,
        ],
    );
    assert!(
        check.status.success(),
        "portico check -c {CONFIG}: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // systemd accepts the unit, and scores its exposure as docs/install.md says.
    let verify = run("systemd-analyze", &["verify", "--man=no", UNIT]);
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !complaints.contains("portico"),
        "systemd-analyze verify: {complaints}"
    );
    let security = ok("systemd-analyze", &["security", "--offline=true", UNIT]);
    let overall = security
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for portico.service: "))
        .map(|(_, score)| score.to_string())
        .unwrap_or_else(|| panic!("no overall score in: {security}"));
    let mut words = overall.split_whitespace();
    let (score, verdict) = (words.next().expect("score"), words.next().expect("verdict"));
    assert!(
        ["PERFECT", "SAFE", "OK"].contains(&verdict),
        "the unit is at least OK: {overall}"
    );
    let doc = std::fs::read_to_string(root.join("docs/install.md")).expect("docs/install.md");
    assert!(
        doc.contains(&format!("{score} {verdict}")),
        "docs/install.md gives the score systemd-analyze reports now, {score} {verdict}"
    );

    // Installing started nothing (no systemd here, and postinst enables nothing).
    assert!(
        !installed_binary_running(),
        "nothing runs after the install"
    );
    let wants = "/etc/systemd/system/multi-user.target.wants/portico.service";
    assert!(!Path::new(wants).exists(), "the service is not enabled");

    // Removing keeps the configuration, the state and the user; purging takes them.
    std::fs::write(Path::new(STATE).join("ca.pem"), "state a server made").expect("state");
    ok("dpkg", &["--remove", "portico"]);
    assert!(!Path::new("/usr/bin/portico").exists());
    assert!(Path::new(CONFIG).exists() && Path::new(STATE).join("ca.pem").exists());
    assert!(user("portico").is_some());
    ok("dpkg", &["--purge", "portico"]);
    assert!(!installed());
    for gone in FILES.iter().chain(&["/etc/portico", STATE]) {
        assert!(!Path::new(gone).exists(), "{gone} is gone after the purge");
    }
    assert!(user("portico").is_none(), "the user is gone");
    assert!(!group_exists("portico"), "the group is gone");
    let listed = run("dpkg-query", &["-W", "portico"]);
    assert!(!listed.status.success(), "dpkg no longer knows portico");
}

/// `portico --version`: the package version and the commit, as build.rs found it.
#[test]
fn dpkg_path_filters_match_as_dpkg_does() {
    assert!(glob(
        b"/usr/share/doc/*",
        b"/usr/share/doc/portico/install.md"
    ));
    assert!(glob(
        b"/usr/share/doc/*/copyright",
        b"/usr/share/doc/portico/copyright"
    ));
    assert!(!glob(b"/usr/share/man/*", b"/usr/bin/portico"));
    assert!(glob(
        b"/usr/share/man/man?/*",
        b"/usr/share/man/man1/portico.1.gz"
    ));
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = ok(BIN, &["--version"]);
    let line = out.trim();
    let commit = line
        .strip_prefix(&format!("portico {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?}"));
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(
        hash == "unknown" || (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit())),
        "a commit hash, or unknown without git: {line:?}"
    );
}
