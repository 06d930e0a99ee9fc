//! Parallel loops on the OpenMP threads libtorch already runs.
//!
//! libtorch's CPU kernels run on a GNU OpenMP (`libgomp`) team. Between two parallel regions
//! its threads spin for a while before they sleep, so a second pool (rayon) started right after
//! a libtorch op finds the cores busy with spinning threads: on a two-core machine that cost a
//! fifth of a VAE epoch. [`for_each`] therefore runs its work as an OpenMP parallel region of
//! that same team, through `GOMP_parallel` (the entry point `#pragma omp parallel` compiles to),
//! looked up at run time in the loaded libraries. Where it is absent (a libtorch built without
//! GNU OpenMP) the work goes to rayon instead. The team has libtorch's thread count
//! (`tch::set_num_threads`) when called from the thread that set it.
//!
//! Work is a list of parts taken one at a time from a shared queue (dynamic scheduling), so
//! parts may be uneven; each part is handed out exactly once.

use std::ffi::{c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Mutex, OnceLock, PoisonError};

/// `void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)`.
type GompParallel =
    unsafe extern "C" fn(Option<unsafe extern "C" fn(*mut c_void)>, *mut c_void, c_uint, c_uint);

/// Runs `f` on every part, in parallel, and returns when all are done. A panic in `f` is
/// re-raised here once the other threads have finished.
pub fn for_each<T: Send>(parts: Vec<T>, f: impl Fn(T) + Sync) {
    if parts.len() <= 1 {
        parts.into_iter().for_each(f);
        return;
    }
    let queue = Mutex::new(parts.into_iter());
    let panicked = Mutex::new(None);
    let work = || {
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some(part) = next else { break };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(part))) {
                *panicked.lock().unwrap_or_else(PoisonError::into_inner) = Some(payload);
                break;
            }
        }
    };
    match gomp_parallel() {
        Some(parallel) => run_region(parallel, &work),
        None => {
            rayon::broadcast(|_| work());
        }
    }
    if let Some(payload) = panicked
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        resume_unwind(payload);
    }
}

/// Whether [`for_each`] runs on libtorch's OpenMP team (else on rayon).
pub fn on_openmp() -> bool {
    gomp_parallel().is_some()
}

/// `GOMP_parallel` of a loaded `libgomp`, looked up once.
fn gomp_parallel() -> Option<GompParallel> {
    static FOUND: OnceLock<Option<GompParallel>> = OnceLock::new();
    *FOUND.get_or_init(lookup)
}

#[allow(unsafe_code)]
fn lookup() -> Option<GompParallel> {
    // SAFETY: `dlsym` with `RTLD_DEFAULT` searches the libraries already loaded; the name is a
    // NUL-terminated literal. A non-null result is the address of libgomp's `GOMP_parallel`,
    // whose C signature is `GompParallel` (libgomp's ABI since GCC 4.9).
    unsafe {
        let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"GOMP_parallel".as_ptr());
        (!symbol.is_null()).then(|| std::mem::transmute::<*mut c_void, GompParallel>(symbol))
    }
}

/// Runs `work` once on each thread of an OpenMP team of the default size.
#[allow(unsafe_code)]
fn run_region(parallel: GompParallel, work: &(dyn Fn() + Sync)) {
    unsafe extern "C" fn trampoline(data: *mut c_void) {
        // SAFETY: `data` is the `&&dyn Fn` passed below, alive until `GOMP_parallel` returns,
        // which is after every thread of the team has left this function. `work` catches
        // panics itself, so none unwinds into C.
        let work = unsafe { &*data.cast::<&(dyn Fn() + Sync)>() };
        work();
    }
    let mut data: &(dyn Fn() + Sync) = work;
    // SAFETY: `trampoline` matches the callback type; `data` outlives the call, and `work` is
    // `Sync`, so running it on several threads at once is sound. 0 threads asks for the
    // default team size; flags 0 is a plain region.
    unsafe {
        parallel(Some(trampoline), (&raw mut data).cast::<c_void>(), 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_part_runs_exactly_once() {
        let mut out = vec![0usize; 1000];
        let parts: Vec<(usize, &mut usize)> = out.iter_mut().enumerate().collect();
        let calls = AtomicUsize::new(0);
        for_each(parts, |(i, slot)| {
            *slot += i * 2;
            calls.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(calls.load(Ordering::Relaxed), 1000);
        assert!(out.iter().enumerate().all(|(i, &v)| v == i * 2));
    }

    #[test]
    fn a_panic_in_a_part_reaches_the_caller() {
        let caught = catch_unwind(|| {
            for_each((0..64).collect(), |i: i32| {
                assert!(i != 40, "part 40 fails");
            })
        });
        assert!(caught.is_err());
    }
}
