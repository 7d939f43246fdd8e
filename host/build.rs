//! Embeds the built-in key-type components (the repository's `plugins/*.wasm`) in the
//! binary, so `komoku` serves the built-in types wherever it runs.

use std::fmt::Write as _;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let dir = Path::new(&manifest).join("../plugins");
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
