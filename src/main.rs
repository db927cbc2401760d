//! The `loghogd` binary: parse flags, hand over to [`loghogd::daemon`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    loghogd::daemon::main(loghogd::cli::Args::parse())
}
