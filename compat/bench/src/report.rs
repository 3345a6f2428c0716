//! report: JSON lines in, RESULTS.md out.

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Results file (JSON lines).
    pub results: std::path::PathBuf,
    /// The command that produced them (printed in the report).
    #[arg(long, default_value = "compat/bench/run.sh")]
    pub command: String,
}

pub fn run(_a: &Args) -> i32 {
    0
}
