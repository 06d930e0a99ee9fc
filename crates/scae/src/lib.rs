//! scae: autoencoders for single-cell RNA-seq counts.
//!
//! This crate holds the command line ([`cli`]) and the study pipelines
//! ([`study`]) that answer the assignment's questions. It composes the library
//! crates: `scae-io` (files), `scae-models` (tch), `scae-eval` (metrics on
//! ndarray), `scae-viz` (figures) and `scae-sim` (the default data). The study
//! pipelines own `configs/` and `results/`.

pub mod card;
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
pub fn init_logging(root: bool) {
    // The other ranks of a data-parallel job say only what goes wrong.
    let level = if root { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .compact()
        .init();
}

/// Joins the other ranks when a launcher (`mpirun`, `mpiexec`, `srun`) started this process as
/// one of several (see `scae_dp::connect`); every trainer then trains data-parallel. Returns
/// whether this process is rank 0 (the one that reports and writes results) and the session to
/// end: dropped at a normal exit, aborted (the whole job) at an error.
///
/// # Errors
/// A launcher's environment that does not make sense, a binary built without MPI started as one
/// of several ranks, or MPI failing to start.
pub fn join_ranks() -> anyhow::Result<(bool, scae_dp::Session)> {
    let (group, session) = scae_dp::connect()?;
    let root = group.is_root();
    if group.size() > 1 {
        scae_models::parallel::join(group)?;
    }
    Ok((root, session))
}

/// This process's rank in its data-parallel job (0 alone).
pub fn rank() -> usize {
    scae_models::parallel::group().rank()
}

/// Whether this process writes results: a process alone, or rank 0 of a data-parallel job (the
/// other ranks train with it and write nothing).
pub fn writes_results() -> bool {
    scae_models::parallel::group().is_root()
}
