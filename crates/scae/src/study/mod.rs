//! The study pipelines: each question reads its config (`--config`, else `configs/` under
//! `--root`, else the copy built into the binary), validates the data, trains or reuses models
//! and writes figures, numbers and a report under `results/<question>/` (of the current folder
//! unless `--root` or `--out` says otherwise).
//!
//! Results are built in a staging folder beside the destination and renamed
//! into place at the end, so a failed run leaves no half-written results and
//! bad input leaves `results/` untouched.

pub mod ae;
pub mod embed;
pub mod gmvae_ablation;
pub mod gmvae_real;
pub mod gmvae_synth;
pub mod gmvae_table;
pub mod integrate;
pub mod q1;
pub mod q2;
pub mod q3;
pub mod q4;
pub mod q5;
pub mod report;
pub mod vae;
pub mod vae_likelihoods;
pub mod vae_synth;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use scae_io::DenseRows;
use scae_models::{ComputeDevice, DeviceChoice, Split};

use self::ae::TrainedAe;
use crate::config::{AeStudy, resolve_threads};
use crate::data::Dataset;

/// Options every question takes.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Project folder holding the default data/ and results/ (and configs/ that override the
    /// built-in ones); default: the current folder.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Config file (default: configs/<question>.toml under the root when it exists, else the
    /// built-in copy of the shipped one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log-normalised expression: a .npy matrix (cells x genes) or a folder holding counts.npy;
    /// or raw counts as a 10x Genomics matrix folder, a Cell Ranger .h5 or an AnnData .h5ad of
    /// integers, normalised here (each cell scaled to 10,000, log1p) and reduced to the
    /// --top-genes most variable genes (an .h5ad matrix that is not integer is used as it is).
    /// Default: data/counts.npy under the root (written by `scae data`).
    // The studies on raw counts replace this help with their own (`mut_arg` in cli.rs).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// For raw counts: how many of the most variable genes to keep (Q1-Q5 and `train`: 1000 by
    /// default; the count studies: their config's `top_genes`, every gene for `scae vae`). Refused
    /// for an input that is not counts.
    #[arg(long)]
    pub top_genes: Option<usize>,
    /// One label per cell (default: labels.txt beside the data, when present).
    #[arg(long, conflicts_with = "labels_key")]
    pub labels: Option<PathBuf>,
    /// For an .h5ad file: the matrix to read, `X` by default; `raw` for raw.X, else the name of
    /// a layer (e.g. `counts`).
    #[arg(long)]
    pub layer: Option<String>,
    /// For an .h5ad file: the obs column holding each cell's label (e.g. `cell_type`).
    #[arg(long)]
    pub labels_key: Option<String>,
    /// Output folder (default: results/<question> under the root, so ./results/<question>
    /// without --root); replaced when the run succeeds.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device: auto (CUDA when available), cpu or cuda; overrides the config.
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// libtorch CPU threads (0 = every core); overrides the config.
    #[arg(long)]
    pub threads: Option<usize>,
}

impl RunArgs {
    /// The config of `question`: `--config`, else `configs/<question>.toml` under the root when
    /// it exists, else the built-in copy (see [`crate::config::config_path`]).
    pub fn config_path(&self, question: &str) -> PathBuf {
        crate::config::config_path(self.config.as_deref(), &self.root, question)
    }

    /// Where the results of `question` go: `--out`, else `results/<question>` under the root.
    pub fn out_dir(&self, question: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| self.root.join("results").join(question))
    }

    /// Reads and validates the data of a command that does not use labels (`train`): `--labels`
    /// and `--labels-key` are refused rather than read and ignored.
    pub fn load_unlabelled_data(&self, command: &str) -> Result<Dataset> {
        for (flag, given) in [
            ("--labels", self.labels.is_some()),
            ("--labels-key", self.labels_key.is_some()),
        ] {
            if given {
                anyhow::bail!(
                    "{flag}: scae {command} does not use labels (Q3, Q4 and Q5 score against them)"
                );
            }
        }
        self.load_data()
    }

    /// Reads and validates the data (before anything is written).
    pub fn load_data(&self) -> Result<Dataset> {
        let data = self
            .data
            .clone()
            .unwrap_or_else(|| crate::data::default_data(&self.root));
        if self.data.is_none() && !data.exists() {
            anyhow::bail!(
                "{}: the default data is missing; pass your own with --data, or make the default \
                 (simulated) data set with `scae data`",
                data.display()
            );
        }
        let top_genes = self
            .top_genes
            .unwrap_or(scae_io::preprocess::DEFAULT_N_TOP_GENES);
        let dataset = Dataset::load_from(
            &data,
            self.labels.as_deref(),
            top_genes,
            &self.h5ad_options(),
        )?;
        if let Some(n) = self.top_genes
            && dataset.source.top_genes.is_none()
        {
            anyhow::bail!(
                "--top-genes {n}: {} holds log-normalised values, not counts, so its genes are \
                 used as they are",
                data.display()
            );
        }
        Ok(dataset)
    }

    /// What `--layer` and `--labels-key` ask of an `.h5ad` file.
    pub fn h5ad_options(&self) -> scae_io::H5adOptions {
        scae_io::H5adOptions {
            layer: self.layer.clone(),
            labels_key: self.labels_key.clone(),
            obs_keys: Vec::new(),
        }
    }

    /// Chooses the device once and sets libtorch's thread count.
    pub fn setup_torch(
        &self,
        device: DeviceChoice,
        threads: usize,
    ) -> Result<(ComputeDevice, usize)> {
        setup_compute(
            self.device.unwrap_or(device),
            self.threads.unwrap_or(threads),
        )
    }
}

/// Chooses the device and sets the thread count of libtorch and of the rayon pool behind PCA,
/// t-SNE and the scores (0 threads: every core).
pub fn setup_compute(device: DeviceChoice, threads: usize) -> Result<(ComputeDevice, usize)> {
    let threads = resolve_threads(threads);
    let device = ComputeDevice::setup(device, threads)?;
    // A second call in one process (tests) keeps the first pool, which is harmless.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    tracing::info!(%device, threads, "libtorch ready");
    Ok((device, threads))
}

/// Options of the studies that simulate their own data (`vae-synth`, `gmvae-synth`): those of
/// [`RunArgs`] without the ones that name or shape a data file.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Project folder holding results/ (and configs/ that override the built-in ones); default:
    /// the current folder.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Config file (default: configs/<study>.toml under the root when it exists, else the
    /// built-in copy of the shipped one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output folder (default: results/<study> under the root); replaced when the run succeeds.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device: auto (CUDA when available), cpu or cuda; overrides the config.
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// libtorch CPU threads (0 = every core); overrides the config.
    #[arg(long)]
    pub threads: Option<usize>,
}

impl SimArgs {
    /// The same options as [`RunArgs`] that name no data.
    pub fn run_args(&self) -> RunArgs {
        RunArgs {
            root: self.root.clone(),
            config: self.config.clone(),
            data: None,
            top_genes: None,
            labels: None,
            layer: None,
            labels_key: None,
            out: self.out.clone(),
            device: self.device,
            threads: self.threads,
        }
    }
}

/// What every study (Q1-Q5, `scae train`, `scae vae` and the count studies) starts from and
/// ends with, once: the clock started with the command, libtorch set up, a staging folder, and
/// at the end the report, `metrics.json` with the provenance, and the commit of the folder (by
/// rank 0 alone in a data-parallel job, [`Staging::commit`]).
#[derive(Debug)]
pub struct Run {
    clock: crate::provenance::RunClock,
    question: &'static str,
    root: PathBuf,
    pub device: ComputeDevice,
    pub threads: usize,
    out: Staging,
}

impl Run {
    /// Sets up libtorch (the command line's `--device` and `--threads` over the config's) and
    /// opens the staging folder of `question`: call it once the config and the data are read and
    /// checked, so bad input is reported before anything is written. `clock` started with the run.
    pub fn start(
        args: &RunArgs,
        clock: crate::provenance::RunClock,
        question: &'static str,
        device: DeviceChoice,
        threads: usize,
    ) -> Result<Self> {
        Self::start_in(args, clock, question, question, device, threads)
    }

    /// [`Run::start`] with the results in the folder `folder` of the results (`--out` aside).
    pub fn start_in(
        args: &RunArgs,
        clock: crate::provenance::RunClock,
        question: &'static str,
        folder: &str,
        device: DeviceChoice,
        threads: usize,
    ) -> Result<Self> {
        let (device, threads) = args.setup_torch(device, threads)?;
        let out = Staging::new(&args.out_dir(folder))?;
        Ok(Self {
            clock,
            question,
            root: args.root.clone(),
            device,
            threads,
            out,
        })
    }

    /// Where files go until [`Run::finish`].
    pub fn path(&self) -> &Path {
        self.out.path()
    }

    /// The staging folder of the results.
    pub fn staging(&self) -> &Staging {
        &self.out
    }

    /// The provenance of the run so far, to save in `metrics.json`.
    pub fn provenance(
        &self,
        seed: u64,
        data: &crate::data::DataSource,
    ) -> crate::provenance::Provenance {
        self.clock.finish(
            self.question,
            &self.root,
            self.device,
            self.threads,
            seed,
            data,
        )
    }

    /// Writes `report.md`.
    pub fn write_report(&self, report: &str) -> Result<()> {
        scae_io::write_atomic(&self.path().join("report.md"), |w| {
            std::io::Write::write_all(w, report.as_bytes())
        })?;
        Ok(())
    }

    /// Writes `metrics.json` and moves the folder into place; returns where it is.
    pub fn finish(self, metrics: &impl serde::Serialize) -> Result<PathBuf> {
        crate::provenance::write_json(&self.path().join("metrics.json"), metrics)?;
        self.out.commit()
    }
}

/// What every question that trains or loads autoencoders starts from: its [`Run`], the data and
/// their split.
#[derive(Debug)]
pub struct Started {
    pub run: Run,
    pub data: Dataset,
    pub prepared: Prepared,
}

impl Started {
    /// Loads the data (`unlabelled`: refusing labels, for a command that uses none), sets up
    /// libtorch for `study`, opens the staging folder `folder` of `question` and splits the
    /// data, in that order (so bad input is reported before anything is written). `clock`
    /// started with the command.
    pub fn new(
        args: &RunArgs,
        clock: crate::provenance::RunClock,
        (question, folder): (&'static str, &str),
        study: &AeStudy,
        unlabelled: bool,
    ) -> Result<Self> {
        let data = if unlabelled {
            args.load_unlabelled_data(question)?
        } else {
            args.load_data()?
        };
        let run = Run::start_in(args, clock, question, folder, study.device, study.threads)?;
        let prepared = Prepared::new(study, &data)?;
        Ok(Self {
            run,
            data,
            prepared,
        })
    }

    /// [`Started::new`] of a question that reads labels, with its results in its own folder.
    pub fn question(args: &RunArgs, question: &'static str, study: &AeStudy) -> Result<Self> {
        let clock = crate::provenance::RunClock::start();
        Self::new(args, clock, (question, question), study, false)
    }

    /// The provenance of this run, to save in `metrics.json`.
    pub fn provenance(&self, seed: u64) -> crate::provenance::Provenance {
        self.run.provenance(seed, &self.data.source)
    }
}

/// The data of an autoencoder study, split as its config says; its cells reach the models
/// through [`DenseRows`] sources.
#[derive(Debug)]
pub struct Prepared {
    pub split: Split,
    /// The log-normalised matrix (small by the assignment's definition, so kept dense).
    pub x: ndarray::Array2<f32>,
}

impl Prepared {
    pub fn new(cfg: &AeStudy, data: &Dataset) -> Result<Self> {
        let split = Split::new(data.x.nrows(), cfg.test_fraction, cfg.seed)?;
        Ok(Self {
            split,
            x: data.x.clone(),
        })
    }

    /// Every cell.
    pub fn all(&self) -> DenseRows<'_> {
        DenseRows::all(self.x.view())
    }

    /// The training cells.
    pub fn train(&self) -> Result<DenseRows<'_>> {
        Ok(DenseRows::subset(self.x.view(), &self.split.train)?)
    }

    /// The held-out cells.
    pub fn test(&self) -> Result<DenseRows<'_>> {
        Ok(DenseRows::subset(self.x.view(), &self.split.test)?)
    }
}

/// Saves which cells were held out (`test_indices.npy`, int64, ascending).
pub fn write_test_indices(dir: &Path, split: &Split) -> Result<()> {
    let idx: ndarray::Array1<i64> = split.test.iter().map(|&i| i as i64).collect();
    scae_io::write_npy(&dir.join("test_indices.npy"), &idx.view())?;
    Ok(())
}

/// A results folder under construction; renamed over the destination by [`Staging::commit`].
#[derive(Debug)]
pub struct Staging {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Staging {
    /// Starts a results folder for `dest`. An existing `dest` is replaced at the commit only if
    /// it is empty or a previous scae result (it holds `metrics.json`): a user's folder given as
    /// `--out` by mistake is never deleted.
    pub fn new(dest: &Path) -> Result<Self> {
        if dest.exists() {
            let empty = std::fs::read_dir(dest)
                .with_context(|| format!("{}: cannot read the output folder", dest.display()))?
                .next()
                .is_none();
            if !empty && !dest.join("metrics.json").exists() {
                anyhow::bail!(
                    "{}: the output folder exists and is not a scae result (no metrics.json); \
                     choose another --out or remove it",
                    dest.display()
                );
            }
        }
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .context("the output folder has no name")?
            .to_string_lossy();
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        remove_stale_staging(parent, &name);
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// Where files go until the commit.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Where to write a file the user asked for at `path` while the results are staged: a path
    /// inside the destination folder goes to the same place in the staging folder (the commit
    /// replaces the destination, and would delete it), any other path stays. The folder it
    /// goes in must exist and take a new file, checked now, before any training: an output
    /// that cannot be written is refused up front, not after the work.
    ///
    /// # Errors
    /// When the folder of `path` is missing or not writable, or `path` is the results folder.
    pub fn place(&self, path: &Path) -> Result<PathBuf> {
        let lexical = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let target = match lexical(path).strip_prefix(lexical(&self.dest)) {
            Ok(rel) if rel.as_os_str().is_empty() => anyhow::bail!(
                "{}: this is the results folder itself; name a file in it or elsewhere",
                path.display()
            ),
            Ok(rel) => {
                let inside = self.tmp.join(rel);
                if let Some(dir) = inside.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("{}: cannot create", dir.display()))?;
                }
                inside
            }
            Err(_) => path.to_path_buf(),
        };
        if target.is_dir() {
            anyhow::bail!("{}: a folder, not a file to write", path.display());
        }
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let probe = dir.join(format!(".scae-write-check-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
            .with_context(|| {
                format!(
                    "{}: cannot write there (the folder {} is missing or not writable)",
                    path.display(),
                    dir.display()
                )
            })?;
        let _ = std::fs::remove_file(&probe);
        Ok(target)
    }

    /// Replaces the destination with the staged folder. On the ranks of a data-parallel job
    /// other than 0 the staged folder is dropped instead: rank 0 alone writes results.
    pub fn commit(mut self) -> Result<PathBuf> {
        if !crate::writes_results() {
            return Ok(self.dest.clone());
        }
        if self.dest.exists() {
            std::fs::remove_dir_all(&self.dest)
                .with_context(|| format!("{}: cannot replace", self.dest.display()))?;
        }
        std::fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("{}: cannot move results into place", self.dest.display()))?;
        self.committed = true;
        Ok(self.dest.clone())
    }
}

/// Removes the staging folders of `name` under `parent` whose process is gone (a run that was
/// killed, or a rank its job aborted): on Linux, where `/proc` says which processes run.
fn remove_stale_staging(parent: &Path, name: &str) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !proc.join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Number of trainable parameters of an autoencoder config on `genes` inputs.
pub fn parameter_count(widths: &[usize]) -> usize {
    let one_way: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
    let biases: usize =
        widths[1..].iter().sum::<usize>() + widths[..widths.len() - 1].iter().sum::<usize>();
    2 * one_way + biases
}

/// Q1's `metrics.json` under `dir` when Q1 ran with `study` on this data; the error says why not.
fn matching_q1_metrics(dir: &Path, study: &AeStudy, data: &Dataset) -> Result<serde_json::Value> {
    let path = dir.join("metrics.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("no {}", path.display()))?;
    let q1: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if q1["config"] != serde_json::to_value(study)? {
        anyhow::bail!("{} was made with another config", path.display());
    }
    if q1["provenance"]["data"]["fingerprint"] != data.source.fingerprint.as_str() {
        anyhow::bail!("{} was made from other data", path.display());
    }
    Ok(q1)
}

/// Loads Q1's models of the given latent sizes when Q1 ran with `study` on this data; the error
/// says why not.
pub fn reusable_q1(
    dir: &Path,
    study: &AeStudy,
    latents: &[usize],
    data: &Dataset,
    device: ComputeDevice,
) -> Result<Vec<TrainedAe>> {
    matching_q1_metrics(dir, study, data)?;
    latents
        .iter()
        .map(|latent| TrainedAe::load(&dir.join(format!("latent{latent}")), device))
        .collect()
}

/// Q1's model with `latent` when `results/q1` holds it for this config and data, else one
/// trained here with the same settings; the note says which, for the report.
pub fn q1_model_or_train(
    root: &Path,
    study: &AeStudy,
    latent: usize,
    prepared: &Prepared,
    data: &Dataset,
    device: ComputeDevice,
) -> Result<(TrainedAe, String)> {
    let dir = root.join("results").join("q1");
    let why = if study.latents.contains(&latent) {
        match reusable_q1(&dir, study, &[latent], data, device) {
            Ok(mut models) => {
                return Ok((
                    models.remove(0),
                    format!(
                        "model reused from {}",
                        dir.join(format!("latent{latent}")).display()
                    ),
                ));
            }
            Err(why) => format!("{why:#}"),
        }
    } else {
        format!("the Q1 config has no latent {latent}")
    };
    tracing::info!("training the latent-{latent} model here: {why}");
    let mut one = study.clone();
    one.latents = vec![latent];
    let model = q1::train_models(&one, prepared, &data.var_names, device)?.remove(0);
    Ok((model, format!("model trained here ({why})")))
}

/// Q1's final test loss per latent size, when `results/q1` was made with `study` on this data.
pub fn q1_test_losses(root: &Path, study: &AeStudy, data: &Dataset) -> Option<Vec<(usize, f64)>> {
    let q1 = matching_q1_metrics(&root.join("results").join("q1"), study, data).ok()?;
    let losses = q1["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some((
                m["latent"].as_u64()? as usize,
                m["final_test_loss"].as_f64()?,
            ))
        })
        .collect();
    Some(losses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_staging_folder_removes_those_of_processes_that_are_gone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // pid_max is at most 2^22 on Linux: this process cannot exist. Process 1 always does.
        let gone = tmp.path().join(".out.tmp-4999999");
        let alive = tmp.path().join(".out.tmp-1");
        let other = tmp.path().join(".other.tmp-4999999");
        for dir in [&gone, &alive, &other] {
            std::fs::create_dir_all(dir).expect("made");
        }
        let staging = Staging::new(&tmp.path().join("out")).expect("staging");
        assert!(staging.path().is_dir());
        assert!(!gone.exists(), "a killed run's staging folder stays");
        assert!(alive.exists() && other.exists());
    }
}
