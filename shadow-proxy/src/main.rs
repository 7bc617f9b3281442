//! `tollgate-shadow-proxy`: sits in front of two collector versions during a logging
//! migration. Only the command line exists so far; the proxy itself is not built yet.

use clap::Parser;

/// Mirror collector traffic to a shadow collector and measure old-vs-new logging.
///
/// Not implemented yet: this build only documents the planned command line.
#[derive(Debug, Parser)]
#[command(name = "tollgate-shadow-proxy", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: std::net::SocketAddr,
    /// The collector whose answers clients receive.
    #[arg(long)]
    primary: Option<String>,
    /// The collector that receives a sampled copy.
    #[arg(long)]
    shadow: Option<String>,
}

fn main() {
    let _args = Args::parse();
    eprintln!("tollgate-shadow-proxy: not implemented yet; see --help");
    std::process::exit(2);
}
