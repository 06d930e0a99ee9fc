//! NCCL between GPUs (cudarc), for buffers in GPU memory: one communicator per job, made on the
//! first GPU sum, its unique id sent from rank 0 over MPI.
//!
//! NCCL and the CUDA driver are loaded at run time (cudarc's `dynamic-loading`): the binary
//! builds without a CUDA toolkit, and NCCL comes from the PyTorch wheel's `nvidia-nccl`
//! (`site-packages/nvidia/nccl/lib`, which must be on `LD_LIBRARY_PATH` with a `libnccl.so`
//! there or beside it). The buffer is libtorch's memory: the caller synchronises libtorch's
//! stream before the sum (see `scae_models::parallel`), and the sum runs on a stream of its own,
//! polled against the collective deadline like MPI's.
#![allow(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{Comm, Id, ReduceOp};

use crate::{DeviceBuffer, Error, Result};

/// A NCCL communicator over every rank of the job, on one GPU of each.
pub struct Nccl {
    /// Used by one thread at a time (NCCL's communicators are not thread-safe).
    comm: Mutex<Comm>,
    stream: Arc<CudaStream>,
    ordinal: usize,
}

// SAFETY: the communicator holds raw NCCL handles, which any thread may use as long as no two
// use them at once: every use goes through the `Mutex`. The stream is cudarc's, already `Send`
// and `Sync`.
unsafe impl Send for Nccl {}
// SAFETY: as above; `&Nccl` reaches the communicator only through the `Mutex`.
unsafe impl Sync for Nccl {}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nccl")
            .field("ordinal", &self.ordinal)
            .finish_non_exhaustive()
    }
}

impl Nccl {
    /// Joins every rank's GPU `ordinal`: rank 0 makes the unique id, `broadcast` sends it to the
    /// others (over MPI), and each rank initialises its communicator.
    ///
    /// # Errors
    /// NCCL or the CUDA driver missing or failing.
    pub fn join(
        rank: usize,
        size: usize,
        ordinal: usize,
        broadcast: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        let failed = |what: &str, err: &dyn std::fmt::Debug| {
            Error::Backend(format!("NCCL: {what} failed on rank {rank}: {err:?}"))
        };
        // cudarc panics when a library cannot be loaded: check first, to say so in one line.
        // SAFETY: only loads the libraries to see that they are there.
        let present = unsafe {
            cudarc::driver::sys::is_culib_present() && cudarc::nccl::sys::is_culib_present()
        };
        if !present {
            return Err(Error::Backend(format!(
                "rank {rank}: the CUDA driver or NCCL (libnccl.so) cannot be loaded: add the \
                 PyTorch wheel's nvidia/nccl/lib (with a libnccl.so link to libnccl.so.2) to \
                 LD_LIBRARY_PATH"
            )));
        }
        let mut id = [0u8; 128];
        if rank == 0 {
            let made = Id::new().map_err(|e| failed("ncclGetUniqueId", &e))?;
            for (byte, &c) in id.iter_mut().zip(made.internal()) {
                *byte = c as u8;
            }
        }
        broadcast(&mut id)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (c, &byte) in internal.iter_mut().zip(&id) {
            *c = byte as std::ffi::c_char;
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| failed("opening the GPU", &e))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| failed("making a stream", &e))?;
        let comm = Comm::from_rank(stream.clone(), rank, size, Id::uninit(internal))
            .map_err(|e| failed("ncclCommInitRank", &e))?;
        Ok(Self {
            comm: Mutex::new(comm),
            stream,
            ordinal,
        })
    }

    /// Sums `buffer` over the ranks in place; waits at most `timeout`, then returns what
    /// `expired` makes of the wait (the MPI backend ends the job there).
    pub fn all_reduce_sum(
        &self,
        buffer: DeviceBuffer,
        timeout: Duration,
        expired: impl FnOnce(Duration) -> Error,
    ) -> Result<()> {
        if buffer.ordinal != self.ordinal {
            return Err(Error::Backend(format!(
                "NCCL joined GPU {} but was given memory of GPU {}",
                self.ordinal, buffer.ordinal
            )));
        }
        let failed = |what: &str, err: &dyn std::fmt::Debug| {
            Error::Backend(format!("NCCL: {what} failed: {err:?}"))
        };
        // SAFETY: `buffer` addresses `len` f32 of libtorch's memory on this GPU, kept alive and
        // untouched by the caller until this returns (see `DeviceBuffer`); the slice made from it
        // is leaked below, never freed by cudarc.
        let mut slice = unsafe {
            self.stream
                .upgrade_device_ptr::<f32>(buffer.address as u64, buffer.len)
        };
        let summed = self
            .comm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .all_reduce_in_place(&mut slice, &ReduceOp::Sum);
        let done = self
            .stream
            .record_event(None)
            .map_err(|e| failed("recording an event", &e));
        slice.leak();
        summed.map_err(|e| failed("ncclAllReduce", &e))?;
        let done = done?;
        let start = Instant::now();
        while !done.is_complete() {
            let waited = start.elapsed();
            if waited > timeout {
                return Err(expired(waited));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(())
    }
}
