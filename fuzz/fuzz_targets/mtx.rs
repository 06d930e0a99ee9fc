//! `scae_io::read_10x` on a Cell Ranger v2 folder whose `matrix.mtx` holds the fuzz input, and on
//! a second folder holding the same input gzipped (`matrix.mtx.gz`).
//!
//! The `genes.tsv` and `barcodes.tsv` beside the matrix are written to match the shape the input's
//! size line declares (up to [`MAX_ANNOTATED`] per axis), so that a mutated shape still reaches
//! the end of the reader rather than stopping at a length mismatch. Beyond not panicking: a matrix
//! that is read is cells x genes CSR of counts with one barcode per cell and one id per gene, and
//! the gzipped copy reads the same as the plain file.

#![no_main]

use std::io::{Read, Write};
use std::sync::Mutex;

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;
use scae_io::{TenxMatrix, read_10x};

/// Largest genes or barcodes file written, in lines; a larger declared shape gets one line.
const MAX_ANNOTATED: u64 = 4096;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fuzz_target!(|data: &[u8]| {
    let (genes, cells) = declared_shape(data);
    annotate(genes, cells);
    scae_fuzz::write("plain/matrix.mtx", data);
    let plain = read_10x(&scae_fuzz::scratch().join("plain"));
    if let Ok(m) = &plain {
        check(m);
    }
    if data.starts_with(&GZIP_MAGIC) {
        return; // already gzip: the plain folder decompressed it
    }
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(data).expect("gzip in memory");
    scae_fuzz::write("gz/matrix.mtx.gz", &gz.finish().expect("gzip in memory"));
    let zipped = read_10x(&scae_fuzz::scratch().join("gz"));
    match (&plain, &zipped) {
        (Ok(a), Ok(b)) => assert!(a.counts == b.counts && a.barcodes == b.barcodes),
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "plain and gzipped differ: {:?} vs {:?}",
            a.as_ref().map(|_| ()),
            b.as_ref().map(|_| ())
        ),
    }
});

/// The promises of `read_10x`'s documentation.
fn check(m: &TenxMatrix) {
    assert!(m.counts.is_csr());
    assert!(m.counts.shape() == (m.barcodes.len(), m.gene_ids.len()));
    assert!(m.gene_names.len() == m.gene_ids.len());
    assert!(
        m.counts
            .data()
            .iter()
            .all(|&v| v >= 0.0 && v.fract() == 0.0)
    );
}

/// `(rows, cols)` of the first line after the banner that is not blank or a comment, when both
/// are at most [`MAX_ANNOTATED`]; `(1, 1)` otherwise. A lenient reading: the reader under test
/// decides what is valid.
fn declared_shape(data: &[u8]) -> (u64, u64) {
    let mut text = Vec::new();
    let data = if data.starts_with(&GZIP_MAGIC) {
        // Whatever decompresses of the first 64 KiB; a corrupt stream just gives less.
        let _ = MultiGzDecoder::new(data)
            .take(1 << 16)
            .read_to_end(&mut text);
        &text[..]
    } else {
        data
    };
    let size_line = data
        .split(|&b| b == b'\n')
        .skip(1)
        .find(|l| !(l.first() == Some(&b'%') || l.iter().all(u8::is_ascii_whitespace)));
    let mut fields = size_line
        .unwrap_or_default()
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty())
        .map(|f| {
            std::str::from_utf8(f)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        });
    match (fields.next().flatten(), fields.next().flatten()) {
        (Some(r), Some(c))
            if (1..=MAX_ANNOTATED).contains(&r) && (1..=MAX_ANNOTATED).contains(&c) =>
        {
            (r, c)
        }
        _ => (1, 1),
    }
}

/// Writes `genes.tsv` and `barcodes.tsv` for a `genes` x `cells` matrix into both folders, unless
/// the last call already did.
fn annotate(genes: u64, cells: u64) {
    static LAST: Mutex<Option<(u64, u64)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if *last == Some((genes, cells)) {
        return;
    }
    let genes_tsv: String = (0..genes).map(|i| format!("G{i}\tgene{i}\n")).collect();
    let barcodes_tsv: String = (0..cells).map(|i| format!("CELL{i}-1\n")).collect();
    for dir in ["plain", "gz"] {
        scae_fuzz::write(&format!("{dir}/genes.tsv"), genes_tsv.as_bytes());
        scae_fuzz::write(&format!("{dir}/barcodes.tsv"), barcodes_tsv.as_bytes());
    }
    *last = Some((genes, cells));
}
