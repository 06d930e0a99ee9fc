//! The command line: one subcommand per study question and per everyday task.

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
    Q1(RunArgs),
    /// Q2: reconstruction error and convergence of Q1's models.
    Q2(RunArgs),
    /// Q3: PCA and t-SNE of the original data vs the latent-10 model's reconstruction.
    Q3(RunArgs),
    /// Q4: retrain with a 2-D latent space and plot it by label.
    Q4(RunArgs),
    /// Q5: retrain latent 10 with the nonzero MSE loss and compare with Q2's MSE model.
    Q5(RunArgs),
    /// Train one VAE on raw counts (configs/vae.toml) and save it with its held-out figures.
    Vae(study::vae::VaeArgs),
    /// The scVAE study's synthetic check: can a Poisson VAE recover 10 known rates?
    VaeSynth(RunArgs),
    /// The scVAE study's likelihood comparison: Poisson, NB, ZIP and ZINB VAEs on raw counts.
    VaeLikelihoods(RunArgs),
    /// The GMVAE's synthetic check: a known Poisson mixture and the q(y | x) regulariser ablation.
    GmvaeSynth(RunArgs),
    /// The GMVAE on labelled raw counts: its clusters against k-means baselines, over seeds.
    GmvaeReal(RunArgs),
    /// Assemble results/REPORT.md from the questions' results.
    Report(study::report::ReportArgs),
    /// Train one autoencoder on your own data and save it as a model folder.
    Train(commands::TrainArgs),
    /// Latent codes of every cell, from a trained model folder.
    Embed(commands::EmbedArgs),
    /// Reconstruction error of a trained model on a data set.
    Evaluate(commands::EvaluateArgs),
    /// Assign cells to the components of a trained GMVAE (q(y | x) and its argmax).
    Cluster(commands::ClusterArgs),
    /// Principal-component scores of a .npy matrix.
    Pca(crate::embed_tools::PcaArgs),
    /// 2-D t-SNE embedding of a .npy matrix.
    Tsne(crate::embed_tools::TsneArgs),
}

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
        Command::VaeSynth(args) => study::vae_synth::run(&args),
        Command::VaeLikelihoods(args) => study::vae_likelihoods::run(&args),
        Command::GmvaeSynth(args) => study::gmvae_synth::run(&args),
        Command::GmvaeReal(args) => study::gmvae_real::run(&args),
        Command::Report(args) => study::report::run(&args),
        Command::Train(args) => commands::train(&args),
        Command::Embed(args) => commands::embed(&args),
        Command::Evaluate(args) => commands::evaluate(&args),
        Command::Cluster(args) => commands::cluster(&args),
        Command::Pca(args) => crate::embed_tools::pca(&args),
        Command::Tsne(args) => crate::embed_tools::tsne(&args),
    }
}
