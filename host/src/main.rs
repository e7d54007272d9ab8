use std::io::Write as _;

fn main() -> std::process::ExitCode {
    keeper::platform::fewer_malloc_arenas();
    // .env first, so its values act like the environment the flags fall back
    // to. SAFETY: nothing has started a thread yet (the runtime starts below).
    let environment = unsafe { keeper::config::Environment::load(&keeper::cli::env_vars()) };
    if let Err(error) = keeper::logging::init() {
        return fail(&error);
    }
    environment.log();
    let cli = match keeper::cli::parse(environment) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error}");
            // As clap does for a bad flag: the user's to fix.
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    match runtime.block_on(keeper::cli::run(cli)) {
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
