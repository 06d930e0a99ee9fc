//! The MPI backend (rsmpi), with a deadline on every operation.

use std::time::{Duration, Instant};

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::request::{Request, Scope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::Buffer;

use crate::{Collective, Error, Launch, Result, Values};

/// The ranks of `MPI_COMM_WORLD`.
pub struct Mpi {
    /// NCCL over the same ranks, made on the first sum of GPU memory (every rank reaches it at
    /// the same step).
    #[cfg(feature = "nccl")]
    nccl: std::sync::OnceLock<std::result::Result<crate::Nccl, String>>,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    timeout: Duration,
}

impl Mpi {
    /// Initialises MPI (one thread calls it: `MPI_THREAD_FUNNELED`) and checks that MPI sees the
    /// rank and size the launcher announced.
    ///
    /// # Errors
    /// MPI already initialised, or a world that is not the launcher's.
    pub fn init(launch: &Launch, timeout: Duration) -> Result<(Self, Universe)> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| Error::Backend("MPI was already initialised in this process".into()))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if (rank, size) != (launch.rank, launch.size) {
            return Err(Error::Backend(format!(
                "{} announced rank {} of {}, but MPI ({}) sees rank {rank} of {size}: is this \
                 scae built against the MPI that launched it?",
                launch.launcher,
                launch.rank,
                launch.size,
                library_version()
            )));
        }
        let node = world.split_shared(rank as i32);
        let (local_rank, local_size) = (node.rank() as usize, node.size() as usize);
        tracing::debug!(rank, size, local_rank, local_size, library = %library_version(), "MPI ready");
        let mpi = Self {
            #[cfg(feature = "nccl")]
            nccl: std::sync::OnceLock::new(),
            rank,
            size,
            local_rank,
            local_size,
            timeout,
        };
        Ok((mpi, universe))
    }

    /// Waits for `request` until the deadline; past it, says so and aborts the job.
    fn wait<'a, D: ?Sized, S: Scope<'a>>(&self, mut request: Request<'a, D, S>, what: &str) {
        let start = Instant::now();
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            let waited = start.elapsed();
            if waited > self.timeout {
                self.abort(what, waited);
            }
            // MPI progresses only inside its calls: poll often while a reply is likely soon,
            // then give the core away between polls.
            if waited < Duration::from_millis(50) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    fn abort(&self, what: &str, waited: Duration) -> ! {
        let line = format!(
            "error: rank {} of {}: {what} waited {:.0} s for the other ranks (SCAE_DP_TIMEOUT); \
             a rank died or hung, so the job ends here\n",
            self.rank,
            self.size,
            waited.as_secs_f64()
        );
        // One write, so that the launcher does not interleave it with another rank's output.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        abort_job(3)
    }
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("local_size", &self.local_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Ends every rank of the job with `code` (`MPI_Abort`), a second after this rank's last words:
/// the launcher forwards a rank's output on its own time, and an abort that came first would
/// lose them.
pub(crate) fn abort_job(code: i32) -> ! {
    let _ = std::io::Write::flush(&mut std::io::stderr());
    std::thread::sleep(Duration::from_secs(1));
    SimpleCommunicator::world().abort(code)
}

/// The MPI library's own name and version (`MPI_Get_library_version`), first line.
fn library_version() -> String {
    mpi::environment::library_version()
        .map(|v| v.lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_else(|_| "unknown MPI".into())
}

fn all_reduce<T>(mpi: &Mpi, values: &mut [T], what: &str)
where
    T: Copy,
    [T]: Buffer + mpi::traits::BufferMut,
{
    let send = values.to_vec();
    let world = SimpleCommunicator::world();
    mpi::request::scope(|scope| {
        let request =
            world.immediate_all_reduce_into(scope, &send[..], values, SystemOperation::sum());
        mpi.wait(request, what);
    });
}

fn broadcast<T>(mpi: &Mpi, values: &mut [T], root: usize, what: &str)
where
    [T]: mpi::traits::BufferMut,
{
    let world = SimpleCommunicator::world();
    let root = world.process_at_rank(root as i32);
    mpi::request::scope(|scope| {
        let request = root.immediate_broadcast_into(scope, values);
        mpi.wait(request, what);
    });
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn local_size(&self) -> usize {
        self.local_size
    }
    fn backend(&self) -> &'static str {
        "MPI"
    }

    fn all_reduce_sum(&self, values: Values<'_>, what: &str) -> Result<()> {
        match values {
            Values::F32(v) => all_reduce(self, v, what),
            Values::F64(v) => all_reduce(self, v, what),
            Values::U8(_) => {
                return Err(Error::Backend(format!("{what}: bytes are not summed")));
            }
        }
        Ok(())
    }

    fn broadcast(&self, values: Values<'_>, root: usize, what: &str) -> Result<()> {
        if root >= self.size {
            return Err(Error::Backend(format!(
                "{what}: root {root} is not a rank of {}",
                self.size
            )));
        }
        match values {
            Values::F32(v) => broadcast(self, v, root, what),
            Values::F64(v) => broadcast(self, v, root, what),
            Values::U8(v) => broadcast(self, v, root, what),
        }
        Ok(())
    }

    #[cfg(feature = "nccl")]
    fn all_reduce_sum_device(&self, buffer: crate::DeviceBuffer, what: &str) -> Result<()> {
        let nccl = self.nccl.get_or_init(|| {
            crate::Nccl::join(self.rank, self.size, buffer.ordinal, |id| {
                self.broadcast(Values::U8(id), 0, "the broadcast of NCCL's unique id")
            })
            .map_err(|e| e.to_string())
        });
        let nccl = nccl.as_ref().map_err(|e| Error::Backend(e.clone()))?;
        nccl.all_reduce_sum(buffer, self.timeout, |waited| self.abort(what, waited))
    }

    #[cfg(feature = "nccl")]
    fn sums_device_memory(&self) -> bool {
        true
    }

    fn barrier(&self, what: &str) -> Result<()> {
        let world = SimpleCommunicator::world();
        self.wait(world.immediate_barrier(), what);
        Ok(())
    }
}
