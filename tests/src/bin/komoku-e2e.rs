//! The real `komoku` command line, built inside this package so the end-to-end tests can
//! start it as a process (and kill it with SIGKILL).

fn main() -> anyhow::Result<()> {
    komoku::cli::main()
}
