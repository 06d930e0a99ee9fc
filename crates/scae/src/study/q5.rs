//! Q5: the autoencoder trained with the assignment's `nonzero_mse` loss,
//! compared with Q1's MSE model of the same latent size (the one Q2 reports).
//!
//! Writes `results/q5/`: the new model's folder, `errors.csv` (MSE over all,
//! nonzero and zero entries, train and test, both models), the four figures
//! the assignment asks for (`pca_reconstruction`, `pca_latent`,
//! `tsne_reconstruction`, `tsne_latent`, each original | other, PNG and SVG),
//! the coordinates of every panel, `metrics.json` and a generated `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use ndarray::ArrayView2;
use scae_eval::ReconstructionError;
use serde::Serialize;

use super::RunArgs;
use super::embed::{self, Colouring, Scored};
use super::q3::tsne_input;
use crate::config::{AeStudy, Q5Config, base_study, load_question};
use crate::provenance::Provenance;

/// Reconstruction errors of one model, and its mean output at zero and nonzero test entries.
#[derive(Debug, Clone, Serialize)]
pub struct ModelErrors {
    pub model: String,
    pub loss: String,
    pub train: ReconstructionError,
    pub test: ReconstructionError,
    /// Mean reconstructed value over the test entries that are zero in the data.
    pub mean_output_at_zeros: f64,
    /// Mean reconstructed value over the test entries that are nonzero in the data.
    pub mean_output_at_nonzeros: f64,
    /// Mean of the data's nonzero test entries, for comparison.
    pub mean_nonzero_value: f64,
}

#[derive(Debug, Serialize)]
struct Metrics<'a> {
    provenance: Provenance,
    config: &'a Q5Config,
    models_config: &'a AeStudy,
    mse_model_note: &'a str,
    errors: &'a [ModelErrors; 2],
    scores: &'a [Scored],
}

pub fn run(args: &RunArgs) -> Result<()> {
    let cfg_path = args.config_path("q5");
    let cfg: Q5Config = load_question(&cfg_path, |c: &Q5Config| c.latent, |c| c.score_components)?;
    let study = base_study(&cfg_path, &cfg.models)?;
    let mut new_study = study.clone();
    new_study.latents = vec![cfg.latent];
    new_study.loss = cfg.loss;
    let started = super::Started::question(args, "q5", &study)?;
    let (data, prepared, out) = (&started.data, &started.prepared, started.run.path());
    cfg.tsne.validate().map_err(scae_eval::Error::from)?;
    cfg.tsne
        .check_cells(data.x.nrows())
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?;
    let (mse_model, note) = super::q1_model_or_train(
        &args.root,
        &study,
        cfg.latent,
        prepared,
        data,
        started.run.device,
    )?;
    let model = super::q1::train_models(&new_study, prepared, &data.var_names, started.run.device)?
        .remove(0);
    let name = format!("{}_latent{}", cfg.loss.name(), cfg.latent);
    model.save_with_latent(&out.join(&name), &prepared.all())?;
    super::write_test_indices(out, &prepared.split)?;

    let test_x = data.rows(&prepared.split.test);
    let train_x = data.rows(&prepared.split.train);
    let errors_of = |m: &super::ae::TrainedAe, label: &str| -> Result<ModelErrors> {
        let test_recon = m.reconstruct(&prepared.test()?)?;
        let (at_zeros, at_nonzeros, nonzero_mean) = means_by_zero(test_x.view(), test_recon.view());
        Ok(ModelErrors {
            model: label.into(),
            loss: m.meta.model.loss.name().into(),
            train: scae_eval::reconstruction_error(
                train_x.view(),
                m.reconstruct(&prepared.train()?)?.view(),
            )?,
            test: scae_eval::reconstruction_error(test_x.view(), test_recon.view())?,
            mean_output_at_zeros: at_zeros,
            mean_output_at_nonzeros: at_nonzeros,
            mean_nonzero_value: nonzero_mean,
        })
    };
    let errors = [
        errors_of(&mse_model, &format!("Q2's latent {} (mse)", cfg.latent))?,
        errors_of(
            &model,
            &format!("latent {} ({})", cfg.latent, cfg.loss.name()),
        )?,
    ];
    write_errors_csv(&out.join("errors.csv"), &errors)?;

    let original = data.x.view();
    let recon = model.reconstruct(&prepared.all())?;
    let latent = model.encode(&prepared.all())?;
    let colouring = Colouring::new(data.labels.as_ref(), data.x.nrows());
    let k = cfg.score_components;
    let pca_orig = embed::fit_pca(original, k)?;
    let orig_pcs = embed::scores_f32(&pca_orig);
    let pca_recon = embed::fit_pca(recon.view(), k)?;
    let recon_pcs = embed::scores_f32(&pca_recon);
    let pca_latent = embed::fit_pca(latent.view(), 2)?;
    let loss = cfg.loss.name();

    let pca_o = embed::pca_embedding(
        "Original data",
        orig_pcs.clone(),
        &pca_orig.explained_variance_ratio.to_vec(),
    );
    let pca_r = embed::pca_embedding(
        &format!("Reconstruction ({loss})"),
        embed::project(&pca_orig, recon.view()),
        &embed::variance_fractions(&pca_orig, recon.view()),
    );
    let pca_l = embed::pca_embedding(
        &format!("Latent code ({} dims, {loss})", cfg.latent),
        embed::scores_f32(&pca_latent),
        &pca_latent.explained_variance_ratio.to_vec(),
    );
    let dir = out;
    let title =
        |what: &str, how: &str| format!("Q5: {how} of {what} vs original data ({loss} loss)");
    embed::save_figure(
        dir,
        "pca_reconstruction",
        &title("reconstructed data", "PCA (axes: PCs of the original)"),
        &colouring,
        &[("pca_original", &pca_o), ("pca_reconstruction", &pca_r)],
    )?;
    embed::save_figure(
        dir,
        "pca_latent",
        &title("latent embeddings", "PCA"),
        &colouring,
        &[("pca_original", &pca_o), ("pca_latent", &pca_l)],
    )?;
    let p = cfg.tsne.pca_components;
    let tsne_o = embed::tsne_embedding(
        "Original data",
        tsne_input(original, &orig_pcs, p),
        &cfg.tsne,
    )?;
    let tsne_r = embed::tsne_embedding(
        &format!("Reconstruction ({loss})"),
        tsne_input(recon.view(), &recon_pcs, p),
        &cfg.tsne,
    )?;
    let tsne_l = embed::tsne_embedding(
        &format!("Latent code ({} dims, {loss})", cfg.latent),
        latent.view(),
        &cfg.tsne,
    )?;
    embed::save_figure(
        dir,
        "tsne_reconstruction",
        &title("reconstructed data", "t-SNE"),
        &colouring,
        &[("tsne_original", &tsne_o), ("tsne_reconstruction", &tsne_r)],
    )?;
    embed::save_figure(
        dir,
        "tsne_latent",
        &title("latent embeddings", "t-SNE"),
        &colouring,
        &[("tsne_original", &tsne_o), ("tsne_latent", &tsne_l)],
    )?;

    let sc = &cfg.scores;
    let mse_latent = mse_model.encode(&prepared.all())?;
    let mse_recon_pcs = embed::scores_f32(&embed::fit_pca(
        mse_model.reconstruct(&prepared.all())?.view(),
        k,
    )?);
    let scores = vec![
        colouring.scored("PCA of the original, PC1-2", pca_o.coords.view(), sc)?,
        colouring.scored(
            &format!("PCA of the {loss} reconstruction, original's PC1-2"),
            pca_r.coords.view(),
            sc,
        )?,
        colouring.scored(
            &format!("PCA of the {loss} latent, PC1-2"),
            pca_l.coords.view(),
            sc,
        )?,
        colouring.scored("t-SNE of the original", tsne_o.coords.view(), sc)?,
        colouring.scored(
            &format!("t-SNE of the {loss} reconstruction"),
            tsne_r.coords.view(),
            sc,
        )?,
        colouring.scored(
            &format!("t-SNE of the {loss} latent"),
            tsne_l.coords.view(),
            sc,
        )?,
        colouring.scored(
            &format!("original, {} PCs", orig_pcs.ncols()),
            orig_pcs.view(),
            sc,
        )?,
        colouring.scored(
            &format!("{loss} reconstruction, {} PCs", recon_pcs.ncols()),
            recon_pcs.view(),
            sc,
        )?,
        colouring.scored(
            &format!("mse reconstruction, {} PCs", mse_recon_pcs.ncols()),
            mse_recon_pcs.view(),
            sc,
        )?,
        colouring.scored(
            &format!("{loss} latent ({} dims)", cfg.latent),
            latent.view(),
            sc,
        )?,
        colouring.scored(
            &format!("mse latent ({} dims)", cfg.latent),
            mse_latent.view(),
            sc,
        )?,
    ];
    let report = report_markdown(&cfg, &study, &note, &errors, &scores, data);
    scae_io::write_atomic(&out.join("report.md"), |w| {
        std::io::Write::write_all(w, report.as_bytes())
    })?;
    let metrics = Metrics {
        provenance: started.provenance(study.seed),
        config: &cfg,
        models_config: &study,
        mse_model_note: &note,
        errors: &errors,
        scores: &scores,
    };
    let dest = started.run.finish(&metrics)?;
    eprintln!("Q5 results written to {}", dest.display());
    Ok(())
}

/// Mean prediction at the data's zero entries, at its nonzero entries, and the mean nonzero value.
fn means_by_zero(truth: ArrayView2<'_, f32>, pred: ArrayView2<'_, f32>) -> (f64, f64, f64) {
    let (mut zero_sum, mut zero_n, mut nz_sum, mut nz_n, mut value_sum) =
        (0.0, 0usize, 0.0, 0usize, 0.0);
    for (&t, &p) in truth.iter().zip(pred.iter()) {
        if t == 0.0 {
            zero_sum += f64::from(p);
            zero_n += 1;
        } else {
            nz_sum += f64::from(p);
            value_sum += f64::from(t);
            nz_n += 1;
        }
    }
    let mean = |s: f64, n: usize| if n > 0 { s / n as f64 } else { f64::NAN };
    (
        mean(zero_sum, zero_n),
        mean(nz_sum, nz_n),
        mean(value_sum, nz_n),
    )
}

fn write_errors_csv(path: &Path, errors: &[ModelErrors]) -> Result<()> {
    let mut text = String::from(
        "model,loss,train_mse,test_mse,train_mse_nonzero,test_mse_nonzero,train_mse_zero,test_mse_zero,\
         mean_output_at_zeros,mean_output_at_nonzeros\n",
    );
    for e in errors {
        let _ = writeln!(
            text,
            "{},{},{},{},{},{},{},{},{},{}",
            e.model,
            e.loss,
            e.train.all,
            e.test.all,
            e.train.nonzero,
            e.test.nonzero,
            e.train.zero,
            e.test.zero,
            e.mean_output_at_zeros,
            e.mean_output_at_nonzeros
        );
    }
    scae_io::write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    Ok(())
}

fn report_markdown(
    cfg: &Q5Config,
    study: &AeStudy,
    note: &str,
    errors: &[ModelErrors; 2],
    scores: &[Scored],
    data: &crate::data::Dataset,
) -> String {
    let loss = cfg.loss.name();
    let [base, new] = errors;
    let mut md = String::new();
    let _ = writeln!(md, "# Q5: the `{loss}` loss\n");
    let _ = writeln!(
        md,
        "Q1's autoencoder with latent size {} retrained with `{loss}` (every other setting as in Q1: {} epochs, batch \
         {}, learning rate {}, seed {}) on {} cells x {} genes, compared with Q1's MSE model of the same size, whose \
         numbers Q2 reports ({note}).\n",
        cfg.latent,
        study.train.epochs,
        study.train.batch_size,
        study.train.learning_rate,
        study.seed,
        data.x.nrows(),
        data.x.ncols(),
    );
    let _ = writeln!(md, "## Reconstruction error\n");
    let _ = writeln!(
        md,
        "| model | test MSE, all entries | nonzero entries | zero entries | train MSE, all | mean output at zeros | mean output at nonzeros |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for e in errors {
        let _ = writeln!(
            md,
            "| {} | {:.5} | {:.5} | {:.5} | {:.5} | {:.4} | {:.4} |",
            e.model,
            e.test.all,
            e.test.nonzero,
            e.test.zero,
            e.train.all,
            e.mean_output_at_zeros,
            e.mean_output_at_nonzeros
        );
    }
    let _ = writeln!(
        md,
        "\nThe test set has {} zero and {} nonzero entries ({:.1} % zeros); the mean nonzero value is {:.4}.\n",
        new.test.n_zero,
        new.test.n_nonzero,
        100.0 * new.test.n_zero as f64 / (new.test.n_zero + new.test.n_nonzero).max(1) as f64,
        new.mean_nonzero_value,
    );
    for (stem, what) in [
        ("pca_reconstruction", "PCA: reconstructed vs original"),
        ("pca_latent", "PCA: latent vs original"),
        ("tsne_reconstruction", "t-SNE: reconstructed vs original"),
        ("tsne_latent", "t-SNE: latent vs original"),
    ] {
        let _ = writeln!(md, "![{what}]({stem}.png)\n");
    }
    let _ = writeln!(md, "## Scores against the labels\n");
    embed::unlabelled_note(&mut md, &data.source);
    embed::scores_table(&mut md, &scores.iter().collect::<Vec<_>>());

    let _ = writeln!(md, "\n## Discussion\n");
    let ratio = new.test.all / base.test.all;
    let _ = writeln!(
        md,
        "**Full reconstruction.** Over every entry the `{loss}` model's test MSE is {:.5}, against {:.5} for Q2's \
         MSE model ({:.2}x). On the nonzero entries it is {:.5} against {:.5} ({}), and on the zero entries \
         {:.5} against {:.5}.",
        new.test.all,
        base.test.all,
        ratio,
        new.test.nonzero,
        base.test.nonzero,
        if new.test.nonzero < base.test.nonzero {
            "the masked loss fits the expressed values better, which is what it optimises"
        } else {
            "not better even where the masked loss looks"
        },
        new.test.zero,
        base.test.zero,
    );
    let _ = writeln!(
        md,
        "\n**What the mask does to zeros.** The loss never sees the prediction at an entry that is zero in the data \
         (`y_pred * mask` removes it), so nothing pulls those outputs towards zero: the mean output at zero entries \
         is {:.4} for the `{loss}` model against {:.4} for the MSE model, {} the mean output at nonzero entries \
         ({:.4}). The decoder fills every gene with a value typical of an expressed gene: it learns expression \
         *given that a gene is detected*, and the dropout pattern, which in sparse data carries much of the \
         difference between cell types, is lost from the reconstruction.",
        new.mean_output_at_zeros,
        base.mean_output_at_zeros,
        if (new.mean_output_at_zeros - new.mean_output_at_nonzeros).abs()
            < 0.25 * new.mean_output_at_nonzeros.abs()
        {
            "close to"
        } else {
            "still apart from"
        },
        new.mean_output_at_nonzeros,
    );
    let find = |name: &str| {
        scores
            .iter()
            .find(|s| s.name.starts_with(name))
            .and_then(|s| s.scores)
    };
    if let (Some(new_latent), Some(mse_latent), Some(t_orig), Some(t_recon), Some(t_latent)) = (
        find(&format!("{loss} latent (")),
        find("mse latent ("),
        find("t-SNE of the original"),
        find(&format!("t-SNE of the {loss} reconstruction")),
        find(&format!("t-SNE of the {loss} latent")),
    ) {
        let better = new_latent.ari > mse_latent.ari + 0.02;
        let _ = writeln!(
            md,
            "\n**Structure.** k-means on the `{loss}` latent code scores ARI {:.3} (silhouette {:.3}) against ARI {:.3} \
             (silhouette {:.3}) on the MSE model's code. In t-SNE the original scores ARI {:.3}, the `{loss}` \
             reconstruction {:.3} and its latent code {:.3}. {}",
            new_latent.ari,
            new_latent.silhouette,
            mse_latent.ari,
            mse_latent.silhouette,
            t_orig.ari,
            t_recon.ari,
            t_latent.ari,
            if better {
                "By these scores the masked loss captures the label structure better: focusing on the expressed values \
                 gives a code that separates the groups more cleanly."
            } else {
                "By these scores the masked loss does not capture the label structure better: ignoring zeros removes \
                 the information that a gene is *not* detected, and on this data that information helps separate \
                 the groups at least as much as the expressed values do."
            }
        );
    }
    md
}
