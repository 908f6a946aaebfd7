//! Records the git commit the binary is built from as `ISTHMUS_COMMIT` (`unknown` outside a
//! git checkout), so `isthmus --version`, `/varz` and the loadtest's reports name the code
//! they ran rather than whatever checkout they were started from. Shared by both crates
//! (`loadtest/Cargo.toml` points here).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    println!("cargo:rustc-env=ISTHMUS_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it names (a commit) and
    // packed-refs. In a worktree HEAD lives in its git dir and the branches in the common one.
    let (Some(dir), Some(common)) =
        (git(&["rev-parse", "--git-dir"]), git(&["rev-parse", "--git-common-dir"]))
    else {
        return;
    };
    let (dir, common) = (PathBuf::from(dir), PathBuf::from(common));
    println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
    println!("cargo:rerun-if-changed={}", common.join("packed-refs").display());
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", common.join(branch).display());
    }
}
