//! Every command with every data flag: for each command `scae --help` lists (read from clap, so a
//! new command or flag cannot slip past), `--layer`, `--labels-key`, `--labels` and `--top-genes`
//! either change what the command read, as its provenance records it, or are refused: by clap
//! (exit code 2) when the command does not take the flag, or in one line when the command takes
//! it but has nothing to do with it. Every other flag a command takes must be named below, with
//! the test that checks it or among the flags not checked yet.

use std::collections::BTreeMap;
use std::path::Path;

use clap::CommandFactory;
use serde_json::Value;

mod common;

use common::{FIXTURE_GMVAE, SMALL_Q1, SMALL_VAE, io_fixture, scae};

const DATA_FLAGS: [&str; 4] = ["layer", "labels-key", "labels", "top-genes"];

/// Flags checked by other tests, by command (`*`: every command that takes it).
const ELSEWHERE: &[(&str, &str, &str)] = &[
    ("*", "root", "every test runs in a project root"),
    ("*", "config", "study_smoke.rs, log_output.rs: --config"),
    ("*", "out", "every test writes to --out"),
    ("*", "data", "every test reads --data"),
    ("*", "device", "anywhere.rs, model_card.rs: --device cpu"),
    ("*", "threads", "anywhere.rs, vae_smoke.rs: --threads"),
    (
        "*",
        "h5ad",
        "h5ad_cli.rs: results written back wherever --h5ad points",
    ),
    ("*", "backed", "h5ad_cli.rs: --backed"),
    ("*", "all", "gmvae_real_smoke.rs: --all over a folder"),
    (
        "*",
        "model",
        "model_card.rs: embed, evaluate and cluster load any model folder",
    ),
    (
        "vae",
        "likelihood",
        "vae_smoke.rs: an unknown --likelihood is refused",
    ),
    (
        "vae",
        "batch-key",
        "batches.rs: the card records the batches; unknown columns and missing values refused",
    ),
    (
        "vae",
        "transform-batch",
        "batches.rs: the denoised layer changes with the batch decoded as",
    ),
    (
        "integrate",
        "*",
        "batches.rs: every data flag, --batch-key and --all on a multi-batch AnnData",
    ),
    (
        "gmvae-real",
        "batch-key",
        "batches.rs: the saved GMVAE knows the batches and clusters new cells",
    ),
    ("train", "latent", "study_smoke.rs: train --latent"),
    ("train", "epochs", "study_smoke.rs: train --epochs"),
];

/// Flags no test checks yet, named so that the gap is visible and a new flag still fails.
const UNCHECKED: &[(&str, &str)] = &[];

/// The flags beyond the data flags, checked by [`every_other_flag_changes_what_was_run`].
const CHECKED_BELOW: &[(&str, &str)] = &[
    ("vae", "epochs"),
    ("vae", "denoised"),
    ("train", "loss"),
    ("data", "seed"),
    ("report", "results"),
    ("pca", "components"),
    ("tsne", "*"),
];

/// The configs of a tiny project: two epochs of everything on the 40-cell fixtures.
fn project() -> tempfile::TempDir {
    let tsne = "[tsne]\nperplexity = 5.0\nn_iter = 150\nearly_exaggeration_iter = 50\n";
    let root = tempfile::tempdir().expect("tempdir");
    let configs = root.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs");
    let q2 = "models = \"q1.toml\"\ncheckpoints = [1, 2]\nwithin = [0.05]\n".to_owned();
    let q3 = format!("models = \"q1.toml\"\nlatent = 2\nscore_components = 10\n{tsne}");
    let q4 = "models = \"q1.toml\"\nlatent = 2\nscore_components = 10\n".to_owned();
    let q5 = format!(
        "models = \"q1.toml\"\nlatent = 2\nloss = \"nonzero_mse\"\nscore_components = 10\n{tsne}"
    );
    let likelihoods = format!(
        "seed = 0\nthreads = 1\ndevice = \"cpu\"\ntest_fraction = 0.25\nimportance_samples = 3\n\
         top_genes = 0\nlikelihoods = [\"poisson\", \"nb\"]\n[model]\nhidden = [8]\nlatent = 2\n\
         [train]\nepochs = 1\nbatch_size = 8\nlearning_rate = 1e-2\n{tsne}"
    );
    let ablation = "study = \"gmvae-real.toml\"\n[[variants]]\nname = \"shipped\"\n".to_owned();
    for (name, text) in [
        ("q1.toml", SMALL_Q1.to_owned()),
        ("q2.toml", q2),
        ("q3.toml", q3),
        ("q4.toml", q4),
        ("q5.toml", q5),
        ("vae.toml", SMALL_VAE.to_owned()),
        ("vae-likelihoods.toml", likelihoods),
        ("gmvae-real.toml", FIXTURE_GMVAE.to_owned()),
        ("gmvae-ablation.toml", ablation),
    ] {
        std::fs::write(configs.join(name), text).expect("config");
    }
    root
}

/// What a command read: its provenance's `data` (without the paths), or its error.
fn read(root: &Path, command: &str, args: &[&str], n: &mut usize) -> Result<Value, String> {
    *n += 1;
    let out = root.join(format!("out{n}"));
    let (r, o) = (root.display().to_string(), out.display().to_string());
    let mut all = vec![command, "--root", &r, "--out", &o];
    all.extend(args);
    let run = scae(&all);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{all:?}: {stderr}");
    if !run.status.success() {
        let lines: Vec<&str> = (stderr.lines())
            .filter(|l| !l.trim().is_empty() && !l.contains(" WARN "))
            .collect();
        assert_eq!(lines.len(), 1, "{all:?}: not one line: {stderr}");
        assert!(!out.exists(), "{all:?} failed but wrote {}", out.display());
        return Err(lines[0].to_owned());
    }
    let text = std::fs::read_to_string(out.join("metrics.json")).expect("metrics.json");
    let metrics: Value = serde_json::from_str(&text).expect("JSON");
    let mut data = metrics["provenance"]["data"].clone();
    let map = data.as_object_mut().expect("the data read");
    map.remove("data");
    map.remove("labels");
    Ok(data)
}

#[test]
fn every_command_honours_or_refuses_every_data_flag() {
    let root = project();
    let dir = root.path();
    let labels = dir.join("labels.txt");
    let codes: Vec<String> = (0..40).map(|i| format!("g{}", i % 3)).collect();
    scae_io::write_labels(&labels, &codes).expect("labels");
    let labels = labels.display().to_string();
    let (csr, layers) = (io_fixture("csr.h5ad"), io_fixture("layers.h5ad"));
    let cli = scae::cli::Cli::command();
    let mut n = 0;
    let mut checked = BTreeMap::new();
    for command in cli.get_subcommands() {
        let name = command.get_name().to_owned();
        let takes: Vec<String> = (command.get_arguments())
            .filter_map(|a| a.get_long().map(str::to_owned))
            .filter(|l| l != "help")
            .collect();
        for flag in &takes {
            let data_flag = DATA_FLAGS.contains(&flag.as_str());
            let elsewhere = ELSEWHERE
                .iter()
                .any(|(c, f, _)| (*c == "*" || *c == name) && (*f == "*" || f == flag))
                || CHECKED_BELOW
                    .iter()
                    .any(|(c, f)| *c == name && (*f == "*" || f == flag));
            let unchecked = UNCHECKED
                .iter()
                .any(|(c, f)| *c == name && (*f == "*" || f == flag));
            if unchecked && !elsewhere {
                eprintln!("scae {name} --{flag}: not checked yet");
            }
            assert!(
                data_flag || elsewhere || unchecked,
                "scae {name} takes --{flag}, which no test checks: add a check, or name it"
            );
        }
        let studies = [
            "q1",
            "q2",
            "q3",
            "q4",
            "q5",
            "vae",
            "vae-likelihoods",
            "gmvae-real",
            "gmvae-ablation",
            "train",
        ];
        for flag in DATA_FLAGS {
            if !takes.iter().any(|t| t == flag) {
                let value = if flag == "top-genes" { "10" } else { "x" };
                let run = scae(&[&name, &format!("--{flag}"), value]);
                assert_eq!(
                    run.status.code(),
                    Some(2),
                    "scae {name} --{flag}: not clap's refusal"
                );
                checked.insert((name.clone(), flag), "refused by clap");
                continue;
            }
            if !studies.contains(&name.as_str()) {
                continue;
            }
            // The GMVAE studies need labels; they come from the flag under test, else `cell_type`.
            let needs_labels = name.starts_with("gmvae") && !flag.starts_with("labels");
            let mut go = |args: &[&str]| {
                let mut all: Vec<&str> = args.to_vec();
                if needs_labels {
                    all.extend(["--labels-key", "cell_type"]);
                }
                read(dir, &name, &all, &mut n)
            };
            let what = format!("scae {name} --{flag}");
            let outcome = match flag {
                // layers.h5ad: log-normalised X, and csr.h5ad's counts in layers["counts"].
                "layer" => {
                    let layer = go(&["--data", &layers, "--layer", "counts"]);
                    let x = go(&["--data", &csr]).expect("csr.h5ad");
                    match layer {
                        Ok(layer) => {
                            assert_eq!(layer["layer"], "counts", "{what}");
                            assert_eq!(layer["fingerprint"], x["fingerprint"], "{what}");
                            let lognorm = go(&["--data", &layers]);
                            assert!(
                                lognorm
                                    .as_ref()
                                    .map_or(true, |l| l["fingerprint"] != x["fingerprint"]),
                                "{what}: X and the layer read the same"
                            );
                            "the layer's counts are read"
                        }
                        Err(line) => panic!("{what}: {line}"),
                    }
                }
                "labels-key" => {
                    let a = go(&["--data", &csr, "--labels-key", "cell_type"]);
                    match a {
                        Ok(a) => {
                            let b = go(&["--data", &csr, "--labels-key", "batch"]).expect("batch");
                            assert_eq!(a["labels_key"], "cell_type", "{what}");
                            assert_eq!(b["labels_key"], "batch", "{what}");
                            assert_ne!(a["fingerprint"], b["fingerprint"], "{what}");
                            "the column's labels are read"
                        }
                        Err(line) => {
                            assert!(line.contains("does not use labels"), "{what}: {line}");
                            "refused in one line"
                        }
                    }
                }
                "labels" => {
                    let a = go(&["--data", &csr, "--labels", &labels]);
                    match a {
                        Ok(a) => {
                            let b = go(&["--data", &csr, "--labels-key", "cell_type"])
                                .expect("cell_type");
                            assert_ne!(a["fingerprint"], b["fingerprint"], "{what}");
                            "the file's labels are read"
                        }
                        Err(line) => {
                            assert!(line.contains("does not use labels"), "{what}: {line}");
                            "refused in one line"
                        }
                    }
                }
                _ => {
                    let a = go(&["--data", &csr, "--top-genes", "10"]).expect("top genes");
                    let b = go(&["--data", &csr]).expect("every gene");
                    assert_eq!(a["genes"], 10, "{what}: {a}");
                    assert_ne!(b["genes"], 10, "{what}: {b}");
                    "10 genes are kept"
                }
            };
            checked.insert((name.clone(), flag), outcome);
        }
    }
    for ((command, flag), outcome) in &checked {
        eprintln!("scae {command} --{flag}: {outcome}");
    }
    // Every data command was seen (the list above is clap's, so this guards the test itself).
    for command in ["q1", "q3", "vae", "gmvae-real", "gmvae-ablation", "train"] {
        assert!(
            checked.contains_key(&(command.to_owned(), "top-genes")),
            "{command}"
        );
    }
}

/// Runs `scae args`, which must succeed; its stdout.
fn ok(args: &[&str]) -> String {
    let run = scae(args);
    assert!(
        run.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

fn metrics(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("metrics.json")).expect("metrics.json");
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn every_other_flag_changes_what_was_run() {
    let root = project();
    let dir = root.path();
    let r = dir.display().to_string();
    let path = |name: &str| dir.join(name).display().to_string();
    let csr = io_fixture("csr.h5ad");

    // vae --epochs: the history has that many epochs; --denoised: the decoded means are a layer.
    for epochs in ["1", "3"] {
        let out = path(&format!("vae{epochs}"));
        ok(&[
            "vae", "--root", &r, "--data", &csr, "--out", &out, "--epochs", epochs,
        ]);
        let history = &metrics(Path::new(&out))["history"]["epochs"];
        assert_eq!(
            history.as_array().map(Vec::len),
            epochs.parse().ok(),
            "{history}"
        );
    }
    let layer = |h5ad: &str| {
        let options = scae_io::H5adOptions {
            layer: Some("scae_denoised".into()),
            ..Default::default()
        };
        scae_io::read_h5ad(Path::new(h5ad), &options)
    };
    for denoised in [false, true] {
        let (out, h5ad) = (
            path(&format!("den{denoised}")),
            path(&format!("den{denoised}.h5ad")),
        );
        let mut args = vec![
            "vae", "--root", &r, "--data", &csr, "--out", &out, "--h5ad", &h5ad,
        ];
        if denoised {
            args.push("--denoised");
        }
        ok(&args);
        let read = layer(&h5ad);
        assert_eq!(
            read.is_ok(),
            denoised,
            "--denoised {denoised}: {:?}",
            read.err()
        );
        if let Ok(m) = read {
            assert_eq!(
                m.x.shape(),
                (39, 25),
                "one decoded mean per kept cell and gene"
            );
        }
    }

    // train --loss: the config recorded, and the training, differ.
    let losses = ["mse", "nonzero_mse"].map(|loss| {
        let out = path(&format!("train-{loss}"));
        ok(&[
            "train", "--root", &r, "--data", &csr, "--out", &out, "--loss", loss,
        ]);
        metrics(Path::new(&out))
    });
    assert_eq!(losses[0]["config"]["loss"], "mse");
    assert_eq!(losses[1]["config"]["loss"], "nonzero_mse");
    let loss = |m: &Value| m["summary"]["final_train_loss"].as_f64().expect("a loss");
    assert_ne!(loss(&losses[0]), loss(&losses[1]));

    // data --seed: another draw of the simulation.
    let draws = ["1", "2"].map(|seed| {
        let out = dir.join(format!("data{seed}"));
        ok(&["data", "--out", &out.display().to_string(), "--seed", seed]);
        std::fs::read(out.join("counts_raw.npy")).expect("counts")
    });
    assert_ne!(draws[0], draws[1]);

    // report --results: the report is assembled from (and written to) that folder.
    let results = dir.join("elsewhere");
    let q1 = results.join("q1").display().to_string();
    let data = dir.join("data1").display().to_string();
    ok(&["q1", "--root", &r, "--data", &data, "--out", &q1]);
    ok(&[
        "report",
        "--root",
        &r,
        "--results",
        &results.display().to_string(),
    ]);
    let report = std::fs::read_to_string(results.join("REPORT.md")).expect("REPORT.md");
    assert!(report.contains("data1"), "{report}");
    assert!(!dir.join("results/REPORT.md").exists());

    // pca --components: that many columns of scores.
    let matrix = dir.join("data1/counts.npy").display().to_string();
    for k in [2, 5] {
        let out = path(&format!("pca{k}.npy"));
        ok(&["pca", &matrix, "--out", &out, "-k", &k.to_string()]);
        let scores = scae_io::read_matrix(Path::new(&out)).expect("scores");
        assert_eq!(scores.ncols(), k);
    }

    // tsne: every flag reaches the parameters the command reports, and those that change the
    // optimisation change the embedding.
    let small = dir.join("small.npy");
    let x = scae_io::read_matrix(Path::new(&matrix)).expect("matrix");
    let x = x.slice(ndarray::s![..60, ..]).to_owned();
    scae_io::write_npy(&small, &x.view()).expect("small");
    let small = small.display().to_string();
    let base = [
        "--perplexity",
        "5",
        "--n-iter",
        "120",
        "--early-exaggeration-iter",
        "40",
    ];
    let tsne = |extra: &[&str], n: &str| -> (Value, Vec<u8>) {
        let out = path(&format!("tsne-{n}.npy"));
        let mut args = vec!["tsne", &small, "--out", &out, "--threads", "1"];
        // The base settings, but for those the case sets.
        for pair in base.chunks(2) {
            if !extra.contains(&pair[0]) {
                args.extend(pair);
            }
        }
        args.extend(extra);
        let line = ok(&args);
        let json: Value = serde_json::from_str(line.trim()).expect("one JSON line");
        (
            json["params"].clone(),
            std::fs::read(&out).expect("embedding"),
        )
    };
    let (params, embedding) = tsne(&[], "base");
    let cases: [(&[&str], &str, Value, bool); 10] = [
        (&["--perplexity", "8"], "perplexity", 8.0.into(), true),
        (&["--method", "fft"], "method", "fft".into(), true),
        (&["--theta", "0.9"], "theta", 0.9.into(), true),
        (&["--n-iter", "150"], "n_iter", 150.into(), true),
        (
            &["--early-exaggeration-iter", "60"],
            "early_exaggeration_iter",
            60.into(),
            true,
        ),
        (
            &["--learning-rate", "20"],
            "learning_rate",
            20.0.into(),
            true,
        ),
        (&["--pca-components", "5"], "pca_components", 5.into(), true),
        (&["--random-init"], "init", "random".into(), true),
        (&["--seed", "9"], "seed", 9.into(), false),
        (
            &["--nondeterministic"],
            "deterministic",
            false.into(),
            false,
        ),
    ];
    for (i, (extra, key, value, moves)) in cases.into_iter().enumerate() {
        let (p, e) = tsne(extra, &i.to_string());
        assert_eq!(p[key], value, "{extra:?}: {p}");
        assert_ne!(
            params[key], value,
            "{extra:?}: the default is not the value tried"
        );
        if moves {
            assert_ne!(e, embedding, "{extra:?} left the embedding as it was");
        }
    }
    // The seed moves a random start.
    let a = tsne(&["--random-init", "--seed", "1"], "seed1").1;
    let b = tsne(&["--random-init", "--seed", "2"], "seed2").1;
    assert_ne!(a, b, "--seed left a random start as it was");
}
