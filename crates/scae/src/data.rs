//! The user's data: a cells x genes matrix and, optionally, one label per cell.
//!
//! `--data` names a `.npy` file or a folder holding `counts.npy`; labels come
//! from `--labels`, else from a `labels.txt` beside the data when one exists.
//! Everything is read and validated before any result is written.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ndarray::Array2;
use scae_io::Labels;
use serde::Serialize;

/// A validated expression matrix with its labels.
#[derive(Debug)]
pub struct Dataset {
    pub x: Array2<f32>,
    pub labels: Option<Labels>,
    pub source: DataSource,
}

/// Where a data set came from, and a fingerprint of its content (saved with results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DataSource {
    pub data: PathBuf,
    pub labels: Option<PathBuf>,
    pub cells: usize,
    pub genes: usize,
    /// FNV-1a (64 bit) of the matrix values and labels, in hex.
    pub fingerprint: String,
}

impl Dataset {
    /// Reads `data` (a `.npy` file or a folder with `counts.npy`) and its labels.
    pub fn load(data: &Path, labels: Option<&Path>) -> Result<Self> {
        let data = if data.is_dir() {
            data.join("counts.npy")
        } else {
            data.to_path_buf()
        };
        let x = scae_io::read_matrix(&data)?;
        let labels_path = match labels {
            Some(path) => Some(path.to_path_buf()),
            None => data
                .parent()
                .map(|dir| dir.join("labels.txt"))
                .filter(|p| p.exists()),
        };
        let labels = labels_path
            .as_deref()
            .map(|path| scae_io::read_labels(path, Some(x.nrows())))
            .transpose()?;
        let fingerprint = fingerprint(&x, labels.as_ref());
        let source = DataSource {
            data: absolute(&data),
            labels: labels_path.as_deref().map(absolute),
            cells: x.nrows(),
            genes: x.ncols(),
            fingerprint,
        };
        Ok(Self { x, labels, source })
    }

    /// The rows of `x` at `rows`, as a new matrix.
    pub fn rows(&self, rows: &[usize]) -> Array2<f32> {
        self.x.select(ndarray::Axis(0), rows)
    }

    /// The matrix as a tensor on `device`.
    pub fn tensor(x: &Array2<f32>, device: tch::Device) -> Result<tch::Tensor> {
        let slice = x.as_slice().context("matrix is not in standard layout")?;
        Ok(scae_models::tensor_from_rows(slice, x.nrows(), x.ncols())?.to_device(device))
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// FNV-1a over the shape, the matrix's f32 bits and the label codes.
fn fingerprint(x: &Array2<f32>, labels: Option<&Labels>) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
        }
    };
    eat(&(x.nrows() as u64).to_le_bytes());
    eat(&(x.ncols() as u64).to_le_bytes());
    for v in x {
        eat(&v.to_bits().to_le_bytes());
    }
    for code in labels.map(|l| l.codes.as_slice()).unwrap_or_default() {
        eat(&(*code as u64).to_le_bytes());
    }
    format!("{hash:016x}")
}

/// The default data folder of a project root.
pub fn default_data(root: &Path) -> PathBuf {
    root.join("data").join("counts.npy")
}
