//! Q4: Q1's autoencoder retrained with a 2-D latent space; the latent codes
//! plotted directly, coloured by label, beside the first two principal
//! components of the same data (the linear 2-D view) for reference.
//!
//! Writes `results/q4/`: `latent<N>/` (the model, as Q1 saves its models),
//! `latent.png`/`.svg`, the panels' coordinates as `.npy`, `metrics.json` and
//! a generated `report.md`.

use std::fmt::Write as _;

use anyhow::Result;
use scae_eval::ReconstructionError;
use serde::Serialize;

use super::RunArgs;
use super::embed::{self, Colouring, Embedding, Scored};
use crate::config::{AeStudy, Q4Config, base_study, load_question};
use crate::provenance::Provenance;

/// Mean silhouette of one label's cells in the latent space.
#[derive(Debug, Clone, Serialize)]
pub struct LabelSilhouette {
    pub label: String,
    pub cells: usize,
    pub silhouette: f64,
}

#[derive(Debug, Serialize)]
struct Metrics<'a> {
    provenance: Provenance,
    config: &'a Q4Config,
    models_config: &'a AeStudy,
    final_train_loss: f64,
    test_error: ReconstructionError,
    scores: &'a [Scored],
    latent_silhouette_by_label: &'a [LabelSilhouette],
}

pub fn run(args: &RunArgs) -> Result<()> {
    let cfg_path = args.config_path("q4");
    let cfg: Q4Config = load_question(&cfg_path, |c: &Q4Config| c.latent, |c| c.score_components)?;
    let base = base_study(&cfg_path, &cfg.models)?;
    let mut study = base.clone();
    study.latents = vec![cfg.latent];
    let started = super::Started::question(args, "q4", &study)?;
    let (data, prepared, out) = (&started.data, &started.prepared, started.run.path());
    let q1_losses = super::q1_test_losses(&args.root, &base, data).unwrap_or_default();
    let model =
        super::q1::train_models(&study, prepared, &data.var_names, started.run.device)?.remove(0);
    model.save_with_latent(&out.join(format!("latent{}", cfg.latent)), &prepared.all())?;
    super::write_test_indices(out, &prepared.split)?;
    let test_error = scae_eval::reconstruction_error(
        data.rows(&prepared.split.test).view(),
        model.reconstruct(&prepared.test()?)?.view(),
    )?;
    let latent = model.encode(&prepared.all())?;
    let colouring = Colouring::new(data.labels.as_ref(), data.x.nrows());

    let pca = embed::fit_pca(data.x.view(), cfg.score_components)?;
    let pcs = embed::scores_f32(&pca);
    let pca_2d = embed::pca_embedding(
        "PCA of the original data",
        pcs.clone(),
        &pca.explained_variance_ratio.to_vec(),
    );
    let latent_2d = if latent.ncols() == 2 {
        Embedding {
            title: format!("Autoencoder latent space ({} dims)", cfg.latent),
            x_label: "latent 1".into(),
            y_label: "latent 2".into(),
            coords: latent.clone(),
        }
    } else {
        // A latent wider than 2 is shown through its first two principal components.
        let lp = embed::fit_pca(latent.view(), 2)?;
        embed::pca_embedding(
            &format!("Autoencoder latent space ({} dims), PCA", cfg.latent),
            embed::scores_f32(&lp),
            &lp.explained_variance_ratio.to_vec(),
        )
    };
    embed::save_figure(
        out,
        "latent",
        &format!(
            "Q4: {}-D latent space of the autoencoder vs the first two PCs",
            cfg.latent
        ),
        &colouring,
        &[("latent_2d", &latent_2d), ("pca_original", &pca_2d)],
    )?;

    let sc = &cfg.scores;
    let scores = vec![
        colouring.scored(
            &format!("autoencoder latent ({} dims)", cfg.latent),
            latent.view(),
            sc,
        )?,
        colouring.scored("PCA of the original, PC1-2", pca_2d.coords.view(), sc)?,
        colouring.scored(
            &format!("PCA of the original, {} PCs", pcs.ncols()),
            pcs.view(),
            sc,
        )?,
    ];
    let by_label = if colouring.labelled() && colouring.classes() >= 2 {
        // Cells without a label are left out of the silhouette.
        let truth = colouring.truth();
        let per_cell =
            scae_eval::silhouette_samples(colouring.labelled_rows(latent.view()).view(), &truth)?;
        let mut by_label: Vec<LabelSilhouette> = colouring.names[..colouring.classes()]
            .iter()
            .enumerate()
            .map(|(code, name)| {
                let values: Vec<f64> = (per_cell.iter().zip(&truth))
                    .filter(|&(_, &c)| c == code)
                    .map(|(&v, _)| v)
                    .collect();
                LabelSilhouette {
                    label: name.clone(),
                    cells: values.len(),
                    silhouette: values.iter().sum::<f64>() / values.len().max(1) as f64,
                }
            })
            .collect();
        by_label.sort_by(|a, b| b.silhouette.total_cmp(&a.silhouette));
        by_label
    } else {
        Vec::new()
    };
    let final_train_loss = model
        .history
        .train_losses()
        .last()
        .copied()
        .unwrap_or(f64::NAN);
    let report = report_markdown(
        &cfg,
        &study,
        &test_error,
        &scores,
        &by_label,
        data,
        &q1_losses,
    );
    scae_io::write_atomic(&out.join("report.md"), |w| {
        std::io::Write::write_all(w, report.as_bytes())
    })?;
    let metrics = Metrics {
        provenance: started.provenance(study.seed),
        config: &cfg,
        models_config: &study,
        final_train_loss,
        test_error,
        scores: &scores,
        latent_silhouette_by_label: &by_label,
    };
    let dest = started.run.finish(&metrics)?;
    eprintln!("Q4 results written to {}", dest.display());
    Ok(())
}

fn report_markdown(
    cfg: &Q4Config,
    study: &AeStudy,
    test_error: &ReconstructionError,
    scores: &[Scored],
    by_label: &[LabelSilhouette],
    data: &crate::data::Dataset,
    q1_losses: &[(usize, f64)],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Q4: a {}-dimensional latent space\n", cfg.latent);
    let _ = writeln!(
        md,
        "Q1's autoencoder (genes -> {:?} -> {} -> mirrored, {}, {} epochs, seed {}) retrained with latent size {} \
         on {} cells x {} genes. Test MSE {:.5} (nonzero entries {:.5}, zero entries {:.5}).\n",
        study.hidden,
        cfg.latent,
        study.loss.name(),
        study.train.epochs,
        study.seed,
        cfg.latent,
        data.x.nrows(),
        data.x.ncols(),
        test_error.all,
        test_error.nonzero,
        test_error.zero,
    );
    let _ = writeln!(md, "![latent space](latent.png)\n");
    let _ = writeln!(md, "## Scores against the labels\n");
    embed::unlabelled_note(&mut md, &data.source);
    embed::scores_table(&mut md, &scores.iter().collect::<Vec<_>>());
    if !by_label.is_empty() {
        let _ = writeln!(
            md,
            "\n## Silhouette of each label in the latent space\n\n| label | cells | mean silhouette |\n|---|---:|---:|"
        );
        for l in by_label {
            let _ = writeln!(md, "| {} | {} | {:.4} |", l.label, l.cells, l.silhouette);
        }
    }
    let _ = writeln!(md, "\n## Discussion\n");
    let (Some(ae), Some(pc2), Some(pcs)) = (
        scores[0].scores,
        scores.get(1).and_then(|s| s.scores),
        scores.get(2).and_then(|s| s.scores),
    ) else {
        let _ = writeln!(
            md,
            "The data have no labels, so no separation scores are given."
        );
        return md;
    };
    let quality = if ae.silhouette > 0.5 {
        "well separated"
    } else if ae.silhouette > 0.25 {
        "separated, with some overlap at their borders"
    } else if ae.silhouette > 0.0 {
        "only partly separated: the groups overlap substantially"
    } else {
        "not separated"
    };
    let _ = writeln!(
        md,
        "In the {}-D latent space the labelled groups are {quality} (silhouette {:.3}); k-means with k = {} \
         recovers them with ARI {:.3}, NMI {:.3} and accuracy {:.3}.",
        cfg.latent,
        ae.silhouette,
        data.labels.as_ref().map_or(0, |l| l.n_classes()),
        ae.ari,
        ae.nmi,
        ae.accuracy,
    );
    if let (Some(best), Some(worst)) = (by_label.first(), by_label.last())
        && by_label.len() >= 2
    {
        let _ = writeln!(
            md,
            "The most compact group is {} (mean silhouette {:.3}, {} cells) and the least {} ({:.3}, {} cells).",
            best.label, best.silhouette, best.cells, worst.label, worst.silhouette, worst.cells
        );
    }
    let vs = |a: f64, b: f64| if a > b { "higher" } else { "lower" };
    let _ = writeln!(
        md,
        "\nAgainst the best linear 2-D view of the same data (the first two principal components), the autoencoder's \
         2-D code has a {} silhouette ({:.3} vs {:.3}) and a {} k-means ARI ({:.3} vs {:.3}). With all {} principal \
         components k-means reaches ARI {:.3}, the structure available to a clustering that is not squeezed into two \
         dimensions.",
        vs(ae.silhouette, pc2.silhouette),
        ae.silhouette,
        pc2.silhouette,
        vs(ae.ari, pc2.ari),
        ae.ari,
        pc2.ari,
        scores[2].dims,
        pcs.ari,
    );
    let captured = ae.ari / pcs.ari.max(f64::EPSILON);
    let compare = if q1_losses.is_empty() {
        "Q1's models were not run on this data with this config, so there is no comparison"
            .to_owned()
    } else {
        let listed: Vec<String> = q1_losses
            .iter()
            .map(|(l, loss)| format!("latent {l}: {loss:.5}"))
            .collect();
        format!(
            "Q1's final test losses on the same split: {}",
            listed.join(", ")
        )
    };
    let _ = writeln!(
        md,
        "\nWhat this says about the autoencoder: trained only to reconstruct expression (it never saw the labels), it \
         places cells of the same group together, so the group structure is the dominant signal it must keep to \
         reconstruct well. Its 2-D code recovers {:.0} % of the k-means ARI that {} PCs reach{}. A 2-D bottleneck \
         costs reconstruction accuracy (test MSE {:.5}; {compare}) because everything within a group must be \
         described by position along a curve or patch in the plane.",
        captured * 100.0,
        scores[2].dims,
        if ae.ari >= pc2.ari {
            ", and as a nonlinear map it separates the groups at least as well as the linear 2-D projection"
        } else {
            "; the linear 2-D projection separates the groups better here, so the nonlinear code spends its two \
             dimensions on variation other than the labels"
        },
        test_error.all,
    );
    md
}
