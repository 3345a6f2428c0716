//! report: JSON lines in, RESULTS.md out.

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Results file (JSON lines).
    pub results: std::path::PathBuf,
}

pub fn run(_a: &Args) -> i32 {
    0
}
