//! Progress of long training runs: a bar on a terminal, log lines otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use scae_models::EpochStats;

/// Reports the epochs of one model's training.
#[derive(Debug)]
pub struct EpochProgress {
    name: String,
    bar: Option<ProgressBar>,
}

impl EpochProgress {
    /// A bar when stderr is a terminal (and `RUST_LOG` does not ask for per-epoch logs).
    pub fn new(name: &str, epochs: usize) -> Self {
        let root = crate::writes_results();
        let bar = (root && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(epochs as u64);
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} epochs {elapsed_precise} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name.to_owned());
            bar
        });
        Self {
            name: name.to_owned(),
            bar,
        }
    }

    /// Records one finished epoch.
    pub fn epoch(&self, stats: &EpochStats) {
        let test = stats
            .test_loss
            .map_or_else(|| "-".into(), |t| format!("{t:.5}"));
        // The model's own figures, e.g. the GMVAE's components in use.
        let figures: String = stats
            .figures
            .iter()
            .map(|(name, v)| format!(" {name} {v}"))
            .collect();
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!(
                    "train {:.5} test {test}{figures}",
                    stats.train_loss
                ));
                bar.inc(1);
            }
            None => tracing::info!(
                model = %self.name,
                epoch = stats.epoch,
                train_loss = format!("{:.6}", stats.train_loss),
                test_loss = %test,
                seconds = format!("{:.3}", stats.seconds),
                figures = %figures.trim(),
            ),
        }
    }

    /// Leaves the finished bar on screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
