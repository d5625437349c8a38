//! The commit a build comes from, when built from a git checkout: `herald --version` and the
//! `herald_build_info` metric name it. Read from `.git` directly (no `git` needed); empty for
//! a build from a source archive.

use std::path::Path;

fn main() {
    let git = Path::new(".git");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    let commit = head(git).unwrap_or_default();
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{reference}");
    }
    println!("cargo:rustc-env=HERALD_COMMIT={commit}");
}

/// The commit `HEAD` names: directly, through a ref file, or through `packed-refs`.
fn head(git: &Path) -> Option<String> {
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return Some(short(head));
    };
    if let Ok(id) = std::fs::read_to_string(git.join(reference)) {
        return Some(short(id.trim()));
    }
    let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
    packed
        .lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(_, name)| *name == reference)
        .map(|(id, _)| short(id))
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}
