//! The `peerdrop` binary: parse, dispatch, map errors to exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use serde_json::json;

fn main() -> ExitCode {
    // A closed pipe (`peerdrop list | head`) ends the process quietly, as
    // for other command-line tools, instead of a panic on the next print.
    // SAFETY: restoring the default disposition of SIGPIPE at start-up.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Before anything that could hold a key: no core file, no same-user
    // ptrace (audit F-15).
    cli::harden::no_core_dumps();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let (json, result) = match &cli.command {
        Command::Inspect(a) => (a.json, cli::inspect::run(a)),
        Command::Seal(a) => (a.json, cli::local::run_seal(a)),
        Command::Unseal(a) => (a.json, cli::local::run_unseal(a)),
        Command::Send(a) => (a.json, cli::send::run(a)),
        Command::Receive(a) => (a.json, cli::receive::run(a)),
        Command::Ls(a) => (a.json, cli::ls::run(a)),
        Command::Cat(a) => (false, cli::cat::run(a)),
        Command::Daemon(a) => (false, cli::remote::run_daemon(a)),
        Command::Share(a) => (a.json, cli::remote::share(a)),
        Command::Fetch(a) => (a.json, cli::remote::fetch(a)),
        Command::Pin(a) => (a.json, cli::remote::pin(a)),
        Command::List(a) => (a.json, cli::remote::list(a)),
        Command::Unshare(a) => (a.json, cli::remote::unshare(a)),
        Command::Link(a) => (a.json, cli::remote::link(a)),
        Command::Status(a) => (a.json, cli::remote::status(a)),
        Command::Cancel(a) => (a.job.json, cli::remote::cancel(a)),
        Command::Retry(a) => (a.json, cli::remote::retry(a)),
        Command::Priority(a) => (a.json, cli::remote::priority(a)),
        Command::Ui(a) => (false, cli::ui::run(a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                cli::output::json_line(&json!({"event": "error", "message": format!("{e:#}")}));
            }
            eprintln!("peerdrop: error: {e:#}");
            ExitCode::from(if e.is::<cli::Interrupted>() { 130 } else { 1 })
        }
    }
}
