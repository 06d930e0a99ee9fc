//! Temporary tuning helper (to be deleted).
use std::io::Write;
use ndarray_npy::write_npy;
use scae_sim::{SimParams, log_normalize, simulate};
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    std::fs::create_dir_all(&dir)?;
    let mut p = SimParams::default();
    let mut g = p.programs.unwrap_or_default();
    let mut off = false;
    for kv in &args[2..] {
        let (k, v) = kv.split_once('=').ok_or("k=v")?;
        let f: f64 = v.parse()?;
        match k {
            "n" => g.n_programs = f as usize,
            "frac" => g.module_frac = f,
            "s0" => g.strength = f,
            "decay" => g.decay = f,
            "lscale" => g.loading_scale = f,
            "down" => g.down_prob = f,
            "ngroup" => g.n_group_programs = f as usize,
            "shift" => g.group_shift_scale = f,
            "off" => off = f > 0.0,
            "de_prob" => p.de_prob = f,
            "de_loc" => p.de_fac_loc = f,
            "de_scale" => p.de_fac_scale = f,
            "mid" => p.dropout = Some(scae_sim::LogisticDropout { midpoint: f, shape: 1.0 }),
            "lib_loc" => p.lib_loc = f,
            "seed" => p.seed = f as u64,
            _ => return Err(format!("unknown {k}").into()),
        }
    }
    p.programs = if off { None } else { Some(g) };
    let t = std::time::Instant::now();
    let data = simulate(&p)?;
    let st = t.elapsed().as_secs_f64();
    let x = log_normalize(data.counts.view(), 1e4);
    write_npy(dir.join("counts.npy"), &x)?;
    write_npy(dir.join("counts_raw.npy"), &data.counts.mapv(|c| c as i32))?;
    let mut f = std::fs::File::create(dir.join("labels.txt"))?;
    for l in &data.labels { writeln!(f, "{l}")?; }
    eprint!("sim {st:.3}s ");
    Ok(())
}
