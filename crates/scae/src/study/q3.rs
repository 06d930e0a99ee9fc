//! Q3: PCA and t-SNE of the original data against the reconstruction of Q1's
//! latent-10 autoencoder, coloured by label and scored against the labels.
//!
//! Writes `results/q3/`: `pca.png`/`.svg` and `tsne.png`/`.svg` (original |
//! reconstructed), the coordinates of every panel as `.npy`, `metrics.json`
//! and a generated `report.md`.
//!
//! The PCA panels share one frame, the principal axes of the original data,
//! so the reconstruction is seen from the same viewpoint and any change of
//! spread or shape is the autoencoder's doing, not a rotation. Each t-SNE is
//! fitted on its own matrix's principal components, as one would run t-SNE on
//! either matrix alone.

use std::fmt::Write as _;

use anyhow::Result;
use ndarray::{ArrayView2, s};
use scae_eval::ReconstructionError;
use serde::Serialize;

use super::RunArgs;
use super::embed::{self, Colouring, Scored};
use crate::config::{AeStudy, Q3Config, base_study, load_question};
use crate::provenance::Provenance;

/// Variance figures of the original data and the reconstruction.
#[derive(Debug, Clone, Serialize)]
pub struct Variance {
    /// Total variance (sum of the genes' variances) of the original data.
    pub original_total: f64,
    /// Total variance of the reconstruction.
    pub reconstruction_total: f64,
    /// Fraction of the original's variance along its PC1 and PC2.
    pub original_pc12: f64,
    /// Fraction of the reconstruction's variance along the original's PC1 and PC2.
    pub reconstruction_pc12_in_original_frame: f64,
    /// Fraction of each matrix's variance in its own first 10 principal components.
    pub original_top10: f64,
    pub reconstruction_top10: f64,
}

#[derive(Debug, Serialize)]
struct Metrics<'a> {
    provenance: Provenance,
    config: &'a Q3Config,
    models_config: &'a AeStudy,
    model_note: &'a str,
    test_error: ReconstructionError,
    variance: &'a Variance,
    scores: &'a [Scored],
}

/// The scores Q3 computes, by name.
struct Q3Scores {
    pca_original: Scored,
    pca_reconstruction: Scored,
    tsne_original: Scored,
    tsne_reconstruction: Scored,
    pcs_original: Scored,
    pcs_reconstruction: Scored,
    latent: Scored,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let cfg_path = args.config_path("q3");
    let cfg: Q3Config = load_question(&cfg_path, |c: &Q3Config| c.latent, |c| c.score_components)?;
    let study = base_study(&cfg_path, &cfg.models)?;
    let started = super::Started::question(args, "q3", &study)?;
    let (data, prepared, out) = (&started.data, &started.prepared, started.run.path());
    cfg.tsne.validate().map_err(scae_eval::Error::from)?;
    cfg.tsne
        .check_cells(data.x.nrows())
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?;
    let (model, note) = super::q1_model_or_train(
        &args.root,
        &study,
        cfg.latent,
        prepared,
        data,
        started.run.device,
    )?;
    let original = data.x.view();
    let recon = model.reconstruct(&prepared.all())?;
    let latent = model.encode(&prepared.all())?;
    let test_error = scae_eval::reconstruction_error(
        data.rows(&prepared.split.test).view(),
        model.reconstruct(&prepared.test()?)?.view(),
    )?;
    let colouring = Colouring::new(data.labels.as_ref(), data.x.nrows());

    // PCA: the original's own, the reconstruction in the original's frame, and the
    // reconstruction's own (the t-SNE input and the variance concentration).
    let pca_orig = embed::fit_pca(original, cfg.score_components)?;
    let pca_recon = embed::fit_pca(recon.view(), cfg.score_components)?;
    let orig_pcs = embed::scores_f32(&pca_orig);
    let recon_pcs = embed::scores_f32(&pca_recon);
    let recon_in_orig = embed::project(&pca_orig, recon.view());
    let orig_fractions = pca_orig.explained_variance_ratio.to_vec();
    let recon_fractions = embed::variance_fractions(&pca_orig, recon.view());
    let variance = Variance {
        original_total: embed::total_variance(original),
        reconstruction_total: embed::total_variance(recon.view()),
        original_pc12: embed::cumulative(&orig_fractions, 2),
        reconstruction_pc12_in_original_frame: embed::cumulative(&recon_fractions, 2),
        original_top10: embed::cumulative(&orig_fractions, 10),
        reconstruction_top10: embed::cumulative(&pca_recon.explained_variance_ratio.to_vec(), 10),
    };

    let pca_o = embed::pca_embedding("Original data", orig_pcs.clone(), &orig_fractions);
    let pca_r = embed::pca_embedding(
        &format!("Reconstruction, latent {}", cfg.latent),
        recon_in_orig,
        &recon_fractions,
    );
    embed::save_figure(
        out,
        "pca",
        "Q3: PCA of original vs reconstructed data (axes: PCs of the original)",
        &colouring,
        &[("pca_original", &pca_o), ("pca_reconstruction", &pca_r)],
    )?;
    let tsne_o = embed::tsne_embedding(
        "Original data",
        tsne_input(original, &orig_pcs, cfg.tsne.pca_components),
        &cfg.tsne,
    )?;
    let tsne_r = embed::tsne_embedding(
        &format!("Reconstruction, latent {}", cfg.latent),
        tsne_input(recon.view(), &recon_pcs, cfg.tsne.pca_components),
        &cfg.tsne,
    )?;
    embed::save_figure(
        out,
        "tsne",
        &format!(
            "Q3: t-SNE of original vs reconstructed data (perplexity {})",
            cfg.tsne.perplexity
        ),
        &colouring,
        &[("tsne_original", &tsne_o), ("tsne_reconstruction", &tsne_r)],
    )?;

    let sc = &cfg.scores;
    let k = orig_pcs.ncols();
    let scores = Q3Scores {
        pca_original: colouring.scored("PCA (PC1-2) of the original", pca_o.coords.view(), sc)?,
        pca_reconstruction: colouring.scored(
            "PCA (original's PC1-2) of the reconstruction",
            pca_r.coords.view(),
            sc,
        )?,
        tsne_original: colouring.scored("t-SNE of the original", tsne_o.coords.view(), sc)?,
        tsne_reconstruction: colouring.scored(
            "t-SNE of the reconstruction",
            tsne_r.coords.view(),
            sc,
        )?,
        pcs_original: colouring.scored(&format!("original, {k} PCs"), orig_pcs.view(), sc)?,
        pcs_reconstruction: colouring.scored(
            &format!("reconstruction, {} PCs", recon_pcs.ncols()),
            recon_pcs.view(),
            sc,
        )?,
        latent: colouring.scored(
            &format!("latent code ({} dims)", cfg.latent),
            latent.view(),
            sc,
        )?,
    };
    let report = report_markdown(&cfg, &study, &note, &test_error, &variance, &scores, data);
    scae_io::write_atomic(&out.join("report.md"), |w| {
        std::io::Write::write_all(w, report.as_bytes())
    })?;
    let all = scores.all();
    let metrics = Metrics {
        provenance: started.provenance(study.seed),
        config: &cfg,
        models_config: &study,
        model_note: &note,
        test_error,
        variance: &variance,
        scores: &all,
    };
    let dest = started.run.finish(&metrics)?;
    eprintln!("Q3 results written to {}", dest.display());
    Ok(())
}

impl Q3Scores {
    fn all(&self) -> Vec<Scored> {
        [
            &self.pca_original,
            &self.pca_reconstruction,
            &self.tsne_original,
            &self.tsne_reconstruction,
            &self.pcs_original,
            &self.pcs_reconstruction,
            &self.latent,
        ]
        .into_iter()
        .cloned()
        .collect()
    }
}

/// The matrix t-SNE starts from: the already computed PCs when t-SNE would reduce `x` to `k`
/// components itself (same result, one PCA less), else `x` as it is.
pub fn tsne_input<'a>(
    x: ArrayView2<'a, f32>,
    pcs: &'a ndarray::Array2<f32>,
    k: usize,
) -> ArrayView2<'a, f32> {
    if k > 0 && x.ncols() > k && pcs.ncols() >= k {
        pcs.slice(s![.., ..k])
    } else {
        x
    }
}

fn report_markdown(
    cfg: &Q3Config,
    study: &AeStudy,
    note: &str,
    test_error: &ReconstructionError,
    v: &Variance,
    s: &Q3Scores,
    data: &crate::data::Dataset,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Q3: visualising the reconstructions\n");
    let _ = writeln!(
        md,
        "Autoencoder with latent size {} ({} epochs, {}, seed {}; {note}); data: {} cells x {} genes. \
         Its test MSE is {:.5} (nonzero entries {:.5}, zero entries {:.5}). t-SNE: perplexity {}, \
         {} iterations, {:?} method, inputs reduced to {} principal components, seed {}.\n",
        cfg.latent,
        study.train.epochs,
        study.loss.name(),
        study.seed,
        data.x.nrows(),
        data.x.ncols(),
        test_error.all,
        test_error.nonzero,
        test_error.zero,
        cfg.tsne.perplexity,
        cfg.tsne.n_iter,
        cfg.tsne.method,
        cfg.tsne.pca_components,
        cfg.tsne.seed,
    );
    let _ = writeln!(md, "![PCA](pca.png)\n\n![t-SNE](tsne.png)\n");
    let _ = writeln!(md, "## Scores against the labels\n");
    embed::unlabelled_note(&mut md, &data.source);
    let _ = writeln!(
        md,
        "Silhouette of each representation grouped by the labels, and k-means (k = number of labels, \
         {} seeded restarts) on the same representation scored against the labels.\n",
        cfg.scores.kmeans_restarts
    );
    embed::scores_table(
        &mut md,
        &[
            &s.pca_original,
            &s.pca_reconstruction,
            &s.tsne_original,
            &s.tsne_reconstruction,
            &s.pcs_original,
            &s.pcs_reconstruction,
            &s.latent,
        ],
    );
    let _ = writeln!(md, "\n## Variance\n");
    let _ = writeln!(md, "| | original | reconstruction |\n|---|---:|---:|");
    let _ = writeln!(
        md,
        "| total variance (sum over genes) | {:.2} | {:.2} |",
        v.original_total, v.reconstruction_total
    );
    let _ = writeln!(
        md,
        "| share along the original's PC1-2 | {:.1} % | {:.1} % |",
        v.original_pc12 * 100.0,
        v.reconstruction_pc12_in_original_frame * 100.0
    );
    let _ = writeln!(
        md,
        "| share in its own first 10 PCs | {:.1} % | {:.1} % |",
        v.original_top10 * 100.0,
        v.reconstruction_top10 * 100.0
    );
    discuss(&mut md, data.x.ncols(), cfg, test_error, v, s);
    md
}

fn discuss(
    md: &mut String,
    genes: usize,
    cfg: &Q3Config,
    test_error: &ReconstructionError,
    v: &Variance,
    s: &Q3Scores,
) {
    let _ = writeln!(md, "\n## Discussion\n");
    let kept = v.reconstruction_total / v.original_total;
    let _ = writeln!(
        md,
        "**PCA.** The reconstruction keeps {:.1} % of the original's total variance. Along the original's first \
         two principal axes lies {:.1} % of the reconstruction's variance against {:.1} % of the original's, and \
         its own first 10 components hold {:.1} % of its variance against {:.1} % for the original: the \
         reconstruction is {} concentrated in a few directions.",
        kept * 100.0,
        v.reconstruction_pc12_in_original_frame * 100.0,
        v.original_pc12 * 100.0,
        v.reconstruction_top10 * 100.0,
        v.original_top10 * 100.0,
        if v.reconstruction_top10 > v.original_top10 {
            "far more"
        } else {
            "not more"
        },
    );
    if let (Some(po), Some(pr), Some(to), Some(tr)) = (
        s.pca_original.scores,
        s.pca_reconstruction.scores,
        s.tsne_original.scores,
        s.tsne_reconstruction.scores,
    ) {
        let verdict = |before: f64, after: f64| {
            if after > before + 0.02 {
                "better separated in the reconstruction than in the original"
            } else if after < before - 0.02 {
                "less well separated in the reconstruction than in the original"
            } else {
                "about as well separated in the reconstruction as in the original"
            }
        };
        let _ = writeln!(
            md,
            "In the PCA plane the labelled groups are {}: silhouette \
             {}, k-means ARI {}, NMI {}.\n",
            verdict(po.silhouette, pr.silhouette),
            embed::change(po.silhouette, pr.silhouette),
            embed::change(po.ari, pr.ari),
            embed::change(po.nmi, pr.nmi),
        );
        let _ = writeln!(
            md,
            "**t-SNE.** In t-SNE the groups are {}: silhouette {}, k-means ARI {}, NMI {}. \
             t-SNE preserves local neighbourhoods, so it shows what the reconstruction does to each cell's nearest \
             neighbours rather than to the large directions PCA shows.\n",
            verdict(to.silhouette, tr.silhouette),
            embed::change(to.silhouette, tr.silhouette),
            embed::change(to.ari, tr.ari),
            embed::change(to.nmi, tr.nmi),
        );
    } else {
        let _ = writeln!(
            md,
            "\nThe data have no labels, so no separation scores are given.\n"
        );
    }
    let _ = writeln!(
        md,
        "**Why.** Every reconstruction is a function of only {} latent numbers per cell, so the reconstructed cells \
         lie on a {}-dimensional surface inside the {}-dimensional gene space. Training with MSE makes the decoder \
         output the expected expression given the code: the variation the code cannot carry (gene-level noise, \
         dropout of individual counts, and fine structure within groups) is averaged away, which is why the total \
         variance shrinks to {:.1} % and concentrates in a few directions. What remains is the structure shared by \
         many genes, which is what separates cell groups. Zeros are not reproduced as zeros: at entries that are zero \
         in the test data the reconstruction's root-mean-square value is {:.3} (MSE {:.5} there, against {:.5} on \
         nonzero entries), so the sparse, dropout-heavy original becomes a dense, smooth matrix.",
        cfg.latent,
        cfg.latent,
        genes,
        kept * 100.0,
        test_error.zero.sqrt(),
        test_error.zero,
        test_error.nonzero,
    );
    if let (Some(to), Some(tr), Some(lat), Some(pcs)) = (
        s.tsne_original.scores,
        s.tsne_reconstruction.scores,
        s.latent.scores,
        s.pcs_original.scores,
    ) {
        let _ = writeln!(
            md,
            "\nThe latent code itself scores k-means ARI {:.3} against {:.3} for the original's {} PCs: {}. {}",
            lat.ari,
            pcs.ari,
            s.pcs_original.dims,
            if lat.ari < pcs.ari - 0.02 {
                "the 10 numbers per cell already lose part of what separates the labels, and the decoder cannot \
                 put it back"
            } else {
                "the code keeps what separates the labels"
            },
            if tr.silhouette < to.silhouette - 0.02 {
                "In t-SNE, which looks at each cell's nearest neighbours, that loss shows: cells whose codes sit \
                 between groups are decoded to profiles between the groups, so boundary cells mix more than in the \
                 original, even though the smoothing tightens the bulk of each group."
            } else if tr.silhouette > to.silhouette + 0.02 {
                "In t-SNE the smoothing wins: with the gene-level noise averaged away, each cell's nearest \
                 neighbours are more often cells of its own group, so the groups stand out more clearly than in \
                 the original."
            } else {
                "In t-SNE the two effects balance: noise removed within groups, boundary cells mixed between them."
            }
        );
    }
}
