//! Errors of model construction and training, and the guard that turns a libtorch error inside a
//! step into one of them.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong when building or training a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is out of its range (checked before any work starts).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `--device cuda` on a machine where libtorch sees no GPU.
    #[error(
        "CUDA was requested but libtorch sees no usable GPU (tch::Cuda::is_available() is false)"
    )]
    CudaUnavailable,
    /// A loss became NaN or infinite: training stops at once.
    #[error(
        "epoch {epoch}, batch {batch}: the {split} loss is {value} (not finite); lower the learning rate or check the input"
    )]
    NonFiniteLoss {
        epoch: usize,
        batch: usize,
        split: &'static str,
        value: f64,
    },
    /// libtorch failed inside a training or evaluation step (a shape that does not fit, memory
    /// running out on a GPU).
    #[error("{model}{}, epoch {epoch}, batch {batch}: libtorch: {message}", phase_text(.phase))]
    Step {
        model: &'static str,
        phase: String,
        epoch: usize,
        batch: usize,
        /// The first line of libtorch's message.
        message: String,
    },
    /// A weights file could not be read or written.
    #[error("{}: cannot {action} the weights: {message}", path.display())]
    Weights {
        path: std::path::PathBuf,
        action: &'static str,
        message: String,
    },
    /// Reading a minibatch failed.
    #[error(transparent)]
    Data(#[from] scae_io::Error),
    /// An error raised by libtorch.
    #[error("libtorch: {}", first_line(&.0.to_string()))]
    Torch(#[from] tch::TchError),
}

fn phase_text(phase: &str) -> String {
    if phase.is_empty() {
        String::new()
    } else {
        format!(" ({phase})")
    }
}

/// The first line of a libtorch message (it appends a C++ stack trace), without tch's wrapping.
pub(crate) fn first_line(message: &str) -> String {
    let message = message
        .strip_prefix("Internal torch error: ")
        .unwrap_or(message);
    message.lines().next().unwrap_or("").trim().to_string()
}

thread_local! {
    /// Set while [`catch_torch`] runs: the panic hook stays silent for the panic it catches.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic raised by tch's infallible operations (they unwrap libtorch's error)
/// into [`Error::Torch`], whose message is libtorch's first line. Any other panic is re-raised.
///
/// tch's plain operations (`matmul`, `+`, ...) panic on a libtorch error; the models use them, as
/// tch's own examples do, and this guard around each step makes those errors values. The panic
/// hook is wrapped once so that a caught panic prints nothing; every other panic is reported by
/// the previous hook as before.
pub(crate) fn catch_torch<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = CATCHING.with(|c| c.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    match outcome {
        Ok(result) => result,
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            match torch_message(text) {
                Some(message) => Err(Error::Torch(tch::TchError::Torch(message))),
                None => std::panic::resume_unwind(payload),
            }
        }
    }
}

/// libtorch's message inside the text of a panic raised by unwrapping a `TchError`.
fn torch_message(panic: &str) -> Option<String> {
    let start = panic.find("Torch(\"")? + "Torch(\"".len();
    let rest = &panic[start..];
    // The Debug form escapes the message; its first line ends at the first escaped newline.
    let end = rest.find("\\n").or_else(|| rest.rfind("\")"))?;
    Some(rest[..end].replace("\\\"", "\"").trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libtorch_panic_becomes_an_error_and_other_panics_go_on() {
        let err = catch_torch(|| {
            let a = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
            let b = tch::Tensor::zeros([4, 1], (tch::Kind::Float, tch::Device::Cpu));
            Ok(a.matmul(&b))
        })
        .expect_err("shapes do not fit");
        let text = err.to_string();
        assert!(text.starts_with("libtorch: "), "{text}");
        assert!(text.contains("cannot be multiplied"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let other = std::panic::catch_unwind(|| catch_torch(|| -> Result<()> { panic!("a bug") }));
        assert!(
            other.is_err(),
            "a panic that is not libtorch's is not swallowed"
        );
        assert_eq!(catch_torch(|| Ok(3)).expect("no panic"), 3);
    }

    #[test]
    fn first_line_drops_the_stack_trace() {
        assert_eq!(
            first_line("Internal torch error: size mismatch\nException raised from x"),
            "size mismatch"
        );
    }
}
