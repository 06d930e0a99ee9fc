//! Categorical covariates of a cell (the sample, donor, technology or condition it came from),
//! entered into the hidden layers as scVI's `deeply_inject_covariates` does.
//!
//! scVI concatenates each covariate's one-hot code to the input of every hidden layer of the
//! decoder (and, with `encode_covariates`, of the encoder): `W [h, onehot] + b`. That equals
//! `W_h h + b + W_c onehot`, and `W_c onehot` is row `code` of `W_c`: an [`Injection`] keeps
//! `W_c` as a `[categories, width]` table and adds the rows of the batch's codes to the layer's
//! linear output, before its batch norm and ReLU. With several covariates their tables are
//! stacked (`[Σ categories, width]`) and each cell adds one row per covariate. A model's
//! covariates come from its batches' per-cell fields ([`crate::TensorBatch::fields`]), by key.

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::train::TensorBatch;
use crate::{Error, Result};

/// A categorical covariate a model conditions on: the batch field (`obs` column) it is read
/// from and its categories, in the order of its codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Covariate {
    pub key: String,
    pub categories: Vec<String>,
}

/// Checks the covariates a model is given: a key each, at least one category, no key twice.
pub(crate) fn validate(covariates: &[Covariate]) -> Result<()> {
    for (i, c) in covariates.iter().enumerate() {
        if c.key.is_empty() {
            return Err(Error::Config("a covariate needs a key".into()));
        }
        if c.categories.is_empty() {
            return Err(Error::Config(format!(
                "covariate {} has no categories",
                c.key
            )));
        }
        if covariates[..i].iter().any(|o| o.key == c.key) {
            return Err(Error::Config(format!("covariate {} is given twice", c.key)));
        }
    }
    Ok(())
}

/// The rows of the stacked one-hot code of `covariates`.
pub(crate) fn total_categories(covariates: &[Covariate]) -> usize {
    covariates.iter().map(|c| c.categories.len()).sum()
}

/// The codes of a batch's cells, one `[cells]` `int64` tensor per covariate, each shifted by the
/// categories of the covariates before it (rows of the stacked table). Empty for a model
/// without covariates.
#[derive(Debug, Default)]
pub(crate) struct Codes(Vec<Tensor>);

impl Codes {
    /// No covariates.
    pub(crate) fn none() -> Self {
        Self(Vec::new())
    }

    /// The codes of `covariates` in `batch`'s fields.
    ///
    /// # Errors
    /// [`Error::Config`] when the batch lacks one of the fields; on the CPU also when a code is
    /// missing ([`scae_io::MISSING`]) or outside the covariate's categories (on a GPU that
    /// check would wait for the device every step; the data side checks the codes it makes).
    pub(crate) fn of(batch: &TensorBatch, covariates: &[Covariate]) -> Result<Self> {
        let mut offset = 0i64;
        let mut codes = Vec::with_capacity(covariates.len());
        for c in covariates {
            let Some(field) = batch.fields.get(&c.key) else {
                return Err(Error::Config(format!(
                    "the model conditions on the covariate {}, which the data do not carry",
                    c.key
                )));
            };
            let n = c.categories.len() as i64;
            if field.device() == tch::Device::Cpu && field.numel() > 0 {
                let (lo, hi) = (field.min().int64_value(&[]), field.max().int64_value(&[]));
                if lo < 0 || hi >= n {
                    return Err(Error::Config(format!(
                        "covariate {}: a cell has code {}, outside its {n} categories{}",
                        c.key,
                        if lo < 0 { lo } else { hi },
                        if lo < 0 { " (a missing value)" } else { "" }
                    )));
                }
            }
            codes.push(if offset == 0 {
                field.shallow_clone()
            } else {
                field + offset
            });
            offset += n;
        }
        Ok(Self(codes))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first covariate's codes (the batch key's), unshifted.
    pub(crate) fn first(&self) -> Option<&Tensor> {
        self.0.first()
    }

    /// These codes with every cell's first covariate set to `code` (scvi-tools'
    /// `transform_batch`: decoded as if every cell came from that batch).
    pub(crate) fn with_first(&self, code: i64) -> Self {
        let mut codes: Vec<Tensor> = self.0.iter().map(Tensor::shallow_clone).collect();
        if let Some(first) = codes.first_mut() {
            *first = first.full_like(code);
        }
        Self(codes)
    }
}

/// The covariates' part of a hidden layer's linear map: a `[Σ categories, width]` table whose
/// rows are added to the layer's output (see the module documentation).
#[derive(Debug)]
pub(crate) struct Injection {
    table: Tensor,
}

impl Injection {
    /// The table under `p` (named `covariates`) for `rows` stacked categories of a layer of
    /// `fan_in` inputs: uniform in `±1/sqrt(fan_in + rows)`, as PyTorch initialises the weight
    /// of scVI's layer on the concatenated input.
    pub(crate) fn new(p: &nn::Path<'_>, rows: usize, fan_in: usize, width: usize) -> Self {
        let bound = 1.0 / ((fan_in + rows) as f64).sqrt();
        Self {
            table: p.var(
                "covariates",
                &[rows as i64, width as i64],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
        }
    }

    /// `h` (`[rows, width]`, rows a multiple of the cells, cells innermost: samples or
    /// components stacked over the batch) plus each cell's rows of the table. Without codes
    /// (a call on bare tensors) `h` as it is.
    pub(crate) fn add(&self, h: &Tensor, codes: &Codes) -> Tensor {
        let Some(first) = codes.0.first() else {
            return h.shallow_clone();
        };
        let cells = first.size()[0];
        let width = h.size()[h.dim() - 1];
        let rows = codes.0[1..]
            .iter()
            .fold(self.table.index_select(0, first), |acc, c| {
                acc + self.table.index_select(0, c)
            });
        (h.view([-1, cells, width]) + rows.to_kind(h.kind())).view([-1, width])
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, nn::Module, nn::VarStore};

    use super::*;

    #[test]
    fn an_injection_equals_a_linear_layer_on_the_input_and_its_one_hot_codes() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let (cells, fan_in, width) = (5i64, 4i64, 3i64);
        let linear = nn::linear(&vs.root() / "l", fan_in, width, Default::default());
        let covariates = [
            Covariate {
                key: "batch".into(),
                categories: vec!["a".into(), "b".into(), "c".into()],
            },
            Covariate {
                key: "donor".into(),
                categories: vec!["x".into(), "y".into()],
            },
        ];
        let injection = Injection::new(&(&vs.root() / "l"), 5, fan_in as usize, width as usize);
        let h = Tensor::randn([cells, fan_in], (Kind::Float, Device::Cpu));
        let mut batch = TensorBatch::from_tensor(h.zeros_like());
        batch
            .fields
            .insert("batch".into(), Tensor::from_slice(&[0i64, 2, 1, 2, 0]));
        batch
            .fields
            .insert("donor".into(), Tensor::from_slice(&[1i64, 0, 0, 1, 1]));
        let codes = Codes::of(&batch, &covariates).expect("fields present");
        let ours = injection.add(&linear.forward(&h), &codes);
        // scVI: the one-hot codes concatenated to the input of a linear layer.
        let onehot = Tensor::cat(
            &[
                batch.fields["batch"].one_hot(3).to_kind(Kind::Float),
                batch.fields["donor"].one_hot(2).to_kind(Kind::Float),
            ],
            1,
        );
        let weight = Tensor::cat(&[linear.ws.tr(), injection.table.shallow_clone()], 0);
        let theirs = Tensor::cat(&[h, onehot], 1).mm(&weight) + linear.bs.as_ref().expect("bias");
        let diff = (ours - theirs).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "largest difference {diff}");

        // Two samples stacked over the cells: each copy gets its cell's rows.
        let stacked = Tensor::randn([2 * cells, width], (Kind::Float, Device::Cpu));
        let added = injection.add(&stacked, &codes) - &stacked;
        let diff = (added.narrow(0, 0, cells) - added.narrow(0, cells, cells))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-7, "the copies differ by {diff}");
    }

    #[test]
    fn codes_refuse_a_missing_field_a_missing_value_and_an_unknown_category() {
        let covariates = [Covariate {
            key: "batch".into(),
            categories: vec!["a".into(), "b".into()],
        }];
        let mut batch = TensorBatch::from_tensor(Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)));
        let err = Codes::of(&batch, &covariates).expect_err("no field");
        assert!(err.to_string().contains("do not carry"), "{err}");
        batch
            .fields
            .insert("batch".into(), Tensor::from_slice(&[0i64, -1]));
        let err = Codes::of(&batch, &covariates).expect_err("missing value");
        assert!(err.to_string().contains("missing value"), "{err}");
        batch
            .fields
            .insert("batch".into(), Tensor::from_slice(&[0i64, 2]));
        let err = Codes::of(&batch, &covariates).expect_err("unknown category");
        assert!(
            err.to_string().contains("outside its 2 categories"),
            "{err}"
        );
        batch
            .fields
            .insert("batch".into(), Tensor::from_slice(&[1i64, 0]));
        let codes = Codes::of(&batch, &covariates).expect("valid");
        let all_b = codes.with_first(1);
        assert_eq!(
            Vec::<i64>::try_from(all_b.first().expect("one")).expect("ints"),
            [1, 1]
        );
    }

    #[test]
    fn covariates_are_validated() {
        let c = |key: &str, n: usize| Covariate {
            key: key.into(),
            categories: (0..n).map(|i| i.to_string()).collect(),
        };
        assert!(validate(&[c("batch", 2), c("donor", 3)]).is_ok());
        assert!(validate(&[c("batch", 0)]).is_err());
        assert!(validate(&[c("", 2)]).is_err());
        assert!(validate(&[c("batch", 2), c("batch", 3)]).is_err());
        assert_eq!(total_categories(&[c("batch", 2), c("donor", 3)]), 5);
    }
}
