//! The `scae` command: parse, run, and report any error on one line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = scae::cli::Cli::parse();
    // A process one of several ranks of a launcher's job joins the others here (MPI), before
    // any thread starts; only rank 0 logs progress.
    let (root, session) = match scae::join_ranks() {
        Ok(joined) => joined,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    scae::init_logging(root);
    match scae::cli::run(cli) {
        Ok(()) => {
            // MPI's finalisation waits here for the other ranks.
            session.finish();
            ExitCode::SUCCESS
        }
        Err(err) if session.is_parallel() => {
            // The other ranks may be waiting in a collective for this one: end them too.
            eprintln!("error: rank {}: {err:#}", scae::rank());
            session.abort(1)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Training allocates and frees the same multi-megabyte tensors every step. glibc serves blocks
/// above its mmap threshold with fresh `mmap`s and returns freed heap tops to the system, so every
/// step page-faults its buffers in again (a quarter of a VAE epoch on the 13,488-gene benchmark).
/// Blocks up to 32 MiB now come from the heap, and up to 1 GiB of freed heap is kept for reuse.
/// One arena serves every thread: with one per thread (libtorch's OpenMP team, rayon's pool),
/// each kept its own freed blocks, and the full-size benchmark's peak memory grew by a fifth over
/// five epochs (1525 MiB against 1268 MiB with one arena, which also ran 10 % faster).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: `mallopt` only sets thresholds of glibc's allocator; it takes the allocator's own
    // lock and is called before this program allocates anything large or starts a thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
