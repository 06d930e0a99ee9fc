//! Carrying an AnnData element from one HDF5 file into another, for the `.h5ad` writer: whole
//! (HDF5's own object copy, so every encoding, attribute and nested entry comes across as it
//! was), or cut to the rows of some cells or genes. Cutting knows every encoding anndata gives an
//! element with one row per cell or gene: arrays of numbers, booleans and strings (any number of
//! dimensions, cut along the first), categoricals, nullable arrays, data frames and CSR
//! matrices. Anything else is reported as not carried, with the reason, and left out.

use std::ffi::CString;
use std::str::FromStr;

use hdf5::types::{IntSize, TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::{Dataset, Group, H5Type, Location};
use ndarray::{ArrayD, Axis};

use crate::h5::{attr_string, one_line, read_strings, type_name};

/// Why an element was not carried (or could not be written).
pub(crate) type Reason = String;

/// Copies `src/name` to `dst/name` whole, with its attributes and everything under it.
#[allow(unsafe_code)]
pub(crate) fn copy_whole(src: &Group, name: &str, dst: &Group) -> Result<(), Reason> {
    let c_name = CString::new(name).map_err(|_| format!("{name:?} holds a NUL byte"))?;
    // SAFETY: both ids are open groups owned by `src` and `dst`, which outlive the call; the
    // names are NUL-terminated; `H5P_DEFAULT` asks for the default copy and link properties.
    // The library lock is held, as for every other HDF5 call the crate makes.
    let status = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5o::H5Ocopy(
            src.id(),
            c_name.as_ptr(),
            dst.id(),
            c_name.as_ptr(),
            hdf5_sys::h5p::H5P_DEFAULT,
            hdf5_sys::h5p::H5P_DEFAULT,
        )
    });
    if status < 0 {
        return Err("HDF5 could not copy it".into());
    }
    Ok(())
}

/// Copies the rows `rows` (in that order) of `src/name`, an element with one row per cell or
/// gene, to `dst/name`. `Ok(Some(reason))` when its encoding cannot be cut by rows (nothing is
/// written).
pub(crate) fn copy_rows(
    src: &Group,
    name: &str,
    dst: &Group,
    rows: &[usize],
) -> Result<Option<Reason>, Reason> {
    if let Ok(ds) = src.dataset(name) {
        return Ok(take_dataset(&ds, dst, name, rows)?.err());
    }
    let g = src.group(name).map_err(|e| one_line(&e))?;
    let encoding = attr_string(&g, "encoding-type")?.unwrap_or_default();
    let fields: &[&str] = match encoding.as_str() {
        "categorical" => &["codes"],
        "nullable-integer" | "nullable-boolean" | "nullable-string-array" => &["values", "mask"],
        "dataframe" => return data_frame(&g, name, dst, rows),
        "csr_matrix" => return csr(&g, name, dst, rows).map(|()| None),
        "" => return Ok(Some("a group without an anndata encoding".into())),
        other => return Ok(Some(format!("{other} cannot be cut by rows"))),
    };
    let out = dst.create_group(name).map_err(|e| one_line(&e))?;
    copy_attrs(&g, &out)?;
    for member in g.member_names().map_err(|e| one_line(&e))? {
        if fields.contains(&member.as_str()) {
            let ds = g.dataset(&member).map_err(|e| one_line(&e))?;
            if let Err(reason) = take_dataset(&ds, &out, &member, rows)? {
                return Err(format!("{member}: {reason}"));
            }
        } else {
            copy_whole(&g, &member, &out)?;
        }
    }
    Ok(None)
}

/// A data frame (an `obsm` entry, say): its index and every column, each cut by rows.
fn data_frame(
    g: &Group,
    name: &str,
    dst: &Group,
    rows: &[usize],
) -> Result<Option<Reason>, Reason> {
    let members = g.member_names().map_err(|e| one_line(&e))?;
    let out = dst.create_group(name).map_err(|e| one_line(&e))?;
    copy_attrs(g, &out)?;
    for member in members {
        if let Some(reason) = copy_rows(g, &member, &out, rows)? {
            // A frame is carried whole or not at all.
            dst.unlink(name).map_err(|e| one_line(&e))?;
            return Ok(Some(format!("column {member}: {reason}")));
        }
    }
    Ok(None)
}

/// A CSR matrix cut to the rows `rows`: its row pointers rebuilt, its column indices and values
/// gathered in their own types, `shape` set to the new row count.
fn csr(g: &Group, name: &str, dst: &Group, rows: &[usize]) -> Result<(), Reason> {
    let err = |e: hdf5::Error| one_line(&e);
    let indptr: Vec<i64> = g
        .dataset("indptr")
        .and_then(|d| d.read_raw::<i64>())
        .map_err(err)?;
    let mut positions = Vec::new();
    let mut new_indptr = Vec::with_capacity(rows.len() + 1);
    new_indptr.push(0i64);
    for &r in rows {
        let (start, end) = match (indptr.get(r), indptr.get(r + 1)) {
            (Some(&s), Some(&e)) if 0 <= s && s <= e => (s as usize, e as usize),
            _ => return Err(format!("indptr has no row {r}")),
        };
        positions.extend(start..end);
        new_indptr.push(positions.len() as i64);
    }
    let out = dst.create_group(name).map_err(err)?;
    copy_attrs(g, &out)?;
    let cols = g
        .attr("shape")
        .and_then(|a| a.read_raw::<i64>())
        .map_err(err)?
        .get(1)
        .copied()
        .ok_or("shape has no column count")?;
    out.delete_attr("shape").map_err(err)?;
    out.new_attr_builder()
        .with_data(&[rows.len() as i64, cols])
        .create("shape")
        .map_err(err)?;
    out.new_dataset_builder()
        .with_data(&new_indptr)
        .create("indptr")
        .map_err(err)?;
    for member in ["indices", "data"] {
        let ds = g.dataset(member).map_err(err)?;
        if let Err(reason) = take_dataset(&ds, &out, member, &positions)? {
            return Err(format!("{member}: {reason}"));
        }
    }
    Ok(())
}

/// Reads `ds` in its own element type, keeps the rows `rows` (a scalar is kept as it is), writes
/// it as `dst/name` with `ds`'s attributes. `Ok(Err(reason))` for an element type that cannot be
/// carried; `Err` when HDF5 fails.
fn take_dataset(
    ds: &Dataset,
    dst: &Group,
    name: &str,
    rows: &[usize],
) -> Result<Result<(), Reason>, Reason> {
    let ty = crate::h5::descriptor(ds)?;
    macro_rules! take {
        ($t:ty) => {
            take::<$t>(ds, dst, name, rows).map_err(|e| one_line(&e))?
        };
    }
    let out = match ty {
        TypeDescriptor::Integer(size) => match size {
            IntSize::U1 => take!(i8),
            IntSize::U2 => take!(i16),
            IntSize::U4 => take!(i32),
            IntSize::U8 => take!(i64),
        },
        TypeDescriptor::Unsigned(size) => match size {
            IntSize::U1 => take!(u8),
            IntSize::U2 => take!(u16),
            IntSize::U4 => take!(u32),
            IntSize::U8 => take!(u64),
        },
        TypeDescriptor::Float(hdf5::types::FloatSize::U4) => take!(f32),
        TypeDescriptor::Float(hdf5::types::FloatSize::U8) => take!(f64),
        TypeDescriptor::Boolean => take!(bool),
        TypeDescriptor::VarLenUnicode => take!(VarLenUnicode),
        TypeDescriptor::VarLenAscii => take!(VarLenAscii),
        TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) if ds.ndim() == 1 => {
            // Fixed-width strings come across as variable-length ones (anndata reads both).
            let all = read_strings(ds, &ty)?;
            let kept = rows
                .iter()
                .map(|&r| {
                    all.get(r)
                        .ok_or_else(|| format!("has no row {r}"))
                        .and_then(|s| VarLenUnicode::from_str(s).map_err(|e| e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            dst.new_dataset_builder()
                .with_data(&kept)
                .create(name)
                .map_err(|e| one_line(&e))?
        }
        other => return Ok(Err(format!("{} cannot be carried", type_name(&other)))),
    };
    copy_attrs(ds, &out)?;
    Ok(Ok(()))
}

fn take<T: H5Type + Clone>(
    ds: &Dataset,
    dst: &Group,
    name: &str,
    rows: &[usize],
) -> hdf5::Result<Dataset> {
    let a: ArrayD<T> = ds.read_dyn()?;
    let a = if a.ndim() == 0 {
        a
    } else {
        if let Some(&r) = rows.iter().find(|&&r| r >= a.len_of(Axis(0))) {
            return Err(format!("has {} rows, not row {r}", a.len_of(Axis(0))).into());
        }
        a.select(Axis(0), rows)
    };
    dst.new_dataset_builder().with_data(&a).create(name)
}

/// Copies every attribute of `src` to `dst`, each in its own type and shape.
pub(crate) fn copy_attrs(src: &Location, dst: &Location) -> Result<(), Reason> {
    for name in src.attr_names().map_err(|e| one_line(&e))? {
        let a = src.attr(&name).map_err(|e| one_line(&e))?;
        let ty = a
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(|e| format!("attribute {name}: {}", one_line(&e)))?;
        macro_rules! copy {
            ($t:ty) => {{
                let v: ArrayD<$t> = a.read_dyn().map_err(|e| one_line(&e))?;
                dst.new_attr_builder()
                    .with_data(&v)
                    .create(name.as_str())
                    .map_err(|e| one_line(&e))?;
            }};
        }
        match ty {
            TypeDescriptor::Integer(IntSize::U1) => copy!(i8),
            TypeDescriptor::Integer(IntSize::U2) => copy!(i16),
            TypeDescriptor::Integer(IntSize::U4) => copy!(i32),
            TypeDescriptor::Integer(IntSize::U8) => copy!(i64),
            TypeDescriptor::Unsigned(IntSize::U1) => copy!(u8),
            TypeDescriptor::Unsigned(IntSize::U2) => copy!(u16),
            TypeDescriptor::Unsigned(IntSize::U4) => copy!(u32),
            TypeDescriptor::Unsigned(IntSize::U8) => copy!(u64),
            TypeDescriptor::Float(hdf5::types::FloatSize::U4) => copy!(f32),
            TypeDescriptor::Float(hdf5::types::FloatSize::U8) => copy!(f64),
            TypeDescriptor::Boolean => copy!(bool),
            TypeDescriptor::VarLenUnicode => copy!(VarLenUnicode),
            TypeDescriptor::VarLenAscii => copy!(VarLenAscii),
            TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) => {
                let value = attr_string(src, &name)?.unwrap_or_default();
                let value = VarLenUnicode::from_str(&value).map_err(|e| e.to_string())?;
                dst.new_attr::<VarLenUnicode>()
                    .create(name.as_str())
                    .and_then(|a| a.write_scalar(&value))
                    .map_err(|e| one_line(&e))?;
            }
            other => {
                return Err(format!(
                    "attribute {name}: {} cannot be carried",
                    type_name(&other)
                ));
            }
        }
    }
    Ok(())
}
