//! What the HDF5 readers share: opening a file with a clear error when it is not HDF5, finding
//! groups and datasets by path, and reading 1-D numbers, strings and string attributes whatever
//! width and encoding the writer chose.
//!
//! Every error is an [`Error::Hdf5`] that names the file and the object inside it
//! (`counts.h5ad: /X/indptr: ...`). The HDF5 library is built from source with the crate
//! (`hdf5-metno`, `static`), so nothing is needed on the machine.

use std::ops::Range;
use std::path::{Path, PathBuf};

use hdf5::types::{FixedAscii, FixedUnicode, TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::{Dataset, File, Group, H5Type, Location};

use crate::{Error, Result};

/// What an HDF5 data file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hdf5Kind {
    /// Cell Ranger's `filtered_feature_bc_matrix.h5` (v2 or v3).
    TenxH5,
    /// AnnData.
    H5ad,
}

/// An HDF5 data file, opened once: every reader of it ([`crate::read_h5ad_file`],
/// [`crate::H5adRows::from_file`], [`crate::read_10x_h5_file`]) and the `.h5ad` writer's
/// [`crate::AnnSource`] take this handle, so a command that reads a file, trains and writes its
/// results back opens the file one time. Clones share the open file.
#[derive(Debug, Clone)]
pub struct Hdf5File {
    pub(crate) h5: H5,
}

impl Hdf5File {
    /// Opens `path` read-only; `Ok(None)` when it is not an HDF5 file (no signature).
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; [`Error::Hdf5`] when the library refuses it.
    pub fn open(path: &Path) -> Result<Option<Self>> {
        if !is_hdf5(path)? {
            return Ok(None);
        }
        Ok(Some(Self {
            h5: H5::open(path)?,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.h5.path
    }

    /// AnnData when it has `obs` and `var`; Cell Ranger's `.h5` when it has a `matrix` group (or
    /// a genome group holding `indptr` and `genes`) and no `obs`; `None` otherwise.
    pub fn kind(&self) -> Option<Hdf5Kind> {
        if self.h5.has("obs") && self.h5.has("var") {
            Some(Hdf5Kind::H5ad)
        } else if crate::tenx_h5::matrix_group(&self.h5).is_ok() && !self.h5.has("obs") {
            Some(Hdf5Kind::TenxH5)
        } else {
            None
        }
    }
}

/// The signature every HDF5 file carries at offset 0, 512, 1024, 2048, ...
const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// An open HDF5 file and its path, for messages. Clones share the one open file.
#[derive(Debug, Clone)]
pub(crate) struct H5 {
    pub path: PathBuf,
    pub file: File,
}

impl H5 {
    /// Opens `path` read-only.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Hdf5`] when it is not HDF5 or the
    /// library refuses it.
    pub fn open(path: &Path) -> Result<Self> {
        if !is_hdf5(path)? {
            return Err(Error::hdf5(
                path,
                "/",
                "not an HDF5 file (no HDF5 signature)",
            ));
        }
        let file = File::open(path)
            .map_err(|e| Error::hdf5(path, "/", format!("cannot open: {}", one_line(&e))))?;
        close_on_exec(&file);
        // Counted by the tests that check a command opens its input once.
        tracing::debug!("opened the HDF5 file {}", path.display());
        Ok(Self {
            path: path.into(),
            file,
        })
    }

    /// The number of rows of the data frame `name` (`obs`, `var`): the length of its index;
    /// `None` when it is not a group with an index (an old layout).
    pub fn frame_len(&self, name: &str) -> Result<Option<usize>> {
        let Ok(g) = self.file.group(name) else {
            return Ok(None);
        };
        let index = attr_string(&g, "_index")
            .map_err(|e| self.err(name, e))?
            .unwrap_or_else(|| "_index".into());
        Ok(g.dataset(&index).ok().map(|d| d.size()))
    }

    /// The error [`Error::Hdf5`] about `object` in this file.
    pub fn err(&self, object: &str, reason: impl Into<String>) -> Error {
        Error::hdf5(&self.path, &absolute(object), reason)
    }

    /// Checks an annotation at `name` has one entry per cell or gene of the matrix.
    pub fn check_len(&self, name: &str, found: usize, expected: usize, what: &str) -> Result<()> {
        if found == expected {
            return Ok(());
        }
        Err(self.err(
            name,
            format!("{found} entries, but the matrix has {expected} {what}"),
        ))
    }

    /// Whether `name` (a path from the root) exists, checking each level so a missing parent is
    /// `false`, not an error.
    pub fn has(&self, name: &str) -> bool {
        let mut at = String::new();
        for part in name.trim_matches('/').split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if !self.file.link_exists(&at) {
                return false;
            }
        }
        true
    }

    /// Whether `name` exists and is a group.
    pub fn is_group(&self, name: &str) -> bool {
        self.has(name) && self.file.group(name).is_ok()
    }

    /// The group `name`.
    pub fn group(&self, name: &str) -> Result<Group> {
        if !self.has(name) {
            return Err(self.err(name, "missing"));
        }
        self.file
            .group(name)
            .map_err(|_| self.err(name, "expected a group, found a dataset"))
    }

    /// The dataset `name`.
    pub fn dataset(&self, name: &str) -> Result<Dataset> {
        if !self.has(name) {
            return Err(self.err(name, "missing"));
        }
        self.file
            .dataset(name)
            .map_err(|_| self.err(name, "expected a dataset, found a group"))
    }

    /// The length of the 1-D dataset `name`.
    pub fn len_1d(&self, name: &str) -> Result<usize> {
        let ds = self.dataset(name)?;
        match ds.shape().as_slice() {
            [n] => Ok(*n),
            shape => Err(self.err(
                name,
                format!("expected a 1-D dataset, found shape {shape:?}"),
            )),
        }
    }

    /// The 1-D integer dataset `name`, or its elements `range`.
    pub fn ints(&self, name: &str, range: Option<Range<usize>>) -> Result<Vec<i64>> {
        let ds = self.dataset(name)?;
        let ty = descriptor(&ds).map_err(|e| self.err(name, e))?;
        use hdf5::types::IntSize;
        match ty {
            // Read in the stored width (no conversion by the library), widened here.
            TypeDescriptor::Integer(IntSize::U4) => {
                let raw: Vec<i32> = self.read_1d(name, &ds, range)?;
                Ok(raw.into_iter().map(i64::from).collect())
            }
            TypeDescriptor::Integer(IntSize::U8) => self.read_1d(name, &ds, range),
            TypeDescriptor::Unsigned(IntSize::U8) => {
                // u64 values above i64::MAX would wrap: read them as they are and check.
                let raw: Vec<u64> = self.read_1d(name, &ds, range)?;
                raw.into_iter()
                    .map(|v| {
                        i64::try_from(v)
                            .map_err(|_| self.err(name, format!("value {v} is too large")))
                    })
                    .collect()
            }
            TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
                self.read_1d(name, &ds, range)
            }
            other => Err(self.err(
                name,
                format!("expected integers, found {}", type_name(&other)),
            )),
        }
    }

    /// The 1-D integer dataset `name` (or its elements `range`) as column indices below `bound`:
    /// an index outside `0..bound` is an error naming its position.
    pub fn indices(
        &self,
        name: &str,
        range: Option<Range<usize>>,
        bound: usize,
    ) -> Result<Vec<u32>> {
        let ds = self.dataset(name)?;
        let ty = descriptor(&ds).map_err(|e| self.err(name, e))?;
        let start = range.as_ref().map_or(0, |r| r.start);
        let out_of_range = |k: usize, j: i64| {
            self.err(
                name,
                format!("index {j} at {} is outside 0..{bound}", start + k),
            )
        };
        if let TypeDescriptor::Integer(hdf5::types::IntSize::U4) = ty {
            // anndata's own choice: read as stored, checked in one pass.
            let raw: Vec<i32> = self.read_1d(name, &ds, range)?;
            let mut out = Vec::with_capacity(raw.len());
            for (k, &j) in raw.iter().enumerate() {
                if j < 0 || j as u64 >= bound as u64 {
                    return Err(out_of_range(k, i64::from(j)));
                }
                out.push(j as u32);
            }
            return Ok(out);
        }
        let raw = self.ints(name, range)?;
        let mut out = Vec::with_capacity(raw.len());
        for (k, &j) in raw.iter().enumerate() {
            if j < 0 || j as u64 >= bound as u64 || j > i64::from(u32::MAX) {
                return Err(out_of_range(k, j));
            }
            out.push(j as u32);
        }
        Ok(out)
    }

    /// The 1-D numeric dataset `name` (integers or floats), or its elements `range`, as `f32`.
    pub fn floats(&self, name: &str, range: Option<Range<usize>>) -> Result<Vec<f32>> {
        let ds = self.dataset(name)?;
        let ty = descriptor(&ds).map_err(|e| self.err(name, e))?;
        match ty {
            TypeDescriptor::Float(hdf5::types::FloatSize::U4) => self.read_1d(name, &ds, range),
            TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) | TypeDescriptor::Float(_) => {
                // Through f64, so a value too large for f32 becomes infinite (and is refused by
                // the caller) instead of being clamped by the library's conversion.
                let raw: Vec<f64> = self.read_1d(name, &ds, range)?;
                Ok(raw.into_iter().map(|v| v as f32).collect())
            }
            TypeDescriptor::Boolean => {
                let raw: Vec<bool> = self.read_1d(name, &ds, range)?;
                Ok(raw.into_iter().map(f32::from).collect())
            }
            other => Err(self.err(
                name,
                format!("expected numbers, found {}", type_name(&other)),
            )),
        }
    }

    fn read_1d<T: H5Type>(
        &self,
        name: &str,
        ds: &Dataset,
        range: Option<Range<usize>>,
    ) -> Result<Vec<T>> {
        let len = match ds.shape().as_slice() {
            [n] => *n,
            shape => {
                return Err(self.err(
                    name,
                    format!("expected a 1-D dataset, found shape {shape:?}"),
                ));
            }
        };
        let read = match range {
            None => ds.read_raw::<T>(),
            Some(r) => {
                if r.start > r.end || r.end > len {
                    return Err(self.err(
                        name,
                        format!(
                            "elements {}..{} requested of a dataset of {len}",
                            r.start, r.end
                        ),
                    ));
                }
                ds.read_slice_1d::<T, _>(r)
                    .map(|a| a.into_raw_vec_and_offset().0)
            }
        };
        read.map_err(|e| self.err(name, format!("cannot read: {}", one_line(&e))))
    }

    /// The 1-D string dataset `name` (fixed or variable length, ASCII or UTF-8).
    pub fn strings(&self, name: &str) -> Result<Vec<String>> {
        let ds = self.dataset(name)?;
        if ds.ndim() != 1 {
            return Err(self.err(
                name,
                format!("expected a 1-D dataset, found shape {:?}", ds.shape()),
            ));
        }
        let ty = descriptor(&ds).map_err(|e| self.err(name, e))?;
        read_strings(&ds, &ty).map_err(|e| self.err(name, e))
    }

    /// The string attribute `attr` of the group or dataset `name`, `None` when it has none.
    pub fn attr_string(&self, name: &str, attr: &str) -> Result<Option<String>> {
        let loc: Location = if self.is_group(name) {
            (*self.group(name)?).clone()
        } else {
            (**self.dataset(name)?).clone()
        };
        attr_string(&loc, attr).map_err(|e| self.err(name, format!("attribute {attr}: {e}")))
    }

    /// The integer array attribute `attr` of `name` (a shape), `None` when it has none.
    pub fn attr_ints(&self, name: &str, attr: &str) -> Result<Option<Vec<i64>>> {
        let loc: Location = if self.is_group(name) {
            (*self.group(name)?).clone()
        } else {
            (**self.dataset(name)?).clone()
        };
        if !loc
            .attr_names()
            .map(|n| n.iter().any(|a| a == attr))
            .unwrap_or(false)
        {
            return Ok(None);
        }
        let read = loc.attr(attr).and_then(|a| {
            let ty = a.dtype()?.to_descriptor()?;
            if !matches!(ty, TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_)) {
                return Err(format!("expected integers, found {}", type_name(&ty)).into());
            }
            a.read_raw::<i64>()
        });
        read.map(Some)
            .map_err(|e| self.err(name, format!("attribute {attr}: {}", one_line(&e))))
    }
}

/// Whether the file at `path` starts with the HDF5 signature at one of the offsets the format
/// allows for it (0, 512, 1024, ...).
pub(crate) fn is_hdf5(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut offset = 0u64;
    while offset + 8 <= len {
        let mut head = [0u8; 8];
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(path, e))?;
        file.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
        if &head == SIGNATURE {
            return Ok(true);
        }
        offset = if offset == 0 { 512 } else { offset * 2 };
    }
    Ok(false)
}

/// The type of a dataset, as a message on failure.
pub(crate) fn descriptor(ds: &Dataset) -> std::result::Result<TypeDescriptor, String> {
    ds.dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| format!("unsupported element type: {}", one_line(&e)))
}

/// A short name of an HDF5 type, for messages.
pub(crate) fn type_name(ty: &TypeDescriptor) -> String {
    match ty {
        TypeDescriptor::Integer(_) => "integers".into(),
        TypeDescriptor::Unsigned(_) => "unsigned integers".into(),
        TypeDescriptor::Float(_) => "floats".into(),
        TypeDescriptor::Boolean => "booleans".into(),
        TypeDescriptor::Enum(_) => "an enumeration".into(),
        TypeDescriptor::Compound(_) => "a compound type".into(),
        TypeDescriptor::FixedArray(..) | TypeDescriptor::VarLenArray(_) => "arrays".into(),
        TypeDescriptor::FixedAscii(_)
        | TypeDescriptor::FixedUnicode(_)
        | TypeDescriptor::VarLenAscii
        | TypeDescriptor::VarLenUnicode => "strings".into(),
        other => format!("{other:?}"),
    }
}

/// The elements of a 1-D string dataset of type `ty`.
pub(crate) fn read_strings(
    ds: &Dataset,
    ty: &TypeDescriptor,
) -> std::result::Result<Vec<String>, String> {
    let err = |e: hdf5::Error| format!("cannot read: {}", one_line(&e));
    let out: Vec<String> = match ty {
        TypeDescriptor::VarLenUnicode => ds
            .read_raw::<VarLenUnicode>()
            .map_err(err)?
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        TypeDescriptor::VarLenAscii => ds
            .read_raw::<VarLenAscii>()
            .map_err(err)?
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        TypeDescriptor::FixedAscii(n) | TypeDescriptor::FixedUnicode(n) => {
            fixed_strings(ds, *n, ty).map_err(err)?
        }
        other => return Err(format!("expected strings, found {}", type_name(other))),
    };
    Ok(out)
}

/// Fixed-length strings of at most `n` bytes, read through the smallest buffer type that holds
/// them (HDF5 converts the width).
fn fixed_strings(ds: &Dataset, n: usize, ty: &TypeDescriptor) -> hdf5::Result<Vec<String>> {
    macro_rules! read {
        ($n:literal) => {
            if matches!(ty, TypeDescriptor::FixedUnicode(_)) {
                ds.read_raw::<FixedUnicode<$n>>()?
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect()
            } else {
                ds.read_raw::<FixedAscii<$n>>()?
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect()
            }
        };
    }
    Ok(match n {
        0..=16 => read!(16),
        17..=64 => read!(64),
        65..=256 => read!(256),
        257..=1024 => read!(1024),
        _ => return Err(format!("fixed strings of {n} bytes are longer than 1024").into()),
    })
}

/// The string attribute `attr` of `loc`, `None` when it has none.
pub(crate) fn attr_string(
    loc: &Location,
    attr: &str,
) -> std::result::Result<Option<String>, String> {
    let names = loc.attr_names().map_err(|e| one_line(&e))?;
    if !names.iter().any(|a| a == attr) {
        return Ok(None);
    }
    let a = loc.attr(attr).map_err(|e| one_line(&e))?;
    let ty = a
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| one_line(&e))?;
    if a.ndim() != 0 && a.size() != 1 {
        return Err(format!("expected one string, found shape {:?}", a.shape()));
    }
    let err = |e: hdf5::Error| one_line(&e);
    let value = match ty {
        TypeDescriptor::VarLenUnicode => a.read_raw::<VarLenUnicode>().map_err(err)?[0]
            .as_str()
            .to_owned(),
        TypeDescriptor::VarLenAscii => a.read_raw::<VarLenAscii>().map_err(err)?[0]
            .as_str()
            .to_owned(),
        TypeDescriptor::FixedAscii(n) if n <= 256 => {
            a.read_raw::<FixedAscii<256>>().map_err(err)?[0]
                .as_str()
                .to_owned()
        }
        TypeDescriptor::FixedUnicode(n) if n <= 256 => {
            a.read_raw::<FixedUnicode<256>>().map_err(err)?[0]
                .as_str()
                .to_owned()
        }
        other => return Err(format!("expected a string, found {}", type_name(&other))),
    };
    Ok(Some(value))
}

/// The string-array attribute `attr` of `loc`; empty when it has none or it holds no strings
/// (h5py writes an empty `column-order` as an empty array of floats).
pub(crate) fn attr_strings(loc: &Location, attr: &str) -> std::result::Result<Vec<String>, String> {
    let names = loc.attr_names().map_err(|e| one_line(&e))?;
    if !names.iter().any(|a| a == attr) {
        return Ok(Vec::new());
    }
    let a = loc.attr(attr).map_err(|e| one_line(&e))?;
    let ty = a
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| one_line(&e))?;
    let err = |e: hdf5::Error| one_line(&e);
    Ok(match ty {
        TypeDescriptor::VarLenUnicode => a
            .read_raw::<VarLenUnicode>()
            .map_err(err)?
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        TypeDescriptor::VarLenAscii => a
            .read_raw::<VarLenAscii>()
            .map_err(err)?
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) if a.size() == 1 => {
            attr_string(loc, attr)?.into_iter().collect()
        }
        _ => Vec::new(),
    })
}

/// `/name` for a path given with or without the leading slash.
fn absolute(name: &str) -> String {
    if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("/{name}")
    }
}

/// The library's message on one line (it can span several).
pub(crate) fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reading one field of a compound dataset by name: the pre-0.7 AnnData layout keeps `obs` and
/// `var` as one compound (structured) dataset with a field per column.
#[allow(unsafe_code)]
pub(crate) mod field {
    use std::cell::RefCell;

    use hdf5::types::{CompoundField, CompoundType, TypeDescriptor};
    use hdf5::{Dataset, H5Type};

    thread_local! {
        /// The name of the field the next read of a [`Field`] selects (the type descriptor is
        /// a function without arguments, so the name travels this way, on the reading thread).
        static NAME: RefCell<String> = const { RefCell::new(String::new()) };
    }

    /// A compound of one field, `T`, whose name is set by [`read`].
    #[repr(transparent)]
    struct Field<T>(T);

    // SAFETY: `Field<T>` is `repr(transparent)` over `T`, so a compound of one field of `T` at
    // offset 0 with the size of `T` describes its memory exactly; HDF5 converts the file's
    // compound to it by field name.
    unsafe impl<T: H5Type> H5Type for Field<T> {
        fn type_descriptor() -> TypeDescriptor {
            let name = NAME.with(|n| n.borrow().clone());
            TypeDescriptor::Compound(CompoundType {
                fields: vec![CompoundField {
                    name,
                    ty: T::type_descriptor(),
                    offset: 0,
                    index: 0,
                }],
                size: std::mem::size_of::<T>(),
            })
        }
    }

    /// The field `name` of every element of the compound dataset `ds`.
    pub fn read<T: H5Type>(ds: &Dataset, name: &str) -> hdf5::Result<Vec<T>> {
        NAME.with(|n| *n.borrow_mut() = name.to_owned());
        let values = ds.read_raw::<Field<T>>()?;
        Ok(values.into_iter().map(|f| f.0).collect())
    }
}

/// Marks the descriptor of `file` close-on-exec. HDF5 opens files without it, so a process
/// started while the file is open (a test running `scae` or Python beside another test, a
/// library user's own child) would inherit the descriptor, and with it HDF5's lock on the
/// file, for as long as that process lives: a later open of the file, even to read it, then
/// fails with "unable to lock file".
#[allow(unsafe_code)]
pub(crate) fn close_on_exec(file: &File) {
    let mut handle: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: the id is an open file owned by `file`, which outlives the call; the library
    // writes a pointer to its driver's handle into `handle`, which for the default (sec2)
    // driver is the `int` descriptor it keeps for as long as the file is open. The library
    // lock is held, as for every other HDF5 call the crate makes.
    let status = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5f::H5Fget_vfd_handle(file.id(), hdf5_sys::h5p::H5P_DEFAULT, &mut handle)
    });
    if status < 0 || handle.is_null() {
        return;
    }
    // SAFETY: `handle` points to the sec2 driver's open descriptor (above: scae-io opens and
    // creates every file with the default file access, whose driver is sec2); `fcntl` with
    // `F_SETFD` only changes that descriptor's flags.
    unsafe {
        let fd = *handle.cast::<libc::c_int>();
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}
