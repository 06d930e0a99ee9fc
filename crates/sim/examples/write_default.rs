//! Simulate the default data set and write it the way the project stores it:
//! `<dir>/counts.npy` (float32, log-normalised to 10,000 per cell), `<dir>/counts_raw.npy`
//! (int32 raw counts) and `<dir>/labels.txt` (one group per line).
//!
//! `cargo run --release -p scae-sim --example write_default -- /tmp/simdata [--no-programs]`
//! (the project's own writer is `cargo xtask data`; this example exists to measure the defaults).
//! `--no-programs` writes the defaults with `programs: None`, the baseline without gene-gene
//! covariation that `data/README.md` compares with.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use ndarray_npy::write_npy;
use scae_sim::{SimParams, log_normalize, simulate};

fn main() -> Result<(), Box<dyn Error>> {
    const USAGE: &str = "usage: write_default <output dir> [--no-programs]";
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or(USAGE)?);
    let mut params = SimParams::default();
    match args.next().as_deref() {
        None => {}
        Some("--no-programs") => params.programs = None,
        Some(other) => return Err(format!("unexpected argument {other:?}; {USAGE}").into()),
    }
    std::fs::create_dir_all(&dir)?;

    let start = Instant::now();
    let data = simulate(&params)?;
    let sim_time = start.elapsed();
    let x = log_normalize(data.counts.view(), 1e4);
    let norm_time = start.elapsed() - sim_time;

    let raw = data.counts.mapv(|c| i32::try_from(c).unwrap_or(i32::MAX));
    write_npy(dir.join("counts.npy"), &x)?;
    write_npy(dir.join("counts_raw.npy"), &raw)?;
    let mut labels = std::io::BufWriter::new(std::fs::File::create(dir.join("labels.txt"))?);
    for l in &data.labels {
        writeln!(labels, "{l}")?;
    }
    labels.flush()?;

    println!(
        "simulated {:?} in {:.3} s, log-normalised in {:.3} s; sparsity {:.4}; group sizes {:?}",
        data.counts.dim(),
        sim_time.as_secs_f64(),
        norm_time.as_secs_f64(),
        data.sparsity(),
        data.group_sizes()
    );
    println!("wrote {}", dir.display());
    Ok(())
}
