//! scae: autoencoders for single-cell RNA-seq counts.
//!
//! This crate holds the command line ([`cli`]) and the study pipelines
//! ([`study`]) that answer the assignment's questions. It composes the library
//! crates: `scae-io` (files), `scae-models` (tch), `scae-eval` (metrics on
//! ndarray), `scae-viz` (figures) and `scae-sim` (the default data). The study
//! pipelines own `configs/` and `results/`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod embed_tools;
pub mod progress;
pub mod provenance;
pub mod study;

/// Installs the log subscriber (binaries only): `RUST_LOG` filters, `info` by default. Colours
/// only on a terminal: logs redirected to a file or a pipe carry no escape sequences.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .compact()
        .init();
}
