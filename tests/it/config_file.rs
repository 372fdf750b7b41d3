//! The configuration file on the command line: what a command says when it cannot read it,
//! depending on whether `-c` named it or the default `./portico.toml` was used.

use std::process::Command;

fn check_in(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("check")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run portico check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn missing_file_given_with_c_says_check_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("typo.toml");
    let (code, out) = check_in(dir.path(), &["-c", &missing.display().to_string()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("cannot read {}: no such file", missing.display())),
        "{out}"
    );
    assert!(out.contains("fix: check the path given with -c"), "{out}");
    assert!(
        !out.contains("pass the configuration file with -c"),
        "{out}"
    );
    assert!(!out.contains("os error"), "{out}");
}

#[test]
fn missing_default_file_says_pass_it_with_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out) = check_in(dir.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("cannot read portico.toml: no such file"),
        "{out}"
    );
    assert!(
        out.contains("fix: pass the configuration file with -c FILE"),
        "{out}"
    );
}

#[test]
fn configuration_path_that_is_a_directory_is_said_in_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out) = check_in(dir.path(), &["-c", "."]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("cannot read .: is a directory, not a file"),
        "{out}"
    );
    assert!(!out.contains("os error"), "{out}");
}
