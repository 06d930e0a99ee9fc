//! Logs written to a file or a pipe are plain text: no colour codes, no progress bar (both are
//! for a terminal only), and the per-epoch lines that replace the bar are there.

use std::process::Command;

use ndarray::Array2;

const TINY: &str = r#"
seed = 1
threads = 1
device = "cpu"
test_fraction = 0.2
latents = [2]
hidden = [8]
loss = "mse"

[train]
epochs = 2
batch_size = 16
learning_rate = 1e-3
"#;

#[test]
fn redirected_logs_carry_no_escape_sequences() {
    let dir = tempfile::tempdir().expect("temp dir");
    let x = Array2::from_shape_fn((40, 12), |(i, j)| ((i * 7 + j * 3) % 5) as f32);
    let data = dir.path().join("x.npy");
    scae_io::write_npy(&data, &x.view()).expect("data");
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_scae"))
        .arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("model"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .expect("the scae binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The epochs are logged (no bar off a terminal), and nothing is coloured.
    assert!(err.contains("INFO") && err.contains("epoch=2"), "{err}");
    assert!(
        !err.contains('\x1b'),
        "escape sequences in redirected logs:\n{err:?}"
    );
}
