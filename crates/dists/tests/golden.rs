//! Golden tests: scae-dists against scipy and mpmath on the committed grid that
//! `tests/fixtures/make_fixtures.py` wrote (x in {0, 1, 5, 100, 1e4, 1e5},
//! μ in {1e-8, 1e-3, 1, 10, 1e3, 1e6}, θ in {1e-4, 0.1, 1, 10, 1e4}, logit in
//! {-30, 0, 30}: 36 Poisson, 180 NB, 108 ZIP and 540 ZINB points).
//!
//! Tolerances, all relative, `|got − ref| / |ref|`, with no absolute floor (no
//! reference is 0, and the smallest, about −9.4e-22 for ZINB at x = 0, μ = 1e-8,
//! θ = 1e4, logit = 30, is matched to relative precision too):
//! * against mpmath at 50 digits: 1e-5 in float64, 1e-4 in float32;
//! * against scipy at the same tolerances, wherever scipy agrees with mpmath to
//!   1e-6. scipy is excluded at the points μ = 1e-8, θ = 1e4 for every x (NB: 6
//!   points; ZINB: the same 6 at each of the 3 logits, 18 points): there
//!   `nbinom.logpmf` evaluates θ·log p with p = θ/(θ+μ) rounded to 1 − 1e-12 in
//!   float64, which is off by 8.9e-5 relative at x = 0 and by 1.8e-6 to 4.8e-6
//!   at x ≥ 1 (grid.json "scipy_excluded" lists them with both values).
//!
//! Every value and every gradient (w.r.t. the log mean, log θ and the logit) is
//! finite in both dtypes; gradients also match central finite differences in
//! float64 to 1e-6 relative.

use std::path::PathBuf;

use scae_dists::{CountLaw, Likelihood, log_prob_rows};
use serde_json::Value;
use tch::{Kind, Tensor};

fn grid() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grid.json");
    let text = std::fs::read_to_string(&path).expect("grid.json is committed");
    serde_json::from_str(&text).expect("grid.json is valid JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a number array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).expect("a float tensor")
}

fn leaf(v: &[f64], kind: Kind) -> Tensor {
    Tensor::from_slice(v).to_kind(kind).set_requires_grad(true)
}

fn ln(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.ln()).collect()
}

/// A law from its natural parameters (μ, θ, logit), as unconstrained leaf tensors
/// that require gradients; also returns the leaves, for their gradients.
fn law(
    kind: Likelihood,
    mu: &[f64],
    theta: &[f64],
    logit: &[f64],
    dtype: Kind,
) -> (CountLaw, Vec<(&'static str, Tensor)>) {
    let log_mean = leaf(&ln(mu), dtype);
    let log_theta = leaf(&ln(theta), dtype);
    let zi_logit = leaf(logit, dtype);
    let mut leaves = vec![("log_mean", log_mean.shallow_clone())];
    if kind.has_dispersion() {
        leaves.push(("log_theta", log_theta.shallow_clone()));
    }
    if kind.has_zero_inflation() {
        leaves.push(("zi_logit", zi_logit.shallow_clone()));
    }
    let law = match kind {
        Likelihood::Poisson => CountLaw::Poisson { log_rate: log_mean },
        Likelihood::Nb => CountLaw::Nb {
            log_mean,
            log_theta,
        },
        Likelihood::Zip => CountLaw::Zip {
            log_rate: log_mean,
            zi_logit,
        },
        Likelihood::Zinb => CountLaw::Zinb {
            log_mean,
            log_theta,
            zi_logit,
        },
    };
    assert_eq!(law.kind(), kind);
    (law, leaves)
}

/// The columns of one law's table; θ and the logit default to 1 and 0 (unused).
fn columns(table: &Value) -> [Vec<f64>; 4] {
    let x = floats(&table["x"]);
    let or = |name: &str, fill: f64| {
        if table.get(name).is_some() {
            floats(&table[name])
        } else {
            vec![fill; x.len()]
        }
    };
    let (mu, theta, logit) = (floats(&table["mu"]), or("theta", 1.0), or("logit", 0.0));
    [x, mu, theta, logit]
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

#[test]
fn log_prob_matches_mpmath_and_scipy_on_the_grid_with_finite_gradients() {
    let g = grid();
    let mut report = Vec::new();
    for kind in Likelihood::ALL {
        let table = &g[kind.name()];
        let [x, mu, theta, logit] = columns(table);
        let mpmath = floats(&table["mpmath"]);
        let scipy = floats(&table["scipy"]);
        for (dtype, tol) in [(Kind::Double, 1e-5), (Kind::Float, 1e-4)] {
            let (law, leaves) = law(kind, &mu, &theta, &logit, dtype);
            let counts = Tensor::from_slice(&x).to_kind(dtype);
            let lp = law.log_prob(&counts);
            assert_eq!(lp.kind(), dtype);
            let got = to_vec(&lp);
            let (mut worst_mp, mut worst_sp, mut compared_sp) = (0f64, 0f64, 0usize);
            for i in 0..got.len() {
                let at = format!(
                    "{kind} {dtype:?} x={} mu={} theta={} logit={}",
                    x[i], mu[i], theta[i], logit[i]
                );
                assert!(got[i].is_finite(), "{at}: log_prob {}", got[i]);
                let e = rel(got[i], mpmath[i]);
                assert!(
                    e <= tol,
                    "{at}: got {}, mpmath {} (rel {e:.2e})",
                    got[i],
                    mpmath[i]
                );
                worst_mp = worst_mp.max(e);
                if rel(scipy[i], mpmath[i]) <= 1e-6 {
                    let e = rel(got[i], scipy[i]);
                    assert!(
                        e <= tol,
                        "{at}: got {}, scipy {} (rel {e:.2e})",
                        got[i],
                        scipy[i]
                    );
                    worst_sp = worst_sp.max(e);
                    compared_sp += 1;
                }
            }
            lp.sum(Kind::Double).backward();
            for (name, p) in &leaves {
                for (i, d) in to_vec(&p.grad()).into_iter().enumerate() {
                    assert!(
                        d.is_finite(),
                        "{kind} {dtype:?} x={} mu={} theta={} logit={}: d/d{name} = {d}",
                        x[i],
                        mu[i],
                        theta[i],
                        logit[i]
                    );
                }
            }
            report.push(format!(
                "{kind:>7} {dtype:?}: {} points, max rel err vs mpmath {worst_mp:.2e}, \
                 vs scipy {worst_sp:.2e} ({compared_sp} points)",
                got.len()
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// log p at one point, in float64, from unconstrained parameters.
fn log_prob_at(kind: Likelihood, x: f64, params: [f64; 3]) -> f64 {
    let [log_mean, log_theta, logit] = params.map(|p| Tensor::from_slice(&[p]));
    let law = match kind {
        Likelihood::Poisson => CountLaw::Poisson { log_rate: log_mean },
        Likelihood::Nb => CountLaw::Nb {
            log_mean,
            log_theta,
        },
        Likelihood::Zip => CountLaw::Zip {
            log_rate: log_mean,
            zi_logit: logit,
        },
        Likelihood::Zinb => CountLaw::Zinb {
            log_mean,
            log_theta,
            zi_logit: logit,
        },
    };
    to_vec(&law.log_prob(&Tensor::from_slice(&[x])))[0]
}

#[test]
fn gradients_match_central_differences_in_float64() {
    // (x, μ, θ, logit): d = 0; small and large θ against x (both sides of the
    // Stirling threshold and of θ ≥ x + 1); at x = 0 both zero branches (the
    // log1p one when (1 − π)(1 − p₀) < ½, the logaddexp one otherwise).
    let points = [
        (0.0, 1.0, 1.0, 0.3),
        (3.0, 2.5, 0.5, -1.0),
        (7.0, 3.0, 0.5, 1.0),
        (2.0, 1.0, 1e4, 0.0),
        (50.0, 40.0, 2.0, -2.0),
        (12.0, 30.0, 20.0, 0.5),
        (0.0, 2.0, 3.0, -2.0),
        (0.0, 0.01, 1e3, 4.0),
        (0.0, 200.0, 0.05, -3.0),
    ];
    let h = 1e-5;
    for kind in Likelihood::ALL {
        for &(x, mu, theta, logit) in &points {
            let (law, leaves) = law(kind, &[mu], &[theta], &[logit], Kind::Double);
            law.log_prob(&Tensor::from_slice(&[x]))
                .sum(Kind::Double)
                .backward();
            let base = [mu.ln(), theta.ln(), logit];
            for (name, p) in &leaves {
                let j = ["log_mean", "log_theta", "zi_logit"]
                    .iter()
                    .position(|n| n == name)
                    .expect("a known parameter");
                let (mut up, mut down) = (base, base);
                up[j] += h;
                down[j] -= h;
                let fd = (log_prob_at(kind, x, up) - log_prob_at(kind, x, down)) / (2.0 * h);
                let ad = to_vec(&p.grad())[0];
                assert!(
                    (ad - fd).abs() <= 1e-6 * fd.abs().max(1.0),
                    "{kind} x={x} mu={mu} theta={theta} logit={logit}: d/d{name} autograd {ad}, \
                     finite difference {fd}"
                );
            }
        }
    }
}

#[test]
fn mean_and_variance_match_scipy() {
    let g = grid();
    for row in g["moments"].as_array().expect("moments") {
        let num = |k: &str| row[k].as_f64().expect("a number");
        let (mu, theta, logit) = (num("mu"), num("theta"), num("logit"));
        for kind in Likelihood::ALL {
            let (law, _) = law(kind, &[mu], &[theta], &[logit], Kind::Double);
            let want = floats(&row[kind.name()]);
            let got = [to_vec(&law.mean())[0], to_vec(&law.variance())[0]];
            for (what, got, want) in [("mean", got[0], want[0]), ("variance", got[1], want[1])] {
                assert!(
                    rel(got, want) <= 1e-12,
                    "{kind} mu={mu} theta={theta} logit={logit}: {what} {got}, scipy {want}"
                );
            }
        }
    }
}

#[test]
fn probabilities_sum_to_one() {
    let x: Vec<f64> = (0..=2000).map(f64::from).collect();
    let xs = Tensor::from_slice(&x);
    // (μ, θ, logit): small means, over- and nearly un-dispersed, zero inflation both ways.
    let sets = [
        (3.0, 1.0, 0.0),
        (0.2, 0.3, -2.0),
        (5.0, 0.5, 1.5),
        (20.0, 2.0, -0.5),
        (2.0, 1e4, 3.0),
        (1e-3, 1e-4, 0.0),
    ];
    for kind in Likelihood::ALL {
        for &(mu, theta, logit) in &sets {
            let (law, _) = law(kind, &[mu], &[theta], &[logit], Kind::Double);
            let total = law.log_prob(&xs).exp().sum(Kind::Double).double_value(&[]);
            assert!(
                (total - 1.0).abs() <= 1e-6,
                "{kind} mu={mu} theta={theta} logit={logit}: probabilities sum to {total}"
            );
        }
    }
}

#[test]
fn log_prob_rows_is_the_per_entry_sum_with_broadcast_parameters() {
    let (cells, genes) = (3i64, 4i64);
    let x = Tensor::from_slice(&[0.0, 1.0, 5.0, 0.0, 2.0, 0.0, 0.0, 40.0, 7.0, 3.0, 0.0, 1e3])
        .view([cells, genes]);
    let log_mean = Tensor::from_slice(&[
        -1.0, 0.5, 1.2, -3.0, 0.0, 2.0, -0.5, 3.5, 1.9, 1.0, 0.1, 6.9,
    ])
    .view([cells, genes]);
    let log_theta = Tensor::from_slice(&[0.0, -1.0, 2.0, 9.0]); // one per gene
    let zi_logit = (&log_mean * 0.7 - 1.0).view([cells, genes]);
    let laws = [
        CountLaw::Poisson {
            log_rate: log_mean.shallow_clone(),
        },
        CountLaw::Nb {
            log_mean: log_mean.shallow_clone(),
            log_theta: log_theta.shallow_clone(),
        },
        CountLaw::Zip {
            log_rate: log_mean.shallow_clone(),
            zi_logit: zi_logit.shallow_clone(),
        },
        CountLaw::Zinb {
            log_mean: log_mean.shallow_clone(),
            log_theta: log_theta.shallow_clone(),
            zi_logit: zi_logit.shallow_clone(),
        },
    ];
    for law in &laws {
        let entries = law.log_prob(&x);
        assert_eq!(entries.size(), [cells, genes]);
        let rows = log_prob_rows(law, &x);
        assert_eq!(rows.size(), [cells]);
        let entries = to_vec(&entries);
        for (c, got) in to_vec(&rows).into_iter().enumerate() {
            let want: f64 = entries[c * 4..(c + 1) * 4].iter().sum();
            assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "{}: cell {c} row sum {got}, entries {want}",
                law.kind()
            );
        }
        // Float32 counts are cast to the parameters' float64.
        let from_f32 = to_vec(&log_prob_rows(law, &x.to_kind(Kind::Float)));
        assert_eq!(from_f32, to_vec(&rows));
    }
}

/// Sample mean, variance and fourth central moment.
fn moments(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    let m4 = v.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n;
    (m, var, m4)
}

#[test]
fn seeded_draws_reproduce_mean_and_variance() {
    // One test draws from libtorch's global generator, so the seeded draws are
    // the same on every run. Tolerance: 5 standard errors, sqrt(Var/n) for the
    // mean and sqrt((m4 - s^4)/n) (m4 the sample fourth central moment) for the
    // variance.
    let n = 20_000i64;
    tch::manual_seed(20_240_611);
    for dtype in [Kind::Double, Kind::Float] {
        for kind in Likelihood::ALL {
            for &(mu, theta, logit) in
                &[(4.0f64, 2.0f64, -0.5), (0.3, 0.2, 1.0), (150.0, 5.0, -2.0)]
            {
                let full = |v: f64| Tensor::full([n], v, (dtype, tch::Device::Cpu));
                let law = match kind {
                    Likelihood::Poisson => CountLaw::Poisson {
                        log_rate: full(f64::ln(mu)),
                    },
                    Likelihood::Nb => CountLaw::Nb {
                        log_mean: full(f64::ln(mu)),
                        log_theta: Tensor::from_slice(&[theta.ln()]).to_kind(dtype),
                    },
                    Likelihood::Zip => CountLaw::Zip {
                        log_rate: full(f64::ln(mu)),
                        zi_logit: full(logit),
                    },
                    Likelihood::Zinb => CountLaw::Zinb {
                        log_mean: full(f64::ln(mu)),
                        log_theta: Tensor::from_slice(&[theta.ln()]).to_kind(dtype),
                        zi_logit: full(logit),
                    },
                };
                let draws = law.sample();
                assert_eq!(draws.size(), [n]);
                assert_eq!(draws.kind(), dtype);
                let draws = to_vec(&draws);
                assert!(draws.iter().all(|d| *d >= 0.0 && d.fract() == 0.0));
                let mean = to_vec(&law.mean())[0];
                let var = to_vec(&law.variance())[0];
                let (m, s2, m4) = moments(&draws);
                let at = format!("{kind} {dtype:?} mu={mu} theta={theta} logit={logit}");
                let se_m = (var / n as f64).sqrt();
                assert!(
                    (m - mean).abs() <= 5.0 * se_m,
                    "{at}: sample mean {m}, law {mean} (se {se_m})"
                );
                let se_v = ((m4 - s2 * s2) / n as f64).sqrt();
                assert!(
                    (s2 - var).abs() <= 5.0 * se_v,
                    "{at}: sample variance {s2}, law {var} (se {se_v})"
                );
            }
        }
    }
    // The same seed gives the same draws.
    let law = CountLaw::Zinb {
        log_mean: Tensor::from_slice(&[1.0f64; 64]),
        log_theta: Tensor::from_slice(&[0.0f64]),
        zi_logit: Tensor::from_slice(&[0.0f64]),
    };
    tch::manual_seed(7);
    let a = to_vec(&law.sample());
    tch::manual_seed(7);
    assert_eq!(a, to_vec(&law.sample()));
}

#[test]
fn extreme_parameters_give_finite_values_and_gradients() {
    // Far outside the grid: μ from e^-30 to e^30, θ from e^-20 to e^20, logits ±50.
    let mut pts = Vec::new();
    for x in [0.0, 1.0, 1e5] {
        for log_mu in [-30.0, 0.0, 30.0] {
            for log_theta in [-20.0, 0.0, 20.0] {
                for logit in [-50.0, 50.0] {
                    pts.push((x, f64::exp(log_mu), f64::exp(log_theta), logit));
                }
            }
        }
    }
    let col = |f: fn(&(f64, f64, f64, f64)) -> f64| pts.iter().map(f).collect::<Vec<_>>();
    let (x, mu, theta, logit) = (col(|p| p.0), col(|p| p.1), col(|p| p.2), col(|p| p.3));
    for dtype in [Kind::Double, Kind::Float] {
        for kind in Likelihood::ALL {
            let (law, leaves) = law(kind, &mu, &theta, &logit, dtype);
            let lp = law.log_prob(&Tensor::from_slice(&x).to_kind(dtype));
            let values = to_vec(&lp);
            lp.sum(Kind::Double).backward();
            for (i, v) in values.iter().enumerate() {
                assert!(
                    v.is_finite() && *v <= 0.0,
                    "{kind} {dtype:?} {:?}: {v}",
                    pts[i]
                );
            }
            for (name, p) in &leaves {
                for (i, d) in to_vec(&p.grad()).into_iter().enumerate() {
                    assert!(
                        d.is_finite(),
                        "{kind} {dtype:?} {:?}: d/d{name} {d}",
                        pts[i]
                    );
                }
            }
        }
    }
}
