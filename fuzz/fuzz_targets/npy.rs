//! `scae_io::read_matrix` and `read_counts` on a `.npy` file holding the fuzz input.
//!
//! Beyond not panicking: a matrix that is read is non-empty, standard-layout and finite, and
//! `read_counts` either returns the same matrix or says which value is not a count.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scae_io::{Error, read_counts, read_matrix};

fuzz_target!(|data: &[u8]| {
    let path = scae_fuzz::write("m.npy", data);
    let Ok(m) = read_matrix(&path) else {
        return;
    };
    assert!(m.nrows() > 0 && m.ncols() > 0, "empty {:?}", m.shape());
    assert!(m.is_standard_layout());
    assert!(m.iter().all(|v| v.is_finite()));
    match read_counts(&path) {
        Ok(counts) => assert!(counts == m),
        Err(Error::NotCount {
            row, col, value, ..
        }) => {
            assert!(m[[row, col]].to_bits() == value.to_bits());
        }
        Err(err) => panic!("read_matrix accepted the file, read_counts did not: {err}"),
    }
});
