//! Structure-aware inputs for the HDF5 readers: the fuzz bytes choose what a Cell Ranger or
//! AnnData file holds (shapes, pointers, indices and values and their stored types, names,
//! encodings, datasets left out), and a well-formed HDF5 file with that content is written for
//! the reader.
//!
//! The bytes drive the content, not the container: mutating the HDF5 container itself would
//! exercise the C library's own parser, which is not scae's code (and is fuzzed upstream); scae's
//! code is the checking of what a well-formed file holds.

use std::path::Path;

use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type, Location};

/// The fuzz input, read a little at a time; zeros once it runs out.
#[derive(Debug)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub fn bit(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A small count, at most `max`.
    pub fn small(&mut self, max: usize) -> usize {
        usize::from(self.u8()) % (max + 1)
    }

    /// An integer mostly in `0..=max`, sometimes just outside it, negative or large.
    pub fn index(&mut self, max: i64) -> i64 {
        match self.u8() % 16 {
            0 => -1,
            1 => max + 1,
            2 => i64::from(self.u8()) * 1000,
            _ => i64::from(self.u8()) % (max + 1).max(1),
        }
    }

    /// A value: mostly small counts, sometimes fractional, negative, huge or not finite.
    pub fn value(&mut self) -> f64 {
        match self.u8() % 16 {
            0 => -1.0,
            1 => 0.5,
            2 => f64::NAN,
            3 => 1e30,
            4 => 0.0,
            _ => f64::from(self.u8() % 20),
        }
    }
}

pub fn string_attr(loc: &Location, name: &str, value: &str) {
    let v: VarLenUnicode = value.parse().expect("no NUL");
    loc.new_attr::<VarLenUnicode>()
        .create(name)
        .expect("attribute")
        .write_scalar(&v)
        .expect("write the attribute");
}

/// A `string-array` dataset of `n` names.
pub fn strings(g: &Group, name: &str, n: usize, prefix: &str) {
    let v: Vec<VarLenUnicode> = (0..n)
        .map(|i| format!("{prefix}{i}").parse().expect("no NUL"))
        .collect();
    let ds = g
        .new_dataset_builder()
        .with_data(&v)
        .create(name)
        .expect("strings");
    string_attr(&ds, "encoding-type", "string-array");
    string_attr(&ds, "encoding-version", "0.2.0");
}

pub fn array<T: H5Type>(g: &Group, name: &str, v: &[T]) {
    g.new_dataset_builder()
        .with_data(v)
        .create(name)
        .expect("array");
}

/// Integers stored in a type the bytes choose (i32, i64, u16 or float).
pub fn ints(b: &mut Bytes<'_>, g: &Group, name: &str, v: &[i64]) {
    match b.u8() % 8 {
        0 => array(g, name, &v.iter().map(|&x| x as f64).collect::<Vec<_>>()),
        1 => array(g, name, &v.iter().map(|&x| x as u16).collect::<Vec<_>>()),
        2 | 3 => array(g, name, v),
        _ => array(g, name, &v.iter().map(|&x| x as i32).collect::<Vec<_>>()),
    }
}

/// Values stored in a type the bytes choose (f32, f64 or i32).
pub fn values(b: &mut Bytes<'_>, g: &Group, name: &str, v: &[f64]) {
    match b.u8() % 4 {
        0 => array(g, name, v),
        1 => array(g, name, &v.iter().map(|&x| x as i32).collect::<Vec<_>>()),
        _ => array(g, name, &v.iter().map(|&x| x as f32).collect::<Vec<_>>()),
    }
}

/// A compressed matrix's three datasets, mostly consistent with `major x minor`, sometimes not;
/// any of them may be left out.
pub fn compressed(b: &mut Bytes<'_>, g: &Group, major: usize, minor: usize) {
    let mut indptr = vec![0i64];
    let mut indices = Vec::new();
    let mut data = Vec::new();
    for _ in 0..major {
        let k = b.small(4).min(minor.max(1));
        for _ in 0..k {
            indices.push(b.index(minor as i64 - 1));
            data.push(b.value());
        }
        indptr.push(indices.len() as i64);
    }
    match b.u8() % 12 {
        0 => indptr.push(indices.len() as i64),
        1 => {
            indptr.pop();
        }
        2 if indptr.len() > 2 => indptr.swap(1, 2),
        3 => indptr[0] = 1,
        4 => {
            data.pop();
        }
        5 => *indptr.last_mut().expect("one pointer") += 3,
        _ => {}
    }
    let skip = b.u8() % 16;
    if skip != 0 {
        ints(b, g, "indptr", &indptr);
    }
    if skip != 1 {
        ints(b, g, "indices", &indices);
    }
    if skip != 2 {
        values(b, g, "data", &data);
    }
}

/// A fresh HDF5 file at `path`.
pub fn create(path: &Path) -> hdf5::File {
    let _ = std::fs::remove_file(path);
    hdf5::File::create(path).expect("create the scratch HDF5 file")
}
