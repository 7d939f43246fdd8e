//! Embeds the built-in key-type components (the repository's `plugins/*.wasm`) in the
//! binary, so `komoku` serves the built-in types wherever it runs; and tells the crate what
//! it is built from, for `komoku --version`:
//!
//! - `KOMOKU_WIT_VERSION`: the version of the WIT package in `wit/key-type.wit`
//!   (`package komoku:types@X.Y.Z;`), the one place it is written;
//! - `KOMOKU_GIT_COMMIT`: the commit checked out, or `$KOMOKU_GIT_COMMIT` when set (a
//!   packager building from a tarball can name it), else `unknown` (no git, no `.git`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let manifest = Path::new(&manifest);
    embed_builtin_plugins(manifest)?;
    println!(
        "cargo:rustc-env=KOMOKU_WIT_VERSION={}",
        wit_version(manifest)?
    );
    println!("cargo:rustc-env=KOMOKU_GIT_COMMIT={}", git_commit(manifest));
    Ok(())
}

fn embed_builtin_plugins(manifest: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let dir = manifest.join("../plugins");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut out = String::from(
        "/// Built-in key-type components: (file name, bytes).\npub const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("plugin file name is not UTF-8")?;
        let path = file.canonicalize()?;
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )?;
    }
    out.push_str("];\n");
    std::fs::write(
        Path::new(&std::env::var("OUT_DIR")?).join("builtin.rs"),
        out,
    )?;
    Ok(())
}

/// `X.Y.Z` from the `package komoku:types@X.Y.Z;` line of `wit/key-type.wit`.
fn wit_version(manifest: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let path = manifest.join("../wit/key-type.wit");
    println!("cargo:rerun-if-changed={}", path.display());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let version = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("package komoku:types@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .ok_or_else(|| {
            format!(
                "{} has no `package komoku:types@X.Y.Z;` line",
                path.display()
            )
        })?;
    Ok(version.trim().to_string())
}

/// The commit checked out (12 hex digits), `$KOMOKU_GIT_COMMIT`, or `unknown`.
fn git_commit(manifest: &Path) -> String {
    println!("cargo:rerun-if-env-changed=KOMOKU_GIT_COMMIT");
    if let Ok(commit) = std::env::var("KOMOKU_GIT_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(manifest)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // A tarball unpacked inside some other repository must not report that one's commit.
    let ours = manifest.join("..").canonicalize().ok();
    let top =
        git(&["rev-parse", "--show-toplevel"]).and_then(|t| Path::new(&t).canonicalize().ok());
    if ours.is_none() || top != ours {
        return "unknown".into();
    }
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // Run again when HEAD moves: HEAD itself (a checkout), the branch it points to (a
    // commit), packed refs. In a worktree these live in different directories; git knows.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    commit
}
