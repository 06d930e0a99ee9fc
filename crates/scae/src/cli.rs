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
    /// Train one autoencoder on your own data and save it as a model folder.
    Train(commands::TrainArgs),
    /// Latent codes of every cell, from a trained model folder.
    Embed(commands::EmbedArgs),
    /// Reconstruction error of a trained model on a data set.
    Evaluate(commands::EvaluateArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(args) => commands::data(&args),
        Command::Q1(args) => study::q1::run(&args),
        Command::Q2(args) => study::q2::run(&args),
        Command::Train(args) => commands::train(&args),
        Command::Embed(args) => commands::embed(&args),
        Command::Evaluate(args) => commands::evaluate(&args),
    }
}
