//! Models with their variables, for callers that never touch a tensor.
//!
//! A [`Net`] owns a model and the `VarStore` its weights live in, on one device. It is built from
//! a seed (libtorch's generator is seeded here, so the weights depend on the seed alone), trained
//! by a [`Trainer`] over [`BatchSource`]s, saved and loaded as `safetensors`, and asked for what
//! the studies need (latent means, reconstructions, `q(y | x)`, importance-weighted `log p(x)`)
//! as host arrays, a chunk of cells at a time. This is the whole surface the `scae` crate sees:
//! device choice and thread count ([`ComputeDevice`]) included, so the CLI and the studies do not
//! depend on tch.

use std::fmt;
use std::path::Path;

use ndarray::{Array1, Array2, ArrayView2};
use scae_io::BatchSource;
use tch::{Device, Tensor, nn};

use crate::train::{EpochStats, History, Model, TensorBatch, Terms, Trainer, map_cells};
use crate::{
    AeConfig, Autoencoder, DeviceChoice, Error, Gmvae, GmvaeConfig, Result, TrainConfig, Vae,
    VaeConfig, YRegulariser,
};

/// The device a run computes on, chosen once ([`ComputeDevice::setup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeDevice(Device);

impl ComputeDevice {
    /// The CPU.
    pub fn cpu() -> Self {
        Self(Device::Cpu)
    }

    /// Resolves the user's `choice` and sets libtorch's CPU thread count to `threads`.
    ///
    /// # Errors
    /// [`Error::CudaUnavailable`] for `cuda` on a machine without a usable GPU.
    pub fn setup(choice: DeviceChoice, threads: usize) -> Result<Self> {
        tch::set_num_threads(threads.max(1) as i32);
        crate::select_device(choice).map(Self)
    }

    /// Whether this is a GPU.
    pub fn is_cuda(self) -> bool {
        self.0.is_cuda()
    }

    pub(crate) fn torch(self) -> Device {
        self.0
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Cpu => f.write_str("cpu"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Seeds libtorch's global generator (weight initialisation, latent samples).
pub fn seed_torch(seed: u64) {
    tch::manual_seed(seed as i64);
}

/// A model that can be built from its config for a number of input genes.
pub trait Build: Model + Sized {
    type Config;

    /// Builds the layers under `p`.
    fn build(p: &nn::Path<'_>, genes: usize, cfg: &Self::Config) -> Result<Self>;
}

impl Build for Autoencoder {
    type Config = AeConfig;
    fn build(p: &nn::Path<'_>, genes: usize, cfg: &AeConfig) -> Result<Self> {
        Self::new(p, genes, cfg)
    }
}

impl Build for Vae {
    type Config = VaeConfig;
    fn build(p: &nn::Path<'_>, genes: usize, cfg: &VaeConfig) -> Result<Self> {
        Self::new(p, genes, cfg)
    }
}

impl Build for Gmvae {
    type Config = GmvaeConfig;
    fn build(p: &nn::Path<'_>, genes: usize, cfg: &GmvaeConfig) -> Result<Self> {
        Self::new(p, genes, cfg)
    }
}

/// A model and its variables on one device.
#[derive(Debug)]
pub struct Net<M> {
    vs: nn::VarStore,
    model: M,
}

impl<M: Build> Net<M> {
    /// A new model for `genes` input genes on `device`, its weights drawn after seeding
    /// libtorch's generator with `seed`.
    pub fn new(genes: usize, cfg: &M::Config, device: ComputeDevice, seed: u64) -> Result<Self> {
        seed_torch(seed);
        let vs = nn::VarStore::new(device.torch());
        let model = M::build(&vs.root(), genes, cfg)?;
        Ok(Self { vs, model })
    }

    /// A model saved by [`Net::save_weights`] at `weights`.
    ///
    /// # Errors
    /// [`Error::Weights`] when the file cannot be read or does not hold this model's variables.
    pub fn load(
        weights: &Path,
        genes: usize,
        cfg: &M::Config,
        device: ComputeDevice,
    ) -> Result<Self> {
        let mut vs = nn::VarStore::new(device.torch());
        let model = M::build(&vs.root(), genes, cfg)?;
        vs.load(weights).map_err(|e| Error::Weights {
            path: weights.into(),
            action: "read",
            message: crate::error::first_line(&e.to_string()),
        })?;
        Ok(Self { vs, model })
    }
}

impl<M: Model> Net<M> {
    pub fn model(&self) -> &M {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    pub fn device(&self) -> ComputeDevice {
        ComputeDevice(self.vs.device())
    }

    /// A trainer of this model's variables (see [`Trainer`]).
    pub fn trainer(&self, cfg: &TrainConfig, seed: u64) -> Result<Trainer> {
        Trainer::new(&self.vs, cfg, seed)
    }

    /// One phase of `epochs` epochs with `trainer` (see [`Trainer::run`]).
    pub fn train(
        &mut self,
        trainer: &mut Trainer,
        phase: &str,
        train: &dyn BatchSource,
        test: Option<&dyn BatchSource>,
        epochs: usize,
        on_epoch: impl FnMut(&EpochStats),
    ) -> Result<()> {
        trainer.run(&mut self.model, phase, train, test, epochs, on_epoch)
    }

    /// Trains `cfg.epochs` epochs in one phase; `seed` seeds the minibatch order.
    pub fn fit(
        &mut self,
        cfg: &TrainConfig,
        seed: u64,
        train: &dyn BatchSource,
        test: Option<&dyn BatchSource>,
        on_epoch: impl FnMut(&EpochStats),
    ) -> Result<History> {
        let mut trainer = self.trainer(cfg, seed)?;
        self.train(&mut trainer, "", train, test, cfg.epochs, on_epoch)?;
        Ok(trainer.into_history())
    }

    /// The mean loss and terms over the cells of `source` (see [`crate::evaluate`]).
    pub fn evaluate(&self, source: &dyn BatchSource, chunk: usize) -> Result<Option<(f64, Terms)>> {
        crate::evaluate(&self.model, source, chunk, self.vs.device())
    }

    /// Writes the weights to `path` (`safetensors`) through a temporary file renamed into place.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        let err = |e: &dyn fmt::Display| Error::Weights {
            path: path.into(),
            action: "write",
            message: crate::error::first_line(&e.to_string()),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".weights.tmp-{}.safetensors", std::process::id()));
        self.vs.save(&tmp).map_err(|e| err(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(&e)
        })
    }

    /// `f` of every cell of `source`, `chunk` cells at a time, as a host matrix.
    fn map(
        &self,
        source: &dyn BatchSource,
        chunk: usize,
        f: impl Fn(&M, &TensorBatch) -> Result<Tensor>,
    ) -> Result<Array2<f32>> {
        crate::train::check_width(&self.model, source)?;
        map_cells(source, chunk, self.vs.device(), |batch| {
            f(&self.model, batch)
        })
    }
}

impl Net<Autoencoder> {
    /// The latent code of every cell of `source`.
    pub fn encode(&self, source: &dyn BatchSource, chunk: usize) -> Result<Array2<f32>> {
        self.map(source, chunk, |m, b| Ok(m.encode(&b.x)))
    }

    /// The reconstruction of every cell of `source`.
    pub fn reconstruct(&self, source: &dyn BatchSource, chunk: usize) -> Result<Array2<f32>> {
        self.map(source, chunk, |m, b| Ok(m.reconstruct(&b.x)))
    }
}

impl Net<Vae> {
    /// The latent mean of every cell of `source`, in evaluation mode.
    pub fn latent_means(&self, source: &dyn BatchSource, chunk: usize) -> Result<Array2<f32>> {
        self.map(source, chunk, |m, b| Ok(m.encode_batch(b, false)?.mean))
    }

    /// The mean of `p(x | z)` of every cell of `source`, averaged over `samples` draws of `z`
    /// (0: at the posterior mean), decoded as category `decode_as` of the batch covariate when
    /// given ([`Vae::decoded_means`]); libtorch's generator is seeded with `seed` first.
    pub fn decoded_means(
        &self,
        source: &dyn BatchSource,
        chunk: usize,
        samples: usize,
        seed: u64,
        decode_as: Option<usize>,
    ) -> Result<Array2<f32>> {
        seed_torch(seed);
        self.map(source, chunk, |m, b| m.decoded_means(b, samples, decode_as))
    }

    /// The mean over the cells of `source` of the importance-weighted `log p(x)` with `k`
    /// samples each ([`Vae::importance_log_px`]); libtorch's generator is seeded with `seed`.
    pub fn importance_log_px(&self, source: &dyn BatchSource, k: usize, seed: u64) -> Result<f64> {
        if k == 0 {
            return Err(Error::Config(
                "importance sampling needs at least 1 sample".into(),
            ));
        }
        seed_torch(seed);
        // About 2^25 decoded values per chunk, as the model's own chunking.
        let chunk = ((1usize << 25) / (k * source.genes().max(1))).max(1);
        let per_cell = self.map(source, chunk, |m, b| {
            Ok(m.importance_log_px(b, k)?.unsqueeze(1))
        })?;
        let n = per_cell.len().max(1) as f64;
        Ok(per_cell.iter().map(|&v| f64::from(v)).sum::<f64>() / n)
    }
}

impl Net<Gmvae> {
    /// `q(y | x)` of every cell of `source` (`[cells, K]`), in evaluation mode.
    pub fn cluster_probabilities(
        &self,
        source: &dyn BatchSource,
        chunk: usize,
    ) -> Result<Array2<f32>> {
        self.map(source, chunk, |m, b| m.cluster_probabilities(b))
    }

    /// `E_q(y|x) E_q(z|x,y) z` of every cell of `source` (`[cells, latent]`).
    pub fn latent_means(&self, source: &dyn BatchSource, chunk: usize) -> Result<Array2<f32>> {
        self.map(source, chunk, |m, b| m.latent_means(b))
    }

    /// Starts the components at clusters found in the latent space: `centres` (`[K, latent]`)
    /// become the means of `p(z | y)` and `sizes` a learned `p(y)` ([`Gmvae::set_prior_means`],
    /// [`Gmvae::set_prior_weights`]).
    pub fn start_components(&mut self, centres: ArrayView2<'_, f32>, sizes: &[f64]) -> Result<()> {
        let values: Vec<f32> = centres.iter().copied().collect();
        let means = crate::tensor_from_rows(&values, centres.nrows(), centres.ncols())?;
        self.model.set_prior_means(&means)?;
        self.model.set_prior_weights(sizes)
    }

    /// Starts a GMVAE with a shared posterior from a trained VAE of the same shape: the VAE's
    /// encoder becomes `q(z | x)` and its decoder `p(x | z)` (weights and batch-norm
    /// statistics); the mixture (`p(z | y)`, `p(y)`) keeps its own values, for
    /// [`Net::start_components`] to set.
    ///
    /// # Errors
    /// [`Error::Config`] when the GMVAE's posterior is per component, or when the VAE has no
    /// variable of the same name and shape for one of the GMVAE's.
    pub fn start_from_vae(&mut self, vae: &Net<Vae>) -> Result<()> {
        if self.model.config().posterior != crate::MixturePosterior::Shared {
            return Err(Error::Config(
                "only a GMVAE with a shared posterior starts from a VAE".into(),
            ));
        }
        let source = vae.vs.variables();
        let mut target: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        target.sort_by(|a, b| a.0.cmp(&b.0));
        // Every variable is checked before any is copied: a mismatch leaves the GMVAE as it was.
        let mut pairs = Vec::with_capacity(target.len());
        for (name, var) in &mut target {
            if name.starts_with("prior_") {
                continue;
            }
            // q(z | x)'s layers are the VAE encoder's; every other name is the same.
            let from = match name.strip_prefix("z_encoder.") {
                Some(rest) => format!("encoder.{rest}"),
                None => name.clone(),
            };
            match source.get(&from) {
                Some(v) if v.size() == var.size() => pairs.push((var, v)),
                _ => {
                    return Err(Error::Config(format!(
                        "the VAE has no {from} of shape {:?} to start the GMVAE's {name} from",
                        var.size()
                    )));
                }
            }
        }
        tch::no_grad(|| {
            for (var, v) in pairs {
                var.copy_(&v.to_device(var.device()));
            }
        });
        Ok(())
    }

    /// See [`Gmvae::set_y_regulariser`].
    pub fn set_y_regulariser(&mut self, y_regulariser: YRegulariser) {
        self.model.set_y_regulariser(y_regulariser);
    }

    /// See [`Gmvae::supervise_on`].
    pub fn supervise_on(&mut self, key: &str) {
        self.model.supervise_on(key);
    }
}

/// Each row's argmax (e.g. the cluster of each cell of `q(y | x)`).
pub fn row_argmax(x: ArrayView2<'_, f32>) -> Array1<usize> {
    x.rows()
        .into_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv { (i, v) } else { (bi, bv) }
                })
                .0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ndarray::array;
    use scae_io::DenseRows;

    use super::*;
    use crate::Likelihood;

    #[test]
    fn a_net_saves_loads_and_maps_cells_on_the_host() {
        let _rng = crate::torch_rng_lock();
        let x = array![[1.0f32, 0.0, 3.0], [0.0, 2.0, 0.0], [4.0, 1.0, 0.0]];
        let source = DenseRows::all(x.view());
        let cfg = VaeConfig::new(2, Likelihood::Nb);
        let net = Net::<Vae>::new(3, &cfg, ComputeDevice::cpu(), 4).expect("valid");
        let a = net.latent_means(&source, 2).expect("means");
        assert_eq!(a.dim(), (3, 2));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("weights.safetensors");
        net.save_weights(&path).expect("written");
        let loaded = Net::<Vae>::load(&path, 3, &cfg, ComputeDevice::cpu()).expect("read");
        assert_eq!(loaded.latent_means(&source, 2).expect("means"), a);
        let missing = Net::<Vae>::load(&dir.path().join("none"), 3, &cfg, ComputeDevice::cpu());
        let err = missing.expect_err("no file").to_string();
        assert!(err.contains("none: cannot read the weights"), "{err}");
        let same = Net::<Vae>::new(3, &cfg, ComputeDevice::cpu(), 4).expect("valid");
        assert_eq!(
            same.latent_means(&source, 2).expect("means"),
            a,
            "same seed, same weights"
        );
        let narrow = x.slice(ndarray::s![.., ..2]).to_owned();
        assert!(net.latent_means(&DenseRows::all(narrow.view()), 2).is_err());
        let log_px = net.importance_log_px(&source, 10, 0).expect("k >= 1");
        assert!(log_px.is_finite() && log_px < 0.0);
    }

    #[test]
    fn a_shared_gmvae_starts_from_a_vae() {
        let _rng = crate::torch_rng_lock();
        let x = array![[1.0f32, 0.0, 3.0], [0.0, 2.0, 0.0], [4.0, 1.0, 0.0]];
        let source = DenseRows::all(x.view());
        let mut vae_cfg = VaeConfig::new(2, Likelihood::Nb);
        vae_cfg.hidden = vec![4];
        vae_cfg.batch_norm = true;
        let vae = Net::<Vae>::new(3, &vae_cfg, ComputeDevice::cpu(), 4).expect("valid");
        let mut cfg = GmvaeConfig::new(2, 2, Likelihood::Nb);
        cfg.vae = vae_cfg.clone();
        cfg.posterior = crate::MixturePosterior::Shared;
        let mut gmvae = Net::<Gmvae>::new(3, &cfg, ComputeDevice::cpu(), 9).expect("valid");
        let before = gmvae.latent_means(&source, 2).expect("means");
        assert_ne!(before, vae.latent_means(&source, 2).expect("means"));
        gmvae.start_from_vae(&vae).expect("same shape");
        // q(z | x) is the VAE's encoder, and p(x | z) its decoder.
        assert_eq!(
            gmvae.latent_means(&source, 2).expect("means"),
            vae.latent_means(&source, 2).expect("means")
        );
        let vars = vae.vs.variables();
        for (name, var) in gmvae.vs.variables() {
            if name.starts_with("decoder") || name.starts_with("log_theta") {
                assert!(var.equal(&vars[&name]), "{name}");
            }
        }
        // A VAE of another shape, or a GMVAE per component, cannot.
        let mut wide = vae_cfg.clone();
        wide.hidden = vec![5];
        let other = Net::<Vae>::new(3, &wide, ComputeDevice::cpu(), 4).expect("valid");
        let err = gmvae.start_from_vae(&other).expect_err("other shape");
        assert!(
            err.to_string().contains("the VAE has no decoder.0"),
            "{err}"
        );
        assert_eq!(
            gmvae.latent_means(&source, 2).expect("means"),
            vae.latent_means(&source, 2).expect("means"),
            "left as it was"
        );
        cfg.posterior = crate::MixturePosterior::PerComponent;
        let mut per = Net::<Gmvae>::new(3, &cfg, ComputeDevice::cpu(), 9).expect("valid");
        assert!(per.start_from_vae(&vae).is_err());
    }

    #[test]
    fn row_argmax_takes_the_first_largest() {
        let q = array![[0.1f32, 0.7, 0.2], [0.5, 0.1, 0.5]];
        assert_eq!(row_argmax(q.view()).to_vec(), [1, 0]);
    }
}
