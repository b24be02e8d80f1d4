use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    taskbox::cli::init_tracing();
    let cli = taskbox::cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
