//! What Q3 to Q5 share: PCA and t-SNE embeddings, their clustering scores
//! against the labels, and the scatter figures drawn from saved coordinates.
//!
//! Every embedding is saved as `<name>.npy` (cells x 2, input order) before it
//! is drawn, so a figure can always be redrawn or checked from its numbers.
//! Scores follow one recipe everywhere: the silhouette of the representation
//! by label (Euclidean, [`scae_eval::silhouette_score`]) and k-means with
//! k = number of labels on the same representation, scored by ARI, NMI and
//! Hungarian-matched accuracy.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use ndarray::{Array2, ArrayView2, Axis, CowArray, Ix2, s};
use scae_eval::{KMeansParams, Pca, TsneParams};
use scae_io::Labels;
use serde::{Deserialize, Serialize};

/// How embeddings are scored against the labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    /// Seeded k-means restarts; the lowest inertia is kept.
    pub kmeans_restarts: usize,
    /// Seeds k-means and the silhouette's subsample (used above 10,000 cells).
    pub seed: u64,
}

impl ScoreConfig {
    /// The clusters of k-means with k = `k` on the rows of `x`, as the scores run it.
    pub fn kmeans(&self, x: ArrayView2<'_, f32>, k: usize) -> Result<Vec<usize>> {
        Ok(KMeansParams {
            n_init: self.kmeans_restarts,
            seed: self.seed,
            ..KMeansParams::new(k)
        }
        .fit(x)?
        .labels)
    }
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            kmeans_restarts: 10,
            seed: 0,
        }
    }
}

/// Agreement of one representation with the labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Mean silhouette of the representation, grouped by label.
    pub silhouette: f64,
    /// Adjusted Rand index of k-means (k = number of labels) against the labels.
    pub ari: f64,
    /// Normalised mutual information (arithmetic) of the same clustering.
    pub nmi: f64,
    /// Accuracy of the same clustering after Hungarian matching to the labels.
    pub accuracy: f64,
}

/// One scored representation, as it appears in `metrics.json` and the reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    /// Short name, e.g. `t-SNE of the reconstruction`.
    pub name: String,
    /// Number of dimensions scored.
    pub dims: usize,
    /// `None` when the data have no labels.
    pub scores: Option<Scores>,
}

/// The sentence a report gives, in its scores section, when some cells have no label.
pub fn unlabelled_note(md: &mut String, source: &crate::data::DataSource) {
    let n = source.unlabelled_cells;
    if n > 0 {
        let _ = writeln!(
            md,
            "{n} of {} cells have no label (a missing value of the label column): they are \
             drawn as `{NO_LABEL}` and left out of every score against the labels.\n",
            source.cells
        );
    }
}

/// The labels to colour by: the data's own, or one group `all cells` when there are none. Cells
/// without a label form their own group, `no label`, drawn last; the scores leave them out.
#[derive(Debug, Clone)]
pub struct Colouring {
    /// The legend's groups: the labels, then `no label` when some cell has none.
    pub names: Vec<String>,
    /// Each cell's group in `names`.
    pub codes: Vec<usize>,
    /// The cells' labels, when real labels were given (scores are computed only then).
    pub labels: Option<Labels>,
}

/// The legend name of the cells without a label.
const NO_LABEL: &str = "no label";

impl Colouring {
    pub fn new(labels: Option<&Labels>, cells: usize) -> Self {
        match labels {
            Some(l) => {
                let mut names: Vec<String> = l.names.iter().map(|n| legend_name(n)).collect();
                let missing = names.len();
                if l.missing() > 0 {
                    names.push(NO_LABEL.into());
                }
                Self {
                    names,
                    codes: l.codes.iter().map(|c| c.unwrap_or(missing)).collect(),
                    labels: Some(l.clone()),
                }
            }
            None => Self::groups(vec!["all cells (no labels)".into()], vec![0; cells]),
        }
    }

    /// Groups that are not labels to score against (clusters, say): names and each cell's group.
    pub fn groups(names: Vec<String>, codes: Vec<usize>) -> Self {
        Self {
            names,
            codes,
            labels: None,
        }
    }

    /// Whether real labels were given.
    pub fn labelled(&self) -> bool {
        self.labels.is_some()
    }

    /// The number of distinct labels (0 without labels).
    pub fn classes(&self) -> usize {
        self.labels.as_ref().map_or(0, Labels::n_classes)
    }

    /// The number of cells without a label.
    pub fn missing(&self) -> usize {
        self.labels.as_ref().map_or(0, Labels::missing)
    }

    /// The label codes of the labelled cells, in cell order (empty without labels).
    pub fn truth(&self) -> Vec<usize> {
        self.labels
            .as_ref()
            .map(Labels::known_codes)
            .unwrap_or_default()
    }

    /// The entries of the per-cell `values` at the labelled cells (all of them without labels).
    pub fn pick<T: Clone>(&self, values: &[T]) -> Vec<T> {
        match &self.labels {
            Some(l) => l.pick(values),
            None => values.to_vec(),
        }
    }

    /// The rows of `x` (one per cell) of the labelled cells: `x` itself, not a copy, when every
    /// cell has a label.
    pub fn labelled_rows<'a>(&self, x: ArrayView2<'a, f32>) -> CowArray<'a, f32, Ix2> {
        match &self.labels {
            Some(l) if l.missing() > 0 => x.select(Axis(0), &l.labelled_cells()).into(),
            _ => x.into(),
        }
    }

    /// Scores `x` against the labels; `None` when there are none or only one label. Cells
    /// without a label are left out: the silhouette is that of the labelled cells, and k-means
    /// clusters every cell but is scored on the labelled ones.
    pub fn score(&self, x: ArrayView2<'_, f32>, cfg: &ScoreConfig) -> Result<Option<Scores>> {
        if !self.labelled() || self.classes() < 2 {
            return Ok(None);
        }
        let truth = self.truth();
        let silhouette =
            scae_eval::silhouette_score(self.labelled_rows(x).view(), &truth, cfg.seed)?;
        let km = self.pick(&cfg.kmeans(x, self.classes())?);
        Ok(Some(Scores {
            silhouette,
            ari: scae_eval::adjusted_rand_index(&truth, &km)?,
            nmi: scae_eval::normalized_mutual_info(&truth, &km)?,
            accuracy: scae_eval::hungarian_accuracy(&truth, &km)?,
        }))
    }

    /// [`Colouring::score`] as a named table row.
    pub fn scored(&self, name: &str, x: ArrayView2<'_, f32>, cfg: &ScoreConfig) -> Result<Scored> {
        let scores = self.score(x, cfg)?;
        if let Some(s) = &scores {
            tracing::info!(
                silhouette = format!("{:.4}", s.silhouette),
                ari = format!("{:.4}", s.ari),
                nmi = format!("{:.4}", s.nmi),
                "scored {name}"
            );
        }
        Ok(Scored {
            name: name.into(),
            dims: x.ncols(),
            scores,
        })
    }
}

/// Integer labels read as `label 3`; other names as they are.
fn legend_name(name: &str) -> String {
    if name.parse::<i64>().is_ok() {
        format!("label {name}")
    } else {
        name.to_owned()
    }
}

/// A 2-D embedding with its axis names, ready to be saved and drawn.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// Panel title.
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Cells x 2.
    pub coords: Array2<f32>,
}

/// PCA of `x` with up to `k` components (fewer when the data allow fewer).
pub fn fit_pca(x: ArrayView2<'_, f32>, k: usize) -> Result<Pca> {
    let k = k.min(x.nrows().saturating_sub(1)).min(x.ncols()).max(1);
    Ok(scae_eval::pca(x, k)?)
}

/// The PCA scores as an `f32` matrix (t-SNE's and the scores' input).
pub fn scores_f32(p: &Pca) -> Array2<f32> {
    p.scores.mapv(|v| v as f32)
}

/// Projection of `x` onto the components of `p` (`(x - mean) components^T`).
pub fn project(p: &Pca, x: ArrayView2<'_, f32>) -> Array2<f32> {
    let centred = x.mapv(f64::from) - p.mean.view().insert_axis(Axis(0));
    centred.dot(&p.components.t()).mapv(|v| v as f32)
}

/// Fraction of the total variance of `x` that lies along each component of `p`.
pub fn variance_fractions(p: &Pca, x: ArrayView2<'_, f32>) -> Vec<f64> {
    let total = total_variance(x);
    column_variances(project(p, x).view())
        .into_iter()
        .map(|v| if total > 0.0 { v / total } else { 0.0 })
        .collect()
}

/// Sum of the columns' variances (ddof 1).
pub fn total_variance(x: ArrayView2<'_, f32>) -> f64 {
    column_variances(x).iter().sum()
}

/// The variance (ddof 1) of each column, accumulated in `f64`; zeros for fewer than 2 rows.
fn column_variances(x: ArrayView2<'_, f32>) -> Vec<f64> {
    let n = x.nrows() as f64;
    x.columns()
        .into_iter()
        .map(|col| {
            if n < 2.0 {
                return 0.0;
            }
            let mean = col.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            col.iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0)
        })
        .collect()
}

/// The first two columns of PCA coordinates as an embedding whose axes carry the fraction of
/// variance along them.
pub fn pca_embedding(title: &str, coords: Array2<f32>, fractions: &[f64]) -> Embedding {
    let axis = |j: usize| match fractions.get(j) {
        Some(f) => format!("PC{} ({:.1} % of variance)", j + 1, f * 100.0),
        None => format!("PC{}", j + 1),
    };
    let coords = if coords.ncols() >= 2 {
        coords.slice(s![.., 0..2]).to_owned()
    } else {
        // A one-component PCA: plot it against zero.
        let mut c = Array2::zeros((coords.nrows(), 2));
        c.column_mut(0).assign(&coords.column(0));
        c
    };
    Embedding {
        title: title.into(),
        x_label: axis(0),
        y_label: axis(1),
        coords,
    }
}

/// t-SNE of `x` (reduced to its principal components first when wider than the config says).
pub fn tsne_embedding(
    title: &str,
    x: ArrayView2<'_, f32>,
    params: &TsneParams,
) -> Result<Embedding> {
    let started = std::time::Instant::now();
    let fit = scae_eval::tsne(x, params).with_context(|| format!("t-SNE of {title}"))?;
    tracing::info!(
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        "t-SNE of {title}"
    );
    Ok(Embedding {
        title: title.into(),
        x_label: "t-SNE 1".into(),
        y_label: "t-SNE 2".into(),
        coords: fit.embedding,
    })
}

/// Saves each panel's coordinates as `<stem>_<i>.npy`-style names given in `files`, then draws
/// the panels side by side as `<stem>.png` and `<stem>.svg` in `dir`.
pub fn save_figure(
    dir: &Path,
    stem: &str,
    title: &str,
    colouring: &Colouring,
    panels: &[(&str, &Embedding)],
) -> Result<()> {
    let mut scatter = Vec::with_capacity(panels.len());
    for (file, e) in panels {
        scae_io::write_npy(&dir.join(format!("{file}.npy")), &e.coords.view())?;
        scatter.push(scae_viz::ScatterPanel {
            title: e.title.clone(),
            x_label: e.x_label.clone(),
            y_label: e.y_label.clone(),
            x: e.coords.column(0).iter().map(|&v| f64::from(v)).collect(),
            y: e.coords.column(1).iter().map(|&v| f64::from(v)).collect(),
            labels: colouring.codes.clone(),
        });
    }
    for ext in ["png", "svg"] {
        scae_viz::scatter_figure(
            &dir.join(format!("{stem}.{ext}")),
            title,
            &colouring.names,
            &scatter,
        )?;
    }
    Ok(())
}

/// A markdown table of scored representations.
pub fn scores_table(md: &mut String, rows: &[&Scored]) {
    let _ = writeln!(
        md,
        "| representation | dims | silhouette by label | k-means ARI | k-means NMI | k-means accuracy |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for r in rows {
        match &r.scores {
            Some(s) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} |",
                    r.name, r.dims, s.silhouette, s.ari, s.nmi, s.accuracy
                );
            }
            None => {
                let _ = writeln!(md, "| {} | {} | - | - | - | - |", r.name, r.dims);
            }
        }
    }
}

/// `+0.123 (0.456 -> 0.579)`: how a score moved between two representations.
pub fn change(before: f64, after: f64) -> String {
    format!("{:+.3} ({before:.3} -> {after:.3})", after - before)
}

/// Sum of the first `k` entries.
pub fn cumulative(fractions: &[f64], k: usize) -> f64 {
    fractions.iter().take(k).sum()
}
