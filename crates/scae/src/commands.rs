//! Everyday commands on the user's own files: data, train, embed, evaluate.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ndarray::Array2;
use scae_io::DenseRows;
use scae_models::{DeviceChoice, Gmvae, Net, ReconLoss};
use serde::Serialize;

use crate::card::ModelKind;
use crate::config::{AeStudy, StudyConfig};
use crate::data::Dataset;
use crate::provenance::{RunClock, write_json};
use crate::study::ae::TrainedAe;
use crate::study::{RunArgs, Staging};

#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Project folder; the files go to data/ under it (default: the current folder) unless
    /// --out is given.
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
    let started = crate::study::Started::new(run, clock, ("train", "model"), &cfg, true)?;
    let (data, prepared, out) = (&started.data, &started.prepared, &started.run);
    let model = crate::study::q1::train_models(&cfg, prepared, &data.var_names, out.device)?
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
        provenance: started.provenance(cfg.seed),
        config: &cfg,
        summary: crate::study::q1::summarize(&model, prepared.split.train.len()),
    };
    let dest = started.run.finish(&metrics)?;
    eprintln!("model written to {}", dest.display());
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct EmbedArgs {
    /// A model folder: an autoencoder written by `scae train` or a question (e.g.
    /// results/q1/latent10), a VAE written by `scae vae` (e.g. results/vae) or a GMVAE written by
    /// `gmvae-real` (e.g. results/gmvae-real/seed_0/gmvae). Its genes are found in --data by name.
    #[arg(long)]
    pub model: PathBuf,
    /// For an autoencoder: log-normalised expression with the model's genes (a .npy matrix, a
    /// folder holding counts.npy, or an .h5ad whose X holds it), or raw counts, log-normalised
    /// here. For a VAE or a GMVAE: raw counts with the model's genes (a .npy file, a 10x folder,
    /// a Cell Ranger .h5 or an AnnData .h5ad).
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the latent codes (.npy).
    #[arg(long)]
    pub out: PathBuf,
    /// For an .h5ad file: the matrix to read, `X` by default; `raw` for raw.X, else a layer.
    #[arg(long)]
    pub layer: Option<String>,
    /// For a VAE on an .h5ad file: read the counts from the file in blocks, never whole
    /// (automatic when they would not fit in the memory budget, as for `scae vae`).
    #[arg(long)]
    pub backed: bool,
    /// Also write the cells with their latent codes (obsm["X_scae"]) as AnnData: at this path,
    /// or beside --out with the extension .h5ad when no path is given.
    #[arg(long, value_name = "OUT")]
    #[allow(clippy::option_option)]
    pub h5ad: Option<Option<PathBuf>>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `scae embed`: the latent code of every cell, from any saved model (autoencoder, VAE, GMVAE).
pub fn embed(args: &EmbedArgs) -> Result<()> {
    let card = crate::card::ModelCard::read(&args.model)?;
    let Embedded {
        latent,
        obs_names,
        var_names,
        x,
        source,
    } = match &card.model {
        ModelKind::Ae(_) => {
            if args.backed {
                bail!(
                    "--backed reads counts for a VAE or a GMVAE; {} is an autoencoder",
                    args.model.display()
                );
            }
            let (model, data) = load_model_and_data(
                &args.model,
                &args.data,
                args.layer.as_deref(),
                args.device,
                args.threads,
            )?;
            let latent = model.encode(&DenseRows::all(data.x.view()))?;
            Embedded {
                obs_names: (0..data.x.nrows()).map(|i| i.to_string()).collect(),
                latent,
                var_names: data.var_names,
                x: None,
                source: None,
            }
        }
        ModelKind::Vae(_) | ModelKind::Gmvae(_) => embed_counts(args, &card)?,
    };
    if let Some(path) = args.h5ad.as_ref() {
        let path = path
            .clone()
            .unwrap_or_else(|| args.out.with_extension("h5ad"));
        let out = scae_io::AnnOutput {
            obs_names: &obs_names,
            var_names: &var_names,
            x: x.as_ref().map(|c: &scae_io::CountMatrix| c.csr()),
            obsm: vec![("X_scae", latent.view())],
            source: source
                .as_ref()
                .map(|(file, cells, genes)| scae_io::AnnSource { file, cells, genes }),
            ..Default::default()
        };
        scae_io::write_h5ad(&path, &out)?;
        eprintln!("wrote {}", path.display());
    }
    scae_io::write_npy(&args.out, &latent.view())?;
    eprintln!(
        "wrote {} x {} latent codes to {}",
        latent.nrows(),
        latent.ncols(),
        args.out.display()
    );
    Ok(())
}

/// The latent means of the cells under a model, with what the `.h5ad` writer needs.
struct Embedded {
    latent: Array2<f32>,
    obs_names: Vec<String>,
    /// The model's genes.
    var_names: Vec<String>,
    /// The cells' counts of those genes, when read in memory.
    x: Option<scae_io::CountMatrix>,
    /// The input `.h5ad` file, open, with the row of each cell and the column of each gene in it.
    source: Option<(scae_io::Hdf5File, Vec<usize>, Vec<usize>)>,
}

/// The latent means of every cell of `args.data` under the VAE or GMVAE of `card`.
fn embed_counts(args: &EmbedArgs, card: &crate::card::ModelCard) -> Result<Embedded> {
    use scae_models::Vae;

    let covariates = card.model.covariates();
    let options = scae_io::OpenOptions {
        h5ad: scae_io::H5adOptions {
            layer: args.layer.clone(),
            obs_keys: covariates.iter().map(|c| c.key.clone()).collect(),
            ..Default::default()
        },
        reading: crate::study::vae::reading(args.backed),
        genes: scae_io::GeneChoice::Named(card.genes.clone()),
        ..Default::default()
    };
    let mut data = scae_io::open(&args.data, &options)?;
    // The cells' batches as the model knows them; one it does not know is refused.
    crate::study::vae::code_as_model(&mut data, covariates)?;
    let (device, _) = crate::study::setup_compute(args.device, args.threads)?;
    let weights = args.model.join("weights.safetensors");
    let genes = card.genes.len();
    let all = data.rows(None)?;
    let chunk = scae_models::eval_chunk(4096, genes);
    let latent = match &card.model {
        ModelKind::Vae(config) => {
            Net::<Vae>::load(&weights, genes, config, device)?.latent_means(&*all, chunk)?
        }
        ModelKind::Gmvae(config) => {
            Net::<Gmvae>::load(&weights, genes, config, device)?.latent_means(&*all, chunk)?
        }
        ModelKind::Ae(_) => bail!(
            "{}: an autoencoder reads log-normalised values, not counts",
            args.model.display()
        ),
    };
    drop(all);
    let obs_names = if args.h5ad.is_some() {
        data.obs_names()?.into_owned()
    } else {
        Vec::new()
    };
    let source = data
        .ann_source()
        .map(|s| (s.file.clone(), s.cells.to_vec(), s.genes.to_vec()));
    Ok(Embedded {
        latent,
        source,
        obs_names,
        var_names: card.genes.clone(),
        x: match data.counts {
            scae_io::Counts::Memory(counts) => Some(counts),
            _ => None,
        },
    })
}

#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// A model folder written by `scae train` or a question.
    #[arg(long)]
    pub model: PathBuf,
    /// Log-normalised expression with the model's genes: a .npy matrix (cells x genes) or a
    /// folder holding counts.npy.
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
    let (model, data) =
        load_model_and_data(&args.model, &args.data, None, args.device, args.threads)?;
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
    layer: Option<&str>,
    device: DeviceChoice,
    threads: usize,
) -> Result<(TrainedAe, Dataset)> {
    let options = scae_io::H5adOptions {
        layer: layer.map(str::to_owned),
        labels_key: None,
        ..Default::default()
    };
    let (device, _) = crate::study::setup_compute(device, threads)?;
    let model = TrainedAe::load(model_dir, device)?;
    let data = Dataset::load_for_model(data, &model.meta.genes, &options)?;
    Ok((model, data))
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// A GMVAE model folder written by `gmvae-real` (e.g. results/gmvae-real/seed_0/gmvae).
    #[arg(long)]
    pub model: PathBuf,
    /// Raw counts with the genes of the model's training data: a .npy file, a folder holding
    /// counts_raw.npy, a 10x Genomics matrix folder, an AnnData .h5ad or a Cell Ranger .h5 file.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: q_y.npy (cells x K, each cell's q(y | x)) and clusters.csv (its argmax).
    #[arg(long)]
    pub out: PathBuf,
    /// For an .h5ad file: the matrix of counts to read, `X` by default; `raw` for raw.X, else a
    /// layer's name.
    #[arg(long)]
    pub layer: Option<String>,
    #[command(flatten)]
    pub output: crate::study::vae::H5adArgs,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `scae cluster`: assigns cells to a trained GMVAE's components.
pub fn cluster(args: &ClusterArgs) -> Result<()> {
    use crate::study::gmvae_real::{read_gmvae, write_clusters};

    let (model, genes) = read_gmvae(&args.model)?;
    let options = scae_io::OpenOptions {
        h5ad: scae_io::H5adOptions {
            layer: args.layer.clone(),
            obs_keys: model.vae.covariates.iter().map(|c| c.key.clone()).collect(),
            ..Default::default()
        },
        ..Default::default()
    };
    // Every gene is read, and written back with `--h5ad`; the model sees its own.
    let mut data = scae_io::open(&args.data, &options)?;
    crate::study::vae::code_as_model(&mut data, &model.vae.covariates)?;
    let input = data.select_genes(&scae_io::gene_columns(
        &genes,
        &data.var_names,
        &data.source.data,
    )?)?;
    let (device, _) = crate::study::setup_compute(args.device, args.threads)?;
    let net = Net::<Gmvae>::load(
        &args.model.join("weights.safetensors"),
        genes.len(),
        &model,
        device,
    )?;
    let q_y = net.cluster_probabilities(&*input.rows(None)?, 4096)?;
    let assigned = scae_models::row_argmax(q_y.view()).to_vec();
    let out = Staging::new(&args.out)?;
    let h5ad_path = args.output.place(&out)?;
    write_clusters(out.path(), &data.cells, &q_y, &assigned)?;
    if let Some(path) = h5ad_path {
        let latent = net.latent_means(&*input.rows(None)?, 4096)?;
        crate::study::gmvae_real::write_clusters_h5ad(&path, &data, &latent, &q_y, &assigned)?;
    }
    let dest = out.commit()?;
    let mut sizes = vec![0usize; model.components];
    for &c in &assigned {
        sizes[c] += 1;
    }
    eprintln!(
        "assigned {} cells to {} components (cells per component: {sizes:?}); written to {}",
        assigned.len(),
        model.components,
        dest.display()
    );
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct InfoArgs {
    /// A matrix file or folder: AnnData .h5ad, Cell Ranger .h5, a 10x Genomics matrix folder or a
    /// .npy matrix.
    #[arg(long)]
    pub data: PathBuf,
    /// For an .h5ad file: the matrix to read, `X` by default; `raw` for raw.X, else a layer.
    #[arg(long)]
    pub layer: Option<String>,
}

/// `scae info`: reads the whole matrix into memory and prints its shape, stored values and the
/// seconds the read took, as JSON (what `bench scale` times against `anndata.read_h5ad`).
pub fn info(args: &InfoArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (format, cells, genes, nnz) = match scae_io::hdf5_kind(&args.data)? {
        Some(scae_io::Hdf5Kind::H5ad) => {
            let options = scae_io::H5adOptions {
                layer: args.layer.clone(),
                labels_key: None,
                ..Default::default()
            };
            let m = scae_io::read_h5ad(&args.data, &options)?;
            ("h5ad", m.x.rows(), m.x.cols(), m.x.nnz())
        }
        Some(scae_io::Hdf5Kind::TenxH5) => {
            let m = scae_io::read_10x_h5(&args.data)?;
            ("10x-h5", m.n_cells(), m.n_genes(), m.counts.nnz())
        }
        None if args.data.is_dir() => {
            let files = scae_io::find_10x(&args.data)?;
            let m = scae_io::read_10x(&files.dir)?;
            ("10x", m.n_cells(), m.n_genes(), m.counts.nnz())
        }
        None => {
            let x = scae_io::read_matrix(&args.data)?;
            let nnz = x.iter().filter(|v| **v != 0.0).count();
            ("npy", x.nrows(), x.ncols(), nnz)
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "data": args.data,
        "format": format,
        "cells": cells,
        "genes": genes,
        "nnz": nnz,
        "read_seconds": seconds,
        "peak_rss_mib": crate::study::vae::peak_rss_mib(),
    });
    println!("{json}");
    Ok(())
}
