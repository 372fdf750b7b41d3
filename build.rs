//! Records the commit the binary is built from, for `portico --version`.
//!
//! `PORTICO_COMMIT` in the build's environment wins (a build from a source archive, which
//! has no git); otherwise `git rev-parse --short HEAD`, with `-dirty` when tracked files
//! differ from it; otherwise "unknown". Nothing here may fail the build.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PORTICO_COMMIT");
    let commit = match std::env::var("PORTICO_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => from_git().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=PORTICO_COMMIT={commit}");
}

fn from_git() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Run again when HEAD moves: HEAD itself (a checkout), the branch it points at (a
    // commit), and the packed refs (a branch ref may live there). In a worktree these are
    // outside the source tree, so ask git where they are.
    for file in ["HEAD", "packed-refs"] {
        watch(git(&["rev-parse", "--git-path", file]));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", &branch]));
    }
    // The index changes with every `git add` and commit: a tree made clean or dirty again
    // then gets a fresh mark. (Edits not yet added are seen on the next build that runs
    // this script, not on every edit: rebuilding for each would cost every build.)
    watch(git(&["rev-parse", "--git-path", "index"]));
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

fn watch(path: Option<String>) {
    if let Some(p) = path {
        if Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
