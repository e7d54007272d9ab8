use std::io::Write as _;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // .env first, so its values act like the environment the flags fall back to.
    let dotenv = dotenvy::dotenv();
    if let Err(error) = keeper::logging::init() {
        return fail(&error);
    }
    if let Err(dotenvy::Error::LineParse(line, at)) = &dotenv {
        tracing::warn!(line = %line, at, ".env has a line that cannot be parsed; it was ignored");
    }
    let cli = keeper::cli::Cli::parse();
    match keeper::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// The process's last word. Not `eprintln!`: that panics when standard
/// error is closed.
fn fail(error: &dyn std::fmt::Display) -> std::process::ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {error}");
    std::process::ExitCode::FAILURE
}
