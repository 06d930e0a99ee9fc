//! Everyday commands on the user's own files: data, train, embed, evaluate.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ndarray::Array2;
use scae_io::{CountRows, DenseRows};
use scae_models::{DeviceChoice, Gmvae, Net, ReconLoss};
use serde::Serialize;

use crate::config::{AeStudy, StudyConfig};
use crate::data::{CountData, Dataset};
use crate::provenance::{RunClock, write_json};
use crate::study::ae::TrainedAe;
use crate::study::{Prepared, RunArgs, Staging};

#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Project root; the files go to data/ under it unless --out is given.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Simulation seed (the default data uses the simulator's default seed).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `scae data`: simulate and write the default data set.
pub fn data(args: &DataArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| args.root.join("data"));
    let mut params = scae_sim::SimParams::default();
    if let Some(seed) = args.seed {
        params.seed = seed;
    }
    let sim = scae_sim::simulate(&params).context("simulating the default data")?;
    let lognorm = scae_sim::log_normalize(sim.counts.view(), 1e4);
    let raw: Array2<i32> = sim.counts.mapv(|c| i32::try_from(c).unwrap_or(i32::MAX));
    let labels: Vec<String> = sim.labels.iter().map(|l| l.to_string()).collect();
    scae_io::write_npy(&out.join("counts.npy"), &lognorm.view())?;
    scae_io::write_npy(&out.join("counts_raw.npy"), &raw.view())?;
    scae_io::write_labels(&out.join("labels.txt"), &labels)?;
    eprintln!(
        "wrote {} cells x {} genes (seed {}) to {}",
        lognorm.nrows(),
        lognorm.ncols(),
        params.seed,
        out.display()
    );
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Latent size (default: the config's first).
    #[arg(long)]
    pub latent: Option<usize>,
    /// Loss: mse or nonzero_mse (default: the config's).
    #[arg(long, value_parser = parse_loss)]
    pub loss: Option<ReconLoss>,
    /// Epochs (default: the config's).
    #[arg(long)]
    pub epochs: Option<usize>,
}

fn parse_loss(s: &str) -> Result<ReconLoss, String> {
    match s {
        "mse" => Ok(ReconLoss::Mse),
        "nonzero_mse" => Ok(ReconLoss::NonzeroMse),
        other => Err(format!(
            "unknown loss {other:?} (expected mse or nonzero_mse)"
        )),
    }
}

/// `scae train`: one autoencoder, saved as a model folder with its history and latent codes.
pub fn train(args: &TrainArgs) -> Result<()> {
    let clock = RunClock::start();
    let run = &args.run;
    let mut cfg = AeStudy::load(&run.config_path("q1"))?;
    if let Some(latent) = args.latent {
        cfg.latents = vec![latent];
    }
    cfg.latents.truncate(1);
    cfg.loss = args.loss.unwrap_or(cfg.loss);
    cfg.train.epochs = args.epochs.unwrap_or(cfg.train.epochs);
    cfg.validate()?;
    let data = run.load_data()?;
    let (device, threads) = run.setup_torch(cfg.device, cfg.threads)?;
    let out = Staging::new(&run.out_dir("model"))?;
    let prepared = Prepared::new(&cfg, &data)?;
    let model = crate::study::q1::train_models(&cfg, &prepared, data.x.ncols(), device)?
        .pop()
        .context("no model was trained")?;
    model.save_with_latent(out.path(), &prepared.all())?;
    crate::study::write_test_indices(out.path(), &prepared.split)?;
    #[derive(Serialize)]
    struct Metrics<'a> {
        provenance: crate::provenance::Provenance,
        config: &'a AeStudy,
        summary: crate::study::q1::ModelSummary,
    }
    let metrics = Metrics {
        provenance: clock.finish("train", &run.root, device, threads, cfg.seed, &data.source),
        config: &cfg,
        summary: crate::study::q1::summarize(&model, prepared.split.train.len()),
    };
    write_json(&out.path().join("metrics.json"), &metrics)?;
    let dest = out.commit()?;
    eprintln!("model written to {}", dest.display());
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct EmbedArgs {
    /// A model folder written by `scae train` or a question (e.g. results/q1/latent10).
    #[arg(long)]
    pub model: PathBuf,
    /// Expression matrix (.npy, cells x genes, same genes as the model's).
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the latent codes (.npy).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `scae embed`: the latent code of every cell.
pub fn embed(args: &EmbedArgs) -> Result<()> {
    let (model, data) = load_model_and_data(&args.model, &args.data, args.device, args.threads)?;
    let latent = model.encode(&DenseRows::all(data.x.view()))?;
    scae_io::write_npy(&args.out, &latent.view())?;
    eprintln!(
        "wrote {} x {} latent codes to {}",
        latent.nrows(),
        latent.ncols(),
        args.out.display()
    );
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// A model folder written by `scae train` or a question.
    #[arg(long)]
    pub model: PathBuf,
    /// Expression matrix (.npy, cells x genes, same genes as the model's).
    #[arg(long)]
    pub data: PathBuf,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `scae evaluate`: MSE over all, nonzero and zero entries, printed as JSON.
pub fn evaluate(args: &EvaluateArgs) -> Result<()> {
    let (model, data) = load_model_and_data(&args.model, &args.data, args.device, args.threads)?;
    let recon = model.reconstruct(&DenseRows::all(data.x.view()))?;
    let error = scae_eval::reconstruction_error(data.x.view(), recon.view())?;
    let json = serde_json::to_string_pretty(&error)?;
    println!("{json}");
    if let Some(out) = &args.out {
        write_json(out, &error)?;
    }
    Ok(())
}

fn load_model_and_data(
    model_dir: &std::path::Path,
    data: &std::path::Path,
    device: DeviceChoice,
    threads: usize,
) -> Result<(TrainedAe, Dataset)> {
    let data = Dataset::load(data, None)?;
    let (device, _) = crate::study::setup_compute(device, threads)?;
    let model = TrainedAe::load(model_dir, device)?;
    model.check_input(data.x.ncols(), &data.source.data)?;
    Ok((model, data))
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// A GMVAE model folder written by `gmvae-real` (e.g. results/gmvae-real/seed_0/gmvae).
    #[arg(long)]
    pub model: PathBuf,
    /// Raw counts with the genes of the model's training data: a .npy file, a folder holding
    /// counts_raw.npy, or a 10x Genomics matrix folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: q_y.npy (cells x K, each cell's q(y | x)) and clusters.csv (its argmax).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `scae cluster`: assigns cells to a trained GMVAE's components.
pub fn cluster(args: &ClusterArgs) -> Result<()> {
    use crate::study::gmvae_real::{SavedGmvae, write_clusters};

    let saved = SavedGmvae::read(&args.model)?;
    let data = CountData::load(&args.data, None)?;
    if data.counts.genes() != saved.input_genes {
        anyhow::bail!(
            "{}: {} genes, but the model was trained on data with {}",
            data.source.data.display(),
            data.counts.genes(),
            saved.input_genes
        );
    }
    let (device, _) = crate::study::setup_compute(args.device, args.threads)?;
    let net = Net::<Gmvae>::load(
        &args.model.join("weights.safetensors"),
        saved.genes.len(),
        &saved.model,
        device,
    )?;
    let counts = data.counts.select_genes(&saved.genes);
    let q_y = net.cluster_probabilities(&CountRows::all(&counts), 4096)?;
    let assigned = scae_models::row_argmax(q_y.view()).to_vec();
    let out = Staging::new(&args.out)?;
    write_clusters(out.path(), &data.cells, &q_y, &assigned)?;
    let dest = out.commit()?;
    let mut sizes = vec![0usize; saved.model.components];
    for &c in &assigned {
        sizes[c] += 1;
    }
    eprintln!(
        "assigned {} cells to {} components (cells per component: {sizes:?}); written to {}",
        assigned.len(),
        saved.model.components,
        dest.display()
    );
    Ok(())
}
