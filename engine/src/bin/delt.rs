//! The `delt` command line: parses the arguments and hands them to [`delt::cli::run`].

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use delt::cli::Cli;

fn main() -> ExitCode {
    // Panics inside dependencies (decoders fed corrupt files) are caught per statement and
    // reported as one error line; the default hook would print a backtrace first.
    std::panic::set_hook(Box::new(|_| {}));
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match delt::cli::run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every delt error carries its causes in its own message.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
