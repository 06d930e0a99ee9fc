//! The AnnData reader on an `.h5ad` whose content the fuzz input chooses: `X` as CSR, CSC, dense
//! or an unknown encoding (current attributes or the pre-0.7 `h5sparse_format`), a counts layer,
//! `obs` as a dataframe group or a pre-0.7 compound dataset, a label column (categorical with any
//! codes, strings or numbers), names of any length, datasets left out. Each file is read whole
//! (`read_h5ad`, then as counts) and by rows (`H5adRows`, and the backed batch source through a
//! planned pass).
//!
//! Beyond not panicking: a matrix that is read has one name per cell and gene and one label per
//! cell, and rows read by blocks are the rows read whole.

#![no_main]

use std::sync::Arc;

use hdf5::types::FixedAscii;
use libfuzzer_sys::fuzz_target;
use scae_fuzz::h5gen::{Bytes, array, compressed, create, string_attr, strings, values};
use scae_io::{BatchSource, H5adOptions};

/// A row of a pre-0.7 compound `obs`.
#[derive(hdf5::H5Type, Clone, Copy)]
#[repr(C)]
struct OldObs {
    index: FixedAscii<8>,
    c: i8,
}

/// `X` (or a layer) of `n x m` as the bytes choose.
fn matrix(b: &mut Bytes<'_>, parent: &hdf5::Group, name: &str, kind: u8, (n, m): (usize, usize)) {
    if kind < 2 {
        let rows = if b.u8() % 10 == 0 { n + 1 } else { n };
        let v = ndarray::Array2::from_shape_fn((rows, m), |_| b.value() as f32);
        parent
            .new_dataset_builder()
            .with_data(&v)
            .create(name)
            .expect("dense");
        return;
    }
    let g = parent.create_group(name).expect("matrix group");
    let csc = kind % 2 == 0;
    let encoding = match b.u8() % 12 {
        0 => "coo_matrix",
        _ if csc => "csc_matrix",
        _ => "csr_matrix",
    };
    if b.u8() % 6 == 0 {
        string_attr(&g, "h5sparse_format", &encoding[..3]);
        g.new_attr::<i64>()
            .shape([2])
            .create("h5sparse_shape")
            .expect("attribute")
            .write_raw(&[n as i64, m as i64])
            .expect("write");
    } else {
        string_attr(&g, "encoding-type", encoding);
        let shape: Vec<i64> = match b.u8() % 10 {
            0 => vec![n as i64],
            1 => vec![n as i64 + 1, m as i64],
            _ => vec![n as i64, m as i64],
        };
        g.new_attr::<i64>()
            .shape([shape.len()])
            .create("shape")
            .expect("attribute")
            .write_raw(&shape)
            .expect("write");
    }
    let (major, minor) = if csc { (m, n) } else { (n, m) };
    compressed(b, &g, major, minor);
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let path = scae_fuzz::scratch().join("m.h5ad");
    let (n, m) = (b.small(10) + 1, b.small(10) + 1);
    let layer = b.u8() % 4;
    let labels = b.u8() % 3;
    {
        let file = create(&path);
        let kind = b.u8() % 8;
        matrix(&mut b, &file, "X", kind, (n, m));
        if layer == 1 {
            let layers = file.create_group("layers").expect("layers");
            matrix(&mut b, &layers, "counts", kind, (n, m));
        }
        if b.u8() % 4 == 0 {
            // Pre-0.7: obs as a compound dataset, categories in uns.
            let rows: Vec<OldObs> = (0..n)
                .map(|i| OldObs {
                    index: FixedAscii::from_ascii(format!("c{i}").as_bytes()).expect("ascii"),
                    c: b.index(3) as i8,
                })
                .collect();
            array(&file, "obs", &rows);
            let uns = file.create_group("uns").expect("uns");
            if b.bit() {
                let cats: Vec<FixedAscii<4>> = (0..3)
                    .map(|i| FixedAscii::from_ascii(format!("t{i}").as_bytes()).expect("ascii"))
                    .collect();
                array(&uns, "c_categories", &cats);
            }
        } else {
            let obs = file.create_group("obs").expect("obs");
            string_attr(&obs, "_index", "_index");
            let names = if b.u8() % 10 == 0 { n + 1 } else { n };
            strings(&obs, "_index", names, "cell");
            match b.u8() % 4 {
                0 => {
                    let c = obs.create_group("c").expect("column");
                    let encoding = if b.u8() % 10 == 0 {
                        "nullable"
                    } else {
                        "categorical"
                    };
                    string_attr(&c, "encoding-type", encoding);
                    let codes: Vec<i8> = (0..n).map(|_| b.index(2) as i8).collect();
                    array(&c, "codes", &codes);
                    strings(&c, "categories", 3, "type");
                }
                1 => strings(&obs, "c", n, "label"),
                2 => {
                    let v: Vec<f64> = (0..n).map(|_| b.value()).collect();
                    values(&mut b, &obs, "c", &v);
                }
                _ => {}
            }
        }
        let var = file.create_group("var").expect("var");
        string_attr(&var, "_index", "_index");
        let names = if b.u8() % 10 == 0 { m + 1 } else { m };
        strings(&var, "_index", names, "gene");
    }
    let options = H5adOptions {
        layer: match layer {
            1 => Some("counts".into()),
            2 => Some("raw".into()),
            _ => None,
        },
        labels_key: (labels > 0).then(|| "c".into()),
    };
    if let Ok(a) = scae_io::read_h5ad(&path, &options) {
        assert_eq!(a.obs_names.len(), a.x.rows());
        assert_eq!(a.var_names.len(), a.x.cols());
        if let Some(l) = &a.labels {
            assert_eq!(l.len(), a.x.rows());
        }
        let whole = scae_io::to_dense(&a.x);
        let from = 1.min(a.x.rows());
        if let Ok(rows) = scae_io::H5adRows::open(&path, options.layer.as_deref())
            && rows.row_readable()
            && let Ok(part) = rows.read_rows(from..a.x.rows())
        {
            let part = scae_io::to_dense(&part);
            let rest = whole.slice(ndarray::s![from.., ..]);
            assert_eq!(part.dim(), rest.dim());
            // Bit for bit: a stored NaN is read as the same NaN both ways.
            assert!(
                part.iter()
                    .zip(rest.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
        let _ = a.into_counts(&path);
    }
    if let Ok(rows) = scae_io::H5adRows::open(&path, options.layer.as_deref()) {
        let cells = rows.shape().0;
        if let Ok(source) = scae_io::BackedRows::new(Arc::new(rows), (0..cells).collect()) {
            let order: Vec<usize> = (0..cells).rev().collect();
            source.plan(&order, 3);
            for chunk in order.chunks(3) {
                if source.batch(chunk).is_err() {
                    break;
                }
            }
        }
    }
});
