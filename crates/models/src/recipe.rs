//! The GMVAE's training recipe: where it starts (a trained VAE's weights, or its own weights
//! pretrained on the ELBO), its components started at clusters of a latent space with a phase
//! on those clusters as pseudo-labels, then the ELBO. The phases are one [`Trainer`] run
//! several times, so the optimiser state, the epoch count (the KL warm-up, the shuffles) and
//! the history go on from one phase to the next. Every study that trains a GMVAE (`gmvae-real`,
//! `gmvae-ablation`) trains it here; what the recipe needs of its caller (clusters of a latent
//! space, progress and context around each phase) comes through [`RecipeHooks`].

use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use scae_io::{BatchSource, WithFields, keys};
use serde::{Deserialize, Serialize};

use crate::{ComputeDevice, EpochStats, Error, Gmvae, GmvaeConfig, History, Net, TrainConfig, Vae};

/// How the GMVAE's components start (a study's `[gmvae_init]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentInit {
    /// Start from the NB VAE of baseline (c), trained on the same cells with the same seed: its
    /// encoder becomes `q(z | x)` and its decoder `p(x | z)`, and the components start at (c)'s
    /// clusters. Needs a shared posterior and a `[gmvae.model.vae]` of the same shape as
    /// `[vae.model]`.
    #[serde(default)]
    pub from_vae: bool,
    /// Without `from_vae`: first, this many epochs on the ELBO.
    #[serde(default)]
    pub pretrain_epochs: usize,
    /// Then k-means (k = K) on every cell's latent means: the centres become the means of
    /// `p(z | y)` (and the cluster sizes a learned `p(y)`), and `q(y | x)` learns the training
    /// cells' clusters (cross-entropy in place of its KL term) for this many epochs, before
    /// `train.epochs` epochs on the ELBO again.
    pub pseudo_label_epochs: usize,
}

/// Where a GMVAE starts.
#[derive(Debug, Clone, Copy)]
pub enum GmvaeStart<'a> {
    /// From a trained VAE (its weights) and clusters of every cell in its latent space, whose
    /// latent means of every cell `latent` holds.
    Vae {
        vae: &'a Net<Vae>,
        latent: ArrayView2<'a, f32>,
        clusters: &'a [usize],
    },
    /// From its own weights: with a [`ComponentInit`], pretrained on the ELBO, then `clusters`
    /// of every cell when given, else the caller's clusters of its latent means
    /// ([`RecipeHooks::cluster`]).
    Own { clusters: Option<&'a [usize]> },
}

/// The cells a GMVAE trains on.
#[derive(Clone, Copy)]
pub struct RecipeCells<'a> {
    pub train: &'a dyn BatchSource,
    /// The position among `all` of each training cell.
    pub train_cells: &'a [usize],
    /// Held-out cells, scored after every epoch.
    pub test: &'a dyn BatchSource,
    /// Every cell: the latent means the components start from.
    pub all: &'a dyn BatchSource,
}

impl std::fmt::Debug for RecipeCells<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (f.debug_struct("RecipeCells"))
            .field("train", &self.train.cells())
            .field("test", &self.test.cells())
            .field("all", &self.all.cells())
            .finish()
    }
}

/// One phase's training, given what to call after every epoch.
pub type PhaseTraining<'a> = dyn FnMut(&mut dyn FnMut(&EpochStats)) -> crate::Result<()> + 'a;

/// What the recipe asks of the study that runs it.
pub trait RecipeHooks {
    /// The study's error, which a model error becomes.
    type Error: From<Error>;

    /// `k` clusters of the cells whose latent means are the rows of `latent` (k-means, for an
    /// own start without clusters given).
    ///
    /// # Errors
    /// The study's own.
    fn cluster(&mut self, latent: ArrayView2<'_, f32>, k: usize)
    -> Result<Vec<usize>, Self::Error>;

    /// Runs the phase `name` of `epochs` epochs (never 0): `train` trains it, calling its
    /// argument after every epoch. The study shows progress and names the phase in an error.
    ///
    /// # Errors
    /// `train`'s, with the study's context.
    fn phase(
        &mut self,
        name: &str,
        epochs: usize,
        train: &mut PhaseTraining<'_>,
    ) -> Result<(), Self::Error>;
}

/// A trained GMVAE and how it got there.
#[derive(Debug)]
pub struct TrainedGmvae {
    pub net: Net<Gmvae>,
    pub history: History,
    /// The clusters its components started from, of every cell, with the latent means they
    /// were found in.
    pub start: Option<(Vec<usize>, Array2<f32>)>,
    /// Seconds until the components were started, and in all.
    pub start_seconds: f64,
    pub seconds: f64,
}

/// Trains one GMVAE of `cfg` on `cells`: on the ELBO alone without `init`; with it, in phases
/// from `start` (a VAE's weights, or pretraining), the components at the clusters' centres
/// (and a learned `p(y)` at their sizes, as VaDE starts its mixture), `init.pseudo_label_epochs`
/// on the clusters as pseudo-labels ([`keys::PSEUDO_LABELS`]), then `train.epochs` on the ELBO.
///
/// # Errors
/// A model error (a config that does not fit, a loss that is not finite), or the hooks'.
#[allow(clippy::too_many_arguments)]
pub fn train_gmvae<H: RecipeHooks>(
    cfg: &GmvaeConfig,
    train: &TrainConfig,
    init: Option<&ComponentInit>,
    seed: u64,
    device: ComputeDevice,
    cells: RecipeCells<'_>,
    start: GmvaeStart<'_>,
    hooks: &mut H,
) -> Result<TrainedGmvae, H::Error> {
    let timer = Instant::now();
    let genes = cells.train.genes();
    let mut net = Net::<Gmvae>::new(genes, cfg, device, seed)?;
    let mut trainer = net.trainer(train, seed)?;
    let mut phase = |net: &mut Net<Gmvae>,
                     hooks: &mut H,
                     name: &str,
                     source: &dyn BatchSource,
                     epochs: usize|
     -> Result<(), H::Error> {
        if epochs == 0 {
            return Ok(());
        }
        hooks.phase(name, epochs, &mut |on_epoch| {
            net.train(
                &mut trainer,
                name,
                source,
                Some(cells.test),
                epochs,
                on_epoch,
            )
        })
    };
    let mut started = None;
    if let Some(init) = init {
        let (clusters, latent) = match start {
            GmvaeStart::Vae {
                vae,
                latent,
                clusters,
            } => {
                net.start_from_vae(vae)?;
                (clusters.to_vec(), latent.to_owned())
            }
            GmvaeStart::Own { clusters } => {
                let pretrain = init.pretrain_epochs;
                phase(&mut net, hooks, "pretrain", cells.train, pretrain)?;
                let latent = net.latent_means(cells.all, train.eval_chunk(genes))?;
                let clusters = match clusters {
                    Some(c) => c.to_vec(),
                    None => hooks.cluster(latent.view(), cfg.components)?,
                };
                (clusters, latent)
            }
        };
        let (centres, sizes) = centres(&clusters, latent.view(), cfg.components);
        net.start_components(centres.view(), &sizes)?;
        let pseudo: Vec<i64> = (cells.train_cells.iter())
            .map(|&i| clusters[i] as i64)
            .collect();
        let labelled =
            WithFields::new(cells.train, keys::PSEUDO_LABELS, &pseudo).map_err(Error::from)?;
        started = Some((clusters, latent, timer.elapsed().as_secs_f64()));
        net.supervise_on(keys::PSEUDO_LABELS);
        let epochs = init.pseudo_label_epochs;
        phase(&mut net, hooks, "pseudo-labels", &labelled, epochs)?;
        net.set_y_regulariser(cfg.y_regulariser);
    }
    phase(&mut net, hooks, "elbo", cells.train, train.epochs)?;
    let (start, start_seconds) = match started {
        Some((clusters, latent, seconds)) => (Some((clusters, latent)), seconds),
        None => (None, 0.0),
    };
    Ok(TrainedGmvae {
        net,
        history: trainer.into_history(),
        start,
        start_seconds,
        seconds: timer.elapsed().as_secs_f64(),
    })
}

/// The mean latent of each of `k` clusters (zero for an empty one) and each cluster's size (at
/// least 1, so a learned `p(y)` gives every component some weight).
fn centres(clusters: &[usize], latent: ArrayView2<'_, f32>, k: usize) -> (Array2<f32>, Vec<f64>) {
    let mut sizes = vec![0.0; k];
    let mut centres = Array2::<f32>::zeros((k, latent.ncols()));
    for (&c, row) in clusters.iter().zip(latent.rows()) {
        sizes[c] += 1.0;
        centres.row_mut(c).scaled_add(1.0, &row);
    }
    for (mut centre, &n) in centres.rows_mut().into_iter().zip(&sizes) {
        centre /= f32::max(n as f32, 1.0);
    }
    sizes.iter_mut().for_each(|s| *s = f64::max(*s, 1.0));
    (centres, sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centres_are_cluster_means_and_an_empty_cluster_keeps_weight() {
        let latent = ndarray::array![[0.0f32, 2.0], [2.0, 4.0], [10.0, 10.0]];
        let (centres, sizes) = centres(&[0, 0, 2], latent.view(), 3);
        assert_eq!(
            centres,
            ndarray::array![[1.0, 3.0], [0.0, 0.0], [10.0, 10.0]]
        );
        assert_eq!(sizes, [2.0, 1.0, 1.0]);
    }
}
