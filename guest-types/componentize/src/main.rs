//! `komoku-componentize CORE.wasm COMPONENT.wasm`: turns a core wasm module carrying
//! wit-bindgen's component-type section (a guest built for `wasm32-unknown-unknown`) into
//! a validated component. The output depends only on the input bytes and the pinned
//! `wit-component` version, so plugin builds stay reproducible.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use wit_component::ComponentEncoder;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("komoku-componentize: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, output] = &args[..] else {
        bail!("usage: komoku-componentize CORE.wasm COMPONENT.wasm");
    };
    let module = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let component = ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{} has no usable component-type section", input.display()))?
        .validate(true)
        .encode()
        .with_context(|| format!("encoding {} as a component", input.display()))?;
    std::fs::write(output, component).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}
