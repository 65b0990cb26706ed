//! Writes the man pages of `signalbox` and of each subcommand (`signalbox.1`,
//! `signalbox-serve.1`, `signalbox-user-add.1`, …) from the clap definitions in `src/cli.rs`,
//! so the pages in the Debian package never drift from the real flags.
//!
//! Usage: `cargo run --release --example gen-man -- OUT_DIR` (packaging/build-deb.sh does it).
//! An example rather than a subcommand so that `clap_mangen` stays a dev-dependency and out
//! of the shipped binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen-man OUT_DIR");
        return ExitCode::from(2);
    };
    let result = std::fs::create_dir_all(&out)
        .and_then(|()| clap_mangen::generate_to(signalbox::cli::Cli::command(), &out));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-man: writing man pages to {}: {e}", out.display());
            ExitCode::from(1)
        }
    }
}
