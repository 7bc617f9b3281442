//! `tollgate-loadtest`: realistic event traffic against a collector and a reconciliation
//! of what was acknowledged against what was logged. Only the command line exists so
//! far; the generator is not built yet.

use clap::Parser;

/// Load-test a Tollgate collector and prove nothing was lost or double counted.
///
/// Not implemented yet: this build only documents the planned command line.
#[derive(Debug, Parser)]
#[command(name = "tollgate-loadtest", version)]
struct Args {
    /// Collector base URL (loopback only), e.g. http://127.0.0.1:8080.
    #[arg(long)]
    target: Option<String>,
    /// Write key to send with every request.
    #[arg(long, default_value = "dev")]
    write_key: String,
}

fn main() {
    let _args = Args::parse();
    eprintln!("tollgate-loadtest: not implemented yet; see --help");
    std::process::exit(2);
}
