//! Models on libtorch: the autoencoder, the VAE, the Gaussian-mixture VAE and the one training
//! loop every model shares.
//!
//! This crate and `scae-dists` are the only ones that touch tch. Every model
//! implements [`Model`], which gives the named losses of one minibatch; the
//! [`Trainer`] drives any model through the same loop (Adam, minibatches pulled
//! from a [`scae_io::BatchSource`] in a seeded order, train and test loss per
//! epoch, phases that continue one run, a stop on the first non-finite loss or
//! libtorch error). [`Net`] wraps a model with its variables and answers in host
//! arrays, so callers need no tensors. Configurations are serde types validated
//! before use.

mod autoencoder;
pub mod covariates;
mod decoder;
mod device;
mod error;
mod gmvae;
mod layers;
mod loss;
mod net;
mod optim;
pub mod parallel;
mod recipe;
mod split;
mod train;
mod vae;

pub use autoencoder::{AeConfig, Autoencoder};
pub use covariates::Covariate;
pub use device::{DeviceChoice, select_device};
pub use error::{Error, Result};
pub use gmvae::{Gmvae, GmvaeConfig, GmvaeTerms, MixturePosterior, YRegulariser};
pub use layers::SparseRows;
pub use loss::{ReconLoss, mse_loss, nonzero_mse_loss};
pub use net::{Build, ComputeDevice, Net, row_argmax, seed_torch};
pub use optim::Adam;
pub use recipe::{
    ComponentInit, GmvaeStart, PhaseTraining, RecipeCells, RecipeHooks, TrainedGmvae, train_gmvae,
};
pub use scae_dists::{CountLaw, Likelihood};
pub use split::{
    MIN_LAST_BATCH, MIN_LAST_BATCH_PER_RANK, Split, batch_ranges, epoch_order, shuffled_indices,
};
pub use train::{
    EVAL_VALUES, EpochStats, History, Losses, Model, TensorBatch, Terms, TrainConfig, Trainer,
    eval_chunk, evaluate, fit, map_cells,
};
pub use vae::{Dispersion, Library, Posterior, Vae, VaeConfig};

/// Applies `f` to the rows of `x` in chunks without gradients and concatenates the results.
pub fn map_rows(
    x: &tch::Tensor,
    chunk: usize,
    f: impl Fn(&tch::Tensor) -> tch::Tensor,
) -> tch::Tensor {
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let parts: Vec<tch::Tensor> = (0..n)
        .step_by(chunk.max(1))
        .map(|begin| f(&x.narrow(0, begin, (chunk as i64).min(n - begin))))
        .collect();
    tch::Tensor::cat(&parts, 0)
}

/// A tensor of one `f32` matrix, copied from row-major host memory.
pub fn tensor_from_rows(data: &[f32], rows: usize, cols: usize) -> Result<tch::Tensor> {
    if data.len() != rows * cols {
        return Err(Error::Config(format!(
            "matrix of {rows} x {cols} needs {} values, got {}",
            rows * cols,
            data.len()
        )));
    }
    Ok(tch::Tensor::from_slice(data).view([rows as i64, cols as i64]))
}

/// The values of a 2-D `f32` tensor (any device) as row-major host memory.
pub fn tensor_to_rows(t: &tch::Tensor) -> Result<(Vec<f32>, usize, usize)> {
    let size = t.size();
    let [rows, cols] = size[..] else {
        return Err(Error::Config(format!(
            "expected a 2-D tensor, got shape {size:?}"
        )));
    };
    let flat = t
        .to_device(tch::Device::Cpu)
        .to_kind(tch::Kind::Float)
        .contiguous()
        .view([-1]);
    let values = Vec::<f32>::try_from(&flat)?;
    Ok((values, rows as usize, cols as usize))
}

/// Serialises the tests that seed or draw from libtorch's global random generator
/// (`manual_seed`, `randn`, weight initialisation): the test harness runs tests on parallel
/// threads, and two of them interleaving their draws would make "same seed, same result"
/// checks fail at random.
#[cfg(test)]
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
