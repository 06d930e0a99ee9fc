//! Data-parallel collectives: the three operations data-parallel training needs (sum a flat
//! buffer in place across processes, broadcast one, wait for all), behind one trait
//! ([`Collective`]), on the engines clusters already run.
//!
//! - [`Single`]: one process; every operation is a no-op. What a run without a launcher gets.
//! - `Mpi` (feature `mpi`): MPI through the `mpi` crate (rsmpi) on Open MPI or MPICH, between
//!   the processes `mpirun`, `mpiexec` or Slurm's `srun` started.
//! - `Nccl` (feature `nccl`): NCCL through `cudarc`, for buffers in GPU memory, its unique id sent
//!   over MPI; host buffers (loss sums) still go over MPI.
//!
//! [`connect`] picks one from the launcher's environment ([`Launch::detect`]): a process started
//! by a launcher as one of several joins them over MPI; any other process is a [`Single`]. A
//! binary built without MPI that finds itself one of several ranks says so in one line instead of
//! training alone.
//!
//! **Timeouts.** MPI has none: a collective whose peer died or hung waits forever. Every MPI
//! operation here is therefore started non-blocking and polled against a deadline
//! ([`timeout`], `SCAE_DP_TIMEOUT` seconds, default [`DEFAULT_TIMEOUT_S`]); past it the rank
//! prints one line naming itself, the operation and the wait, and ends the whole job with
//! `MPI_Abort` (an MPI library cannot go on after an abandoned collective, and the abort also
//! ends a rank that hung).
//!
//! No tensor crosses this crate: buffers are plain slices (or a GPU address with its length), so
//! the models crate flattens and scatters its own gradients.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "mpi")]
mod mpi_backend;
#[cfg(feature = "nccl")]
mod nccl_backend;

#[cfg(feature = "mpi")]
pub use mpi_backend::Mpi;
#[cfg(feature = "nccl")]
pub use nccl_backend::Nccl;

/// What can go wrong joining or using a collective.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Started as one of several ranks by a launcher, without an MPI build.
    #[error(
        "this process is rank {rank} of {size} (started by {launcher}), but this scae was built \
         without MPI: build it with `cargo xtask build --mpi` (or `cargo build --release \
         --features mpi` with an MPI's mpicc on PATH)"
    )]
    NotBuilt {
        rank: usize,
        size: usize,
        launcher: &'static str,
    },
    /// The launcher's variables do not make sense.
    #[error("{0}")]
    Launcher(String),
    /// MPI or NCCL could not be started or used.
    #[error("{0}")]
    Backend(String),
    /// A GPU buffer given to a collective that sums only host memory.
    #[error("the {0} collective sums host buffers only; GPU gradients need the NCCL build")]
    HostOnly(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A flat buffer to sum or broadcast in place.
#[derive(Debug)]
pub enum Values<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    U8(&'a mut [u8]),
}

impl Values<'_> {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `len` `f32` values in the memory of CUDA device `ordinal`, at `address` (what libtorch's
/// `data_ptr` gives for a contiguous tensor there). The caller keeps that memory alive and
/// unused by other work until the collective returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceBuffer {
    pub address: usize,
    pub len: usize,
    pub ordinal: usize,
}

/// Collective operations among the ranks of one job. Every rank must call the same operations
/// in the same order with buffers of the same length; `what` names the operation in errors
/// ("the gradient sum of step 12").
pub trait Collective: fmt::Debug + Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// This process's rank among those on its machine (the GPU it takes).
    fn local_rank(&self) -> usize;
    /// The number of ranks on this process's machine.
    fn local_size(&self) -> usize;
    /// "single", "MPI" or "NCCL".
    fn backend(&self) -> &'static str;
    /// Replaces every rank's `values` by their element-wise sum over the ranks.
    fn all_reduce_sum(&self, values: Values<'_>, what: &str) -> Result<()>;
    /// Replaces every rank's `values` by those of rank `root`.
    fn broadcast(&self, values: Values<'_>, root: usize, what: &str) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self, what: &str) -> Result<()>;
    /// [`Collective::all_reduce_sum`] on GPU memory (NCCL only).
    fn all_reduce_sum_device(&self, buffer: DeviceBuffer, what: &str) -> Result<()> {
        let _ = (buffer, what);
        Err(Error::HostOnly(self.backend()))
    }
    /// Whether [`Collective::all_reduce_sum_device`] works.
    fn sums_device_memory(&self) -> bool {
        false
    }
    /// Rank 0, the one that reports and writes.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process alone: every operation leaves the buffers as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn local_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "single"
    }
    fn all_reduce_sum(&self, _: Values<'_>, _: &str) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: Values<'_>, _: usize, _: &str) -> Result<()> {
        Ok(())
    }
    fn barrier(&self, _: &str) -> Result<()> {
        Ok(())
    }
}

/// Where a process stands in a job, as its launcher's environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub size: usize,
    /// "Open MPI", "MPICH (PMI)", "Slurm" or "PMIx".
    pub launcher: &'static str,
}

impl Launch {
    /// Reads the variables launchers set: Open MPI's `OMPI_COMM_WORLD_RANK`/`_SIZE`, the PMI
    /// ones of MPICH's Hydra and Intel MPI (`PMI_RANK`/`PMI_SIZE`), PMIx's, and Slurm's for a
    /// task of an `srun` step (`SLURM_PROCID`/`SLURM_STEP_NUM_TASKS`; a batch script's own
    /// shell has no step size and is not a rank). `None` when no launcher started this process.
    ///
    /// # Errors
    /// A launcher's variable that is not a number, or a rank not below the size.
    pub fn detect() -> Result<Option<Self>> {
        Self::from_env(|name| std::env::var(name).ok())
    }

    /// [`Launch::detect`] over any source of variables (tests).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        const SCHEMES: [(&str, &str, &str); 4] = [
            ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
            ("MPICH (PMI)", "PMI_RANK", "PMI_SIZE"),
            ("PMIx", "PMIX_RANK", "PMIX_SIZE"),
            ("Slurm", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"),
        ];
        for (launcher, rank_var, size_var) in SCHEMES {
            let (Some(rank), Some(size)) = (var(rank_var), var(size_var)) else {
                continue;
            };
            let number = |name: &str, value: &str| {
                value.trim().parse::<usize>().map_err(|_| {
                    Error::Launcher(format!(
                        "{name}={value:?} (set by {launcher}) is not a whole number"
                    ))
                })
            };
            let (rank, size) = (number(rank_var, &rank)?, number(size_var, &size)?);
            if size == 0 || rank >= size {
                return Err(Error::Launcher(format!(
                    "{rank_var}={rank} and {size_var}={size} (set by {launcher}): the rank must \
                     be below the size"
                )));
            }
            return Ok(Some(Self {
                rank,
                size,
                launcher,
            }));
        }
        Ok(None)
    }
}

/// The default of [`timeout`], in seconds: long enough for ranks that read a large file at
/// different speeds before their first collective.
pub const DEFAULT_TIMEOUT_S: u64 = 300;

/// How long one collective may wait for the other ranks: `SCAE_DP_TIMEOUT` seconds, else
/// [`DEFAULT_TIMEOUT_S`].
///
/// # Errors
/// `SCAE_DP_TIMEOUT` set to anything but a positive number of seconds.
pub fn timeout() -> Result<Duration> {
    match std::env::var("SCAE_DP_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(DEFAULT_TIMEOUT_S)),
        Ok(s) => match s.trim().parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
            _ => Err(Error::Launcher(format!(
                "SCAE_DP_TIMEOUT={s:?} is not a positive number of seconds"
            ))),
        },
    }
}

/// The collective of this process: MPI among the ranks a launcher started, else [`Single`];
/// with the [`Session`] that ends it. Call it once, before any thread is started (MPI is
/// initialised here).
///
/// # Errors
/// See [`Error`]: a launcher's bad variables, a rank of several without an MPI build, MPI
/// failing to start.
pub fn connect() -> Result<(Arc<dyn Collective>, Session)> {
    let timeout = timeout()?;
    match Launch::detect()? {
        None => Ok((Arc::new(Single), Session::default())),
        Some(launch) if launch.size == 1 => Ok((Arc::new(Single), Session::default())),
        Some(launch) => join(launch, timeout),
    }
}

/// MPI's lifetime in this process: dropping it finalises MPI, which waits for every rank to
/// get there. A rank that fails must [`Session::abort`] instead, or the others would wait for
/// it forever (in a collective, or in the finalisation).
#[derive(Default)]
pub struct Session {
    #[cfg(feature = "mpi")]
    universe: Option<mpi::environment::Universe>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// Whether this process is one rank of several.
    pub fn is_parallel(&self) -> bool {
        #[cfg(feature = "mpi")]
        return self.universe.is_some();
        #[cfg(not(feature = "mpi"))]
        false
    }

    /// Ends this rank's part normally: MPI's finalisation, which waits for every rank to get
    /// here (what dropping the session does).
    pub fn finish(self) {}

    /// Ends the whole job with `code` (`MPI_Abort`); a process alone just exits.
    pub fn abort(self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if self.universe.is_some() {
            mpi_backend::abort_job(code);
        }
        std::process::exit(code)
    }
}

#[cfg(feature = "mpi")]
fn join(launch: Launch, timeout: Duration) -> Result<(Arc<dyn Collective>, Session)> {
    let (mpi, universe) = Mpi::init(&launch, timeout)?;
    Ok((
        Arc::new(mpi),
        Session {
            universe: Some(universe),
        },
    ))
}

#[cfg(not(feature = "mpi"))]
fn join(launch: Launch, _timeout: Duration) -> Result<(Arc<dyn Collective>, Session)> {
    Err(Error::NotBuilt {
        rank: launch.rank,
        size: launch.size,
        launcher: launch.launcher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn launchers_are_read_from_their_variables() {
        let none = Launch::from_env(env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4")]));
        assert_eq!(
            none.expect("valid"),
            None,
            "a batch script's shell is no rank"
        );
        let cases = [
            (
                [("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "4")],
                "Open MPI",
            ),
            ([("PMI_RANK", "1"), ("PMI_SIZE", "4")], "MPICH (PMI)"),
            (
                [("SLURM_PROCID", "1"), ("SLURM_STEP_NUM_TASKS", "4")],
                "Slurm",
            ),
        ];
        for (vars, launcher) in cases {
            let launch = Launch::from_env(env(&vars))
                .expect("valid")
                .expect("a rank");
            assert_eq!(
                launch,
                Launch {
                    rank: 1,
                    size: 4,
                    launcher
                }
            );
        }
    }

    #[test]
    fn bad_launcher_variables_are_one_line_errors() {
        let err =
            Launch::from_env(env(&[("PMI_RANK", "x"), ("PMI_SIZE", "2")])).expect_err("refused");
        assert!(err.to_string().contains("PMI_RANK=\"x\""), "{err}");
        let err =
            Launch::from_env(env(&[("PMI_RANK", "2"), ("PMI_SIZE", "2")])).expect_err("refused");
        assert!(err.to_string().contains("below the size"), "{err}");
    }

    #[test]
    fn one_process_leaves_buffers_alone() {
        let mut v = [1.0f32, 2.0];
        Single
            .all_reduce_sum(Values::F32(&mut v), "a sum")
            .expect("single");
        assert_eq!(v, [1.0, 2.0]);
        let err = Single
            .all_reduce_sum_device(
                DeviceBuffer {
                    address: 0,
                    len: 0,
                    ordinal: 0,
                },
                "x",
            )
            .expect_err("no GPU sums alone");
        assert!(err.to_string().contains("host buffers only"), "{err}");
    }
}
