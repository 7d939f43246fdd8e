//! The `komoku` server binary; see [`komoku::cli`].

fn main() -> anyhow::Result<()> {
    komoku::cli::main()
}
