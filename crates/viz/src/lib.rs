//! Figures for scae, rendered with plotters onto PNG or SVG.
//!
//! The crate takes plain Rust data (vectors of `f64`), never tch tensors: the
//! pipelines compute and save coordinates first, then hand them here to be
//! drawn. One function per kind of figure, each taking a list of panels that
//! are laid side by side under an overall title:
//!
//! - [`line_figure`]: curves such as training and test loss per epoch.
//! - [`scatter_figure`]: labelled points, the one function behind every
//!   embedding figure (PCA, t-SNE, latent space; original beside
//!   reconstructed), with one legend column right of the panels.
//! - [`bar_figure`]: grouped bars, one group per category and one bar per
//!   series (a decoded rate beside the true one, a metric per likelihood),
//!   with a legend column right of the plot.
//! - [`heatmap_figure`]: one matrix of counts (a confusion matrix), each cell
//!   coloured on a sequential scale and labelled with its value, with a
//!   colour bar right of the plot.
//!
//! Everything that is common to all figures lives in the private `figure`
//! module (embedded font, sizes, title band, the chart with its axes and
//! grid, output format chosen by extension, atomic write) and the private
//! `axis` module (padded ranges, tick labels, a log axis with useful ticks on
//! sub-decade ranges, a category axis), so each figure module only draws its
//! own marks.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (see
//! `assets/DejaVuSans-LICENSE.txt`), so PNGs render identically on machines
//! without any system fonts. Colours come from [`PALETTE`], indexed so that the
//! same index means the same colour in every figure.

mod axis;
pub mod bar;
pub mod error;
mod figure;
pub mod heatmap;
pub mod line;
pub mod palette;
pub mod scatter;
#[cfg(test)]
mod test_support;

pub use bar::{BarSeries, bar_figure};
pub use error::{Error, Result};
pub use heatmap::{Heatmap, heatmap_figure};
pub use line::{LinePanel, Series, line_figure};
pub use palette::{PALETTE, palette_color};
pub use scatter::{ScatterPanel, scatter_figure};
