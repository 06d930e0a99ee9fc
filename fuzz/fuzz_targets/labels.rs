//! `scae_io::read_labels` on a `labels.txt` holding the fuzz input, without and with an expected
//! number of cells.
//!
//! Beyond not panicking: every code indexes a name, the names are distinct, and the count check
//! accepts exactly the number of labels read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scae_io::{Error, read_labels};

fuzz_target!(|data: &[u8]| {
    let path = scae_fuzz::write("labels.txt", data);
    let labels = match read_labels(&path, None) {
        Ok(labels) => labels,
        Err(_) => {
            // The same failure, whatever the count: it is about the text, not the cells.
            assert!(read_labels(&path, Some(data.len())).is_err());
            return;
        }
    };
    let n = labels.len();
    assert!(n > 0);
    assert!(labels.codes.iter().all(|&c| c < labels.n_classes()));
    let mut names = labels.names.clone();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() == labels.n_classes(), "duplicate class names");
    assert!(read_labels(&path, Some(n)).is_ok_and(|again| again == labels));
    for cells in [n - 1, n + 1] {
        match read_labels(&path, Some(cells)) {
            Err(Error::LabelCount {
                labels: l,
                cells: c,
                ..
            }) => assert!(l == n && c == cells),
            other => panic!("{cells} cells for {n} labels: {other:?}"),
        }
    }
});
