//! The `pagewire` binary (placeholder front end until the CLI lands).
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[arg(long, global = true)]
    control: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    Serve(pagewire::config::ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Sub::Serve(a) => pagewire::serve::run(a, cli.control).await,
    }
}
