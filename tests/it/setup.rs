//! The README's test command does its own set-up: every program a test starts is installed
//! by `scripts/test` (or comes with every Debian system).

use std::collections::BTreeSet;
use std::path::Path;

/// Program (as a test names it) -> the Debian package that provides it. `None`: part of
/// every Debian installation (Essential: coreutils, util-linux, dash, procps' kill).
const PROGRAMS: &[(&str, Option<&str>)] = &[
    ("curl", Some("curl")),
    ("openssl", Some("openssl")),
    ("nginx", Some("nginx")),
    ("apache2", Some("apache2")),
    ("pebble", Some("pebble")),
    ("pebble-challtestsrv", Some("pebble")),
    ("h2load", Some("nghttp2-client")),
    ("promtool", Some("prometheus")),
    ("prometheus", Some("prometheus")),
    ("chromium", Some("chromium")),
    ("chromedriver", Some("chromium-driver")),
    ("etcd", Some("etcd-server")),
    ("etcdctl", Some("etcd-client")),
    ("systemd-socket-activate", Some("systemd")),
    ("systemd-analyze", Some("systemd")),
    ("strace", Some("strace")),
    ("dpkg", None),
    ("dpkg-query", None),
    ("dpkg-deb", None),
    ("getent", None),
    ("sh", None),
    ("id", None),
    ("kill", None),
    ("setpriv", None),
    ("taskset", None),
    ("timeout", None),
];

/// The packages `scripts/test` installs: its `packages=(...)` line.
fn script_packages(root: &Path) -> BTreeSet<String> {
    let script = std::fs::read_to_string(root.join("scripts/test"))
        .expect("scripts/test is the README's test command");
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("packages=("))
        .expect("scripts/test names its packages in one packages=(...) line");
    line.trim_end_matches(')')
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Every program the integration tests start: the literal in `Command::new("...")`, and the
/// paths kept in `const NAME: &str = "/usr/...";` (how the helpers name their servers).
fn programs_started(dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("tests/it") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            programs_started(&path, found);
            continue;
        }
        // This file names the pattern itself.
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("setup.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("test source");
        for (i, _) in text.match_indices("Command::new(\"") {
            let rest = &text[i + "Command::new(\"".len()..];
            found.insert(rest[..rest.find('"').unwrap_or(0)].to_string());
        }
        for line in text.lines() {
            let line = line.trim();
            if let Some(value) = line
                .strip_prefix("const ")
                .and_then(|l| l.split_once(": &str = \"/usr/"))
                .map(|(_, v)| v.trim_end_matches("\";"))
            {
                found.insert(value.rsplit('/').next().unwrap_or(value).to_string());
            }
        }
    }
}

#[test]
fn test_script_installs_every_program_the_tests_start() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let packages = script_packages(root);
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "exec scripts/test"),
        ".ci/run must run the README's test command, scripts/test"
    );
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        readme.contains("```sh\nscripts/test\n```"),
        "the README's second command is scripts/test"
    );
    let mut started = BTreeSet::new();
    programs_started(&root.join("tests/it"), &mut started);
    assert!(
        started.contains("nginx") && started.contains("curl"),
        "{started:?}"
    );
    for program in &started {
        let Some((_, package)) = PROGRAMS.iter().find(|(p, _)| p == program) else {
            panic!("a test starts {program:?}: add it to PROGRAMS here and its package to scripts/test");
        };
        if let Some(package) = package {
            assert!(
                packages.contains(*package),
                "a test starts {program:?}, but scripts/test does not install {package:?}"
            );
        }
    }
}
