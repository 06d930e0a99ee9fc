//! `results/REPORT.md`: the whole study in one document, assembled from what
//! the questions wrote under `results/q1` to `results/q5`.
//!
//! Nothing here is computed anew or written by hand: Q1's section is a table
//! made from its `metrics.json`, every other section is that question's own
//! `report.md` with its headings moved one level down and its links made
//! relative to `results/`, followed by links to every file it produced.
//! A question that has not run yet is listed as missing.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// Options of `scae report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Project root: the report is assembled from its results/ folder.
    #[arg(long, default_value = ".")]
    pub root: std::path::PathBuf,
    /// The results folder (default: results/ under the root).
    #[arg(long)]
    pub results: Option<std::path::PathBuf>,
}

/// The questions in study order, with their titles.
const QUESTIONS: [(&str, &str); 5] = [
    ("q1", "Q1: training and test histories"),
    ("q2", "Q2: reconstruction error and convergence"),
    ("q3", "Q3: visualising the reconstructions"),
    ("q4", "Q4: a 2-dimensional latent space"),
    ("q5", "Q5: the nonzero MSE loss"),
];

pub fn run(args: &ReportArgs) -> Result<()> {
    let results = args
        .results
        .clone()
        .unwrap_or_else(|| args.root.join("results"));
    let md = assemble(&results)?;
    let path = results.join("REPORT.md");
    scae_io::write_atomic(&path, |w| std::io::Write::write_all(w, md.as_bytes()))?;
    eprintln!("study report written to {}", path.display());
    Ok(())
}

/// The report for the question folders under `results`.
pub fn assemble(results: &Path) -> Result<String> {
    let mut md = String::from("# scae: the autoencoder study\n\n");
    let q1 = read_json(&results.join("q1").join("metrics.json"));
    if let Some(data) = q1.as_ref().map(|m| &m["provenance"]["data"]) {
        let _ = writeln!(
            md,
            "Data: `{}` ({} cells x {} genes, {}, fingerprint `{}`){}.",
            data["data"].as_str().unwrap_or("?"),
            data["cells"],
            data["genes"],
            data["format"].as_str().unwrap_or("npy"),
            data["fingerprint"].as_str().unwrap_or("?"),
            data["labels"]
                .as_str()
                .map(|l| format!(", labels `{l}`"))
                .unwrap_or_default(),
        );
    }
    let _ = writeln!(
        md,
        "Each section below is generated from the files of `results/qN/`; every number comes from that \
         question's `metrics.json`, which also records the config, seed, device and revision that made it.\n"
    );
    let mut wall = 0.0;
    let _ = writeln!(
        md,
        "| question | ran at (UTC) | wall seconds | data fingerprint |\n|---|---|---:|---|"
    );
    for (q, title) in QUESTIONS {
        match read_json(&results.join(q).join("metrics.json")) {
            Some(m) => {
                let p = &m["provenance"];
                let seconds = p["wall_seconds"].as_f64().unwrap_or(f64::NAN);
                wall += seconds;
                let _ = writeln!(
                    md,
                    "| [{title}](#{}) | {} | {seconds:.1} | `{}` |",
                    anchor(title),
                    p["started_utc"].as_str().unwrap_or("?"),
                    p["data"]["fingerprint"].as_str().unwrap_or("?")
                );
            }
            None => {
                let _ = writeln!(md, "| {title} | not run | - | - |");
            }
        }
    }
    let _ = writeln!(md, "\nTotal wall time of the questions: {wall:.1} s.\n");
    for (q, title) in QUESTIONS {
        let dir = results.join(q);
        let _ = writeln!(md, "## {title}\n");
        if !dir.join("metrics.json").exists() {
            let _ = writeln!(md, "Not run yet: `cargo xtask {q}`.\n");
            continue;
        }
        if q == "q1" {
            q1_section(&mut md, q1.as_ref());
        } else {
            let path = dir.join("report.md");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            md.push_str(&nest(&text, q));
            md.push('\n');
        }
        files_section(&mut md, &dir, q)?;
    }
    Ok(md)
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// GitHub's heading anchor: lower case, spaces to dashes, punctuation dropped.
fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn q1_section(md: &mut String, q1: Option<&serde_json::Value>) {
    let Some(m) = q1 else { return };
    let _ = writeln!(md, "![Q1 history](q1/history.png)\n");
    let _ = writeln!(
        md,
        "| latent | parameters | final train loss | final test loss | training seconds | cells per second |\n\
         |---:|---:|---:|---:|---:|---:|"
    );
    for model in m["models"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {:.5} | {:.5} | {:.1} | {:.0} |",
            model["latent"],
            model["parameters"],
            model["final_train_loss"].as_f64().unwrap_or(f64::NAN),
            model["final_test_loss"].as_f64().unwrap_or(f64::NAN),
            model["train_seconds"].as_f64().unwrap_or(f64::NAN),
            model["cells_per_second"].as_f64().unwrap_or(f64::NAN),
        );
    }
    let _ = writeln!(
        md,
        "\n{} training cells, {} test cells.\n",
        m["train_cells"], m["test_cells"]
    );
}

/// A question's report inside the study report: its title dropped (the section has one),
/// headings one level down, relative links prefixed with the question's folder.
fn nest(text: &str, q: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|l| l.starts_with("# ")) {
        lines.next();
    }
    for line in lines {
        let line = if line.starts_with('#') {
            format!("#{line}")
        } else {
            line.to_owned()
        };
        out.push_str(&prefix_links(&line, q));
        out.push('\n');
    }
    out
}

/// `](file)` becomes `](q/file)` for every relative link target.
fn prefix_links(line: &str, q: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        out.push_str(&rest[..i + 2]);
        rest = &rest[i + 2..];
        let absolute = rest.starts_with("http://")
            || rest.starts_with("https://")
            || rest.starts_with('/')
            || rest.starts_with('#');
        if !absolute {
            out.push_str(q);
            out.push('/');
        }
    }
    out.push_str(rest);
    out
}

/// Links to every figure, table and data file of a question folder.
fn files_section(md: &mut String, dir: &Path, q: &str) -> Result<()> {
    let mut files: Vec<String> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("{}: cannot list", d.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if !rel.starts_with('.') {
                    files.push(rel);
                }
            }
        }
    }
    files.sort();
    let kinds = [
        ("Figures", &["png", "svg"][..]),
        ("Tables and reports", &["csv", "md", "json"][..]),
        ("Arrays and models", &["npy", "safetensors"][..]),
    ];
    for (kind, exts) in kinds {
        let listed: Vec<String> = files
            .iter()
            .filter(|f| exts.iter().any(|e| f.ends_with(&format!(".{e}"))))
            .map(|f| format!("[{f}]({q}/{f})"))
            .collect();
        if !listed.is_empty() {
            let _ = writeln!(md, "*{kind}:* {}\n", listed.join(", "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_prefixed_but_urls_and_anchors_are_not() {
        assert_eq!(
            prefix_links("![a](pca.png) and [b](https://x.org) [c](#top)", "q3"),
            "![a](q3/pca.png) and [b](https://x.org) [c](#top)"
        );
    }

    #[test]
    fn nesting_drops_the_title_and_demotes_headings() {
        let nested = nest("# Q3: title\n\n## Scores\n![p](pca.png)\n", "q3");
        assert_eq!(nested, "\n### Scores\n![p](q3/pca.png)\n");
    }

    #[test]
    fn anchors_follow_github() {
        assert_eq!(
            anchor("Q4: a 2-dimensional latent space"),
            "q4-a-2-dimensional-latent-space"
        );
    }
}
