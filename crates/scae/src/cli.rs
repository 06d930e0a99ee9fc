//! The command line: one subcommand per study question and per everyday task.
//!
//! The study subcommands share [`RunArgs`], whose `--data` help describes the log-normalised
//! input of Q1-Q5 and `scae train`; the studies on raw counts replace that help with their own
//! (`mut_arg` below), so each `--help` says what its own `--data` is.

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::commands;
use crate::study::{self, RunArgs};

#[derive(Debug, Parser)]
#[command(
    name = "scae",
    version,
    about = "Autoencoders for single-cell RNA-seq counts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the default data set (seeded simulation) as counts.npy, counts_raw.npy and labels.txt.
    Data(commands::DataArgs),
    /// Q1: train the autoencoders of configs/q1.toml and plot their histories.
    #[command(mut_arg("labels", |a| a.help(RECORDED_LABELS)), mut_arg("labels_key", |a| a.help(RECORDED_LABELS)))]
    Q1(RunArgs),
    /// Q2: reconstruction error and convergence of Q1's models.
    #[command(mut_arg("labels", |a| a.help(RECORDED_LABELS)), mut_arg("labels_key", |a| a.help(RECORDED_LABELS)))]
    Q2(RunArgs),
    /// Q3: PCA and t-SNE of the original data vs the latent-10 model's reconstruction.
    Q3(RunArgs),
    /// Q4: retrain with a 2-D latent space and plot it by label.
    Q4(RunArgs),
    /// Q5: retrain latent 10 with the nonzero MSE loss and compare with Q2's MSE model.
    Q5(RunArgs),
    /// Train one VAE on raw counts (configs/vae.toml) and save it with its held-out figures.
    #[command(mut_arg("data", |a| a.help(RAW_COUNTS)))]
    Vae(study::vae::VaeArgs),
    /// The scVAE study's synthetic check: can a Poisson VAE recover 10 known rates? (It simulates
    /// its counts: the [simulate] table of its config.)
    VaeSynth(study::SimArgs),
    /// The scVAE study's likelihood comparison: Poisson, NB, ZIP and ZINB VAEs on raw counts.
    #[command(mut_arg("data", |a| a.help(RAW_COUNTS)))]
    VaeLikelihoods(RunArgs),
    /// The GMVAE's synthetic check: a known Poisson mixture and the q(y | x) regulariser ablation.
    /// (It simulates its counts: the [simulate] table of its config.)
    GmvaeSynth(study::SimArgs),
    /// The GMVAE on labelled raw counts: its clusters against k-means baselines, over seeds.
    #[command(mut_arg("data", |a| a.help(LABELLED_RAW_COUNTS)))]
    GmvaeReal(study::gmvae_real::GmvaeRealArgs),
    /// What each choice of the GMVAE's recipe adds: variants of gmvae-real on labelled datasets.
    #[command(mut_arg("data", |a| a.help(LABELLED_RAW_COUNTS)))]
    GmvaeAblation(study::gmvae_ablation::GmvaeAblationArgs),
    /// Batch integration: PCA, the VAE without and with the batch and the GMVAE with it, scored
    /// by scIB's metrics over seeds (an .h5ad with --batch-key and --labels-key).
    #[command(mut_arg("data", |a| a.help(MULTI_BATCH)))]
    Integrate(study::integrate::IntegrateArgs),
    /// Assemble results/REPORT.md from the questions' results.
    Report(study::report::ReportArgs),
    /// Train one autoencoder on your own data and save it as a model folder.
    #[command(mut_arg("labels", |a| a.help(NO_LABELS)), mut_arg("labels_key", |a| a.help(NO_LABELS)))]
    Train(commands::TrainArgs),
    /// Latent codes of every cell, from a trained model folder.
    Embed(commands::EmbedArgs),
    /// Reconstruction error of a trained model on a data set.
    Evaluate(commands::EvaluateArgs),
    /// Read a matrix file whole and print its shape and the seconds the read took, as JSON.
    Info(commands::InfoArgs),
    /// Assign cells to the components of a trained GMVAE (q(y | x) and its argmax).
    Cluster(commands::ClusterArgs),
    /// Principal-component scores of a .npy matrix.
    Pca(crate::embed_tools::PcaArgs),
    /// 2-D t-SNE embedding of a .npy matrix.
    Tsne(crate::embed_tools::TsneArgs),
}

/// `--labels` and `--labels-key` of the commands that do not use labels.
const NO_LABELS: &str =
    "Refused: this command does not use labels (Q3, Q4 and Q5 score against them)";

/// `--labels` and `--labels-key` of Q1 and Q2, which train without them but record them.
const RECORDED_LABELS: &str = "One label per cell (a file, or an obs column of an .h5ad with \
    --labels-key): not used in training, but checked and recorded with the data's fingerprint, \
    so that Q3-Q5 reuse these models only for the same labelled data (`cargo xtask all` passes \
    the same labels to every question)";

/// `--data` of the studies that train on raw counts.
const RAW_COUNTS: &str = "Raw counts (cells x genes, non-negative integers, not normalised): a .npy \
    file, a folder holding counts_raw.npy, a 10x Genomics matrix folder, an AnnData .h5ad or a \
    Cell Ranger .h5 file. Default: data/counts_raw.npy under the root (written by `scae data`)";

/// `--data` of `gmvae-real`, which scores its clusters against the labels.
const LABELLED_RAW_COUNTS: &str = "Labelled raw counts (cells x genes, non-negative integers, not \
    normalised): a .npy file, a folder holding counts_raw.npy, a 10x Genomics matrix folder, an \
    AnnData .h5ad or a Cell Ranger .h5 file, with one label per cell (--labels, or --labels-key \
    of an .h5ad, else labels.txt beside the data). Default: data/counts_raw.npy and data/labels.txt under the root (written by \
    `scae data`)";

/// `--data` of `integrate`.
const MULTI_BATCH: &str = "Raw counts of cells from several batches: an AnnData .h5ad whose obs \
    holds each cell's batch (--batch-key) and cell type (--labels-key)";

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(args) => commands::data(&args),
        Command::Q1(args) => study::q1::run(&args),
        Command::Q2(args) => study::q2::run(&args),
        Command::Q3(args) => study::q3::run(&args),
        Command::Q4(args) => study::q4::run(&args),
        Command::Q5(args) => study::q5::run(&args),
        Command::Vae(args) => study::vae::run(&args),
        Command::VaeSynth(args) => study::vae_synth::run(&args.run_args()),
        Command::VaeLikelihoods(args) => study::vae_likelihoods::run(&args),
        Command::GmvaeSynth(args) => study::gmvae_synth::run(&args.run_args()),
        Command::GmvaeReal(args) => study::gmvae_real::run(&args),
        Command::GmvaeAblation(args) => study::gmvae_ablation::run(&args),
        Command::Integrate(args) => study::integrate::run(&args),
        Command::Report(args) => study::report::run(&args),
        Command::Train(args) => commands::train(&args),
        Command::Embed(args) => commands::embed(&args),
        Command::Evaluate(args) => commands::evaluate(&args),
        Command::Cluster(args) => commands::cluster(&args),
        Command::Info(args) => commands::info(&args),
        Command::Pca(args) => crate::embed_tools::pca(&args),
        Command::Tsne(args) => crate::embed_tools::tsne(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The help of `--data` of a subcommand, in lower case.
    fn data_help(sub: &str) -> String {
        let cli = Cli::command();
        let sub = cli.find_subcommand(sub).expect("a subcommand");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_id() == "data")
            .expect("a --data option");
        arg.get_help()
            .expect("a help text")
            .to_string()
            .to_lowercase()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_study_describes_its_own_data() {
        for sub in ["q1", "q2", "q3", "q4", "q5", "train"] {
            let help = data_help(sub);
            assert!(help.contains("log-normalised"), "{sub}: {help}");
            assert!(help.contains("data/counts.npy"), "{sub}: {help}");
        }
        for sub in ["vae", "vae-likelihoods", "gmvae-real"] {
            let help = data_help(sub);
            for needle in [
                "raw counts",
                ".h5ad",
                "cell ranger .h5",
                "data/counts_raw.npy",
            ] {
                assert!(help.contains(needle), "{sub}: {help}");
            }
        }
        assert!(data_help("gmvae-real").contains("labels"));
        // The synthetic checks simulate their counts and take no data flag at all.
        for sub in ["vae-synth", "gmvae-synth"] {
            let cli = Cli::command();
            let sub = cli.find_subcommand(sub).expect("a subcommand");
            for flag in ["data", "labels", "layer", "labels_key", "top_genes"] {
                assert!(
                    sub.get_arguments().all(|a| a.get_id() != flag),
                    "{}: --{flag}",
                    sub.get_name()
                );
            }
        }
        for sub in ["embed", "evaluate"] {
            assert!(data_help(sub).contains("log-normalised"), "{sub}");
        }
        assert!(data_help("cluster").contains(".h5ad"));
    }
}
