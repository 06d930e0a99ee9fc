//! `scae_io::read_10x_h5` on a Cell Ranger `.h5` whose content the fuzz input chooses (version 2
//! or 3; shape, pointers, indices and values of any stored type; barcodes and features of any
//! length; datasets left out), then `CountMatrix::new` on what it returns.
//!
//! Beyond not panicking: a matrix that is read has the declared shape, one barcode per cell and
//! one gene id per gene.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scae_fuzz::h5gen::{Bytes, array, compressed, create, strings};

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let path = scae_fuzz::scratch().join("m.h5");
    let (genes, cells) = (b.small(12), b.small(12));
    {
        let file = create(&path);
        let v3 = b.bit();
        let g = file
            .create_group(if v3 { "matrix" } else { "hg19" })
            .expect("group");
        let shape = match b.u8() % 10 {
            0 => vec![genes as i64],
            1 => vec![-1, cells as i64],
            _ => vec![genes as i64, cells as i64],
        };
        array(&g, "shape", &shape);
        compressed(&mut b, &g, cells, genes);
        let off = |b: &mut Bytes<'_>| usize::from(b.u8() % 10 == 0);
        let n = cells + off(&mut b);
        strings(&g, "barcodes", n, "AC-");
        if v3 {
            let f = g.create_group("features").expect("features");
            for name in ["id", "name", "feature_type", "genome"] {
                let n = genes + off(&mut b);
                if b.u8() % 20 != 0 {
                    strings(&f, name, n, name);
                }
            }
        } else {
            let n = genes + off(&mut b);
            strings(&g, "genes", n, "ENSG");
            if b.bit() {
                let n = genes + off(&mut b);
                strings(&g, "gene_names", n, "G");
            }
        }
    }
    let Ok(m) = scae_io::read_10x_h5(&path) else {
        return;
    };
    assert_eq!(m.counts.shape(), (cells, genes));
    assert_eq!(m.barcodes.len(), cells);
    assert_eq!(m.gene_ids.len(), genes);
    assert!(m.counts.is_csr());
    let _ = scae_io::CountMatrix::new(m.counts, &path);
});
