use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // .env first, so its values act like the environment the flags fall back to.
    let dotenv = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("KEEPER_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    if let Err(dotenvy::Error::LineParse(line, at)) = &dotenv {
        tracing::warn!(line = %line, at, ".env has a line that cannot be parsed; it was ignored");
    }
    let cli = keeper::cli::Cli::parse();
    match keeper::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
