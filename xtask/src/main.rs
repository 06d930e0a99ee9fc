//! Project automation for scae (`cargo xtask <task>`).
//!
//! xtask orchestrates and never links libtorch: it installs PyTorch's libtorch
//! into a per-user cache (see [`torch`]), builds the release binaries with the
//! environment that finds it, and runs them. Every task is a module with a
//! `run(..) -> anyhow::Result<()>`, dispatched by the one `match` below.

mod bench;
mod fuzz;
mod gpu_check;
mod install;
mod mpi;
mod project;
mod study;
mod test;
mod torch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "scae project tasks", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install libtorch (PyTorch 2.11.0 from PyPI) into the shared cache, if needed.
    Setup {
        /// Remove the cached installation and install again.
        #[arg(long)]
        force: bool,
        /// Also set up MPI for data-parallel training: the cluster's MPI when one is loaded
        /// (`mpicc` on PATH), else MPICH and libclang from PyPI into the same cache.
        #[arg(long)]
        mpi: bool,
    },
    /// Build the release binaries (runs setup first when needed).
    Build {
        /// With data-parallel training under mpirun/srun (the `mpi` feature; sets up MPI).
        #[arg(long)]
        mpi: bool,
    },
    /// Build the release scae and copy it to $SCAE_INSTALL_DIR, else ~/.local/bin, so it runs
    /// from any folder with no environment variables (configs built in; results under ./results).
    Install,
    /// Generate the default data (data/counts.npy, data/counts_raw.npy, data/labels.txt).
    Data {
        /// Extra arguments passed to `scae data`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Q1: train the latent-10 and latent-50 autoencoders (results/q1/).
    Q1 {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Q2: reconstruction error and convergence of the Q1 models (results/q2/).
    Q2 {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Q3: PCA and t-SNE of original vs reconstructed data (results/q3/).
    Q3 {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Q4: the autoencoder with a 2-D latent space (results/q4/).
    Q4 {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Q5: the nonzero MSE loss against Q2's MSE model (results/q5/).
    Q5 {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// One VAE on raw counts (configs/vae.toml; results/vae/).
    Vae {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The scVAE study's synthetic check: a Poisson VAE recovers 10 known rates (results/vae-synth/).
    VaeSynth {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The GMVAE's synthetic check: a 5-component Poisson mixture and the ablation of what
    /// regularises q(y | x) (results/gmvae-synth/).
    GmvaeSynth {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The GMVAE on labelled raw counts: its clusters against k-means on the GMVAE latent, on an
    /// NB VAE's latent and on PCA, and with K found against Leiden, over 3 seeds
    /// (results/gmvae-real/); on data/counts_raw.npy unless --data names labelled raw counts
    /// (.npy or a 10x folder); `--all DIR`: every labelled dataset under DIR and one table
    /// (results/gmvae-real-all/).
    GmvaeReal {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Batch integration (configs/integrate.toml): unintegrated PCA, the NB VAE without and with
    /// the batch and the GMVAE with it, scored by scIB's metrics over 3 seeds
    /// (results/integrate/); `--data X.h5ad --batch-key KEY --labels-key KEY`, or `--all DIR`
    /// over every such .h5ad under DIR (results/integrate-all/).
    Integrate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// What each choice of the GMVAE's recipe adds (configs/gmvae-ablation.toml), over every
    /// labelled dataset of a folder (`--all ../shared/data`) and 3 seeds
    /// (results/gmvae-ablation/).
    GmvaeAblation {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The scVAE study's likelihood comparison: Poisson, NB, ZIP, ZINB (results/vae-likelihoods/);
    /// on data/counts_raw.npy unless --data names raw counts (.npy or a 10x folder).
    VaeLikelihoods {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole study: Q1 to Q5 in turn, then results/REPORT.md; on the default data unless
    /// --data names a .npy file or a 10x folder.
    All {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set-up, then the whole test suite (`cargo test --workspace --release`).
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks against the named peer, measured in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
    /// Fuzz the file readers with cargo-fuzz from the seed corpus in fuzz/corpus/ (nightly
    /// toolchain and `cargo install cargo-fuzz --locked`); one summary line per target.
    Fuzz {
        /// A target (npy, labels, mtx) or `all`.
        target: String,
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Assemble gpu-check/: the release binary, configs, the PyTorch peer and run.sh, which
    /// trains the AE, VAE and GMVAE on the CPU and on CUDA on a machine with PyTorch but no Rust.
    GpuCheck {
        /// Then run it here, on the CPU only (GPU_CHECK_DEVICES=cpu).
        #[arg(long)]
        cpu_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup { force, mpi } => torch::run(force).and_then(|_| {
            if mpi {
                mpi::run(force).map(|_| ())
            } else {
                Ok(())
            }
        }),
        Task::Build { mpi } => if mpi {
            mpi::ensure().map(Some)
        } else {
            Ok(None)
        }
        .and_then(|mpi| project::build_release_with(mpi.as_ref()))
        .map(|_| ()),
        Task::Install => install::run(),
        Task::Data { args } => study::run_data(&args),
        Task::Q1 { args } => study::run("q1", &args),
        Task::Q2 { args } => study::run("q2", &args),
        Task::Q3 { args } => study::run("q3", &args),
        Task::Q4 { args } => study::run("q4", &args),
        Task::Q5 { args } => study::run("q5", &args),
        Task::All { args } => study::run_all(&args),
        Task::Vae { args } => study::run("vae", &args),
        Task::VaeSynth { args } => study::run_synthetic("vae-synth", &args),
        Task::VaeLikelihoods { args } => study::run("vae-likelihoods", &args),
        Task::GmvaeSynth { args } => study::run_synthetic("gmvae-synth", &args),
        Task::GmvaeReal { args } => study::run("gmvae-real", &args),
        Task::GmvaeAblation { args } => study::run("gmvae-ablation", &args),
        Task::Integrate { args } => study::run("integrate", &args),
        Task::Test { args } => test::run(&args),
        Task::Bench { which } => bench::run(which),
        Task::GpuCheck { cpu_run } => gpu_check::run(cpu_run),
        Task::Fuzz { target, seconds } => fuzz::run(&target, seconds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<study::ChildFailed>() {
            // The binary already printed its one-line error.
            Some(study::ChildFailed(code)) => ExitCode::from(u8::try_from(*code).unwrap_or(1)),
            None => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}
