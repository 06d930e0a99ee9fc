//! Lets the `scae` binary find libtorch on its own and use the GPU when there is one.
//!
//! xtask builds with `LIBTORCH` set to the cached PyTorch's `torch/` folder.
//! We record its `lib/` as the binary's run path, so `target/release/scae`
//! runs with no variable exported by hand (an `LD_LIBRARY_PATH`, as on the GPU
//! machine, still takes precedence). The linker drops `libtorch_cuda` when
//! no symbol of it is referenced, and tch then never sees the GPU; linking it
//! with `--no-as-needed` is tch's known fix. An MPI build (feature `mpi`) records the MPI
//! library's folder the same way when xtask names it (`SCAE_MPI_LIB`, the MPI it installed from
//! PyPI); a cluster's own MPI is found through its module's `LD_LIBRARY_PATH`.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=SCAE_MPI_LIB");
    if std::env::var_os("CARGO_FEATURE_MPI").is_some()
        && let Some(mpi) = std::env::var_os("SCAE_MPI_LIB")
    {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,-rpath,{}",
            Path::new(&mpi).display()
        );
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = Path::new(&libtorch).join("lib");
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
