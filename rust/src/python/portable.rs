//! Bindings of the portable float64 math (`crate::portable`).
//!
//! The values must be a float64 numpy array of any shape and layout; they are copied into a
//! Rust buffer (C order; other layouts and misaligned arrays through `numpy.require`), the
//! function runs on it with the GIL released, and the buffer becomes the new array, reshaped
//! like the input. Every bad argument is a `ValueError`.

use numpy::{
    Element, IntoPyArray, PyArray3, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::try_with_capacity;
use crate::portable::{self, PortableFn};

fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// A float64 array as a C-contiguous, aligned typed array (the array itself when it is one;
/// otherwise a copy by `numpy.require`).
fn float64_array<'py>(values: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
    let py = values.py();
    let array = values.cast::<PyUntypedArray>().map_err(|_| {
        let name = values
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".to_string());
        value_error(format!("{FLOAT64}, got {name}"))
    })?;
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&f64::get_dtype(py)) {
        return Err(value_error(format!(
            "{FLOAT64} (native byte order), got dtype {}",
            dtype.str()?
        )));
    }
    // `as_slice` needs C order (it also accepts Fortran order, in memory order) and aligned
    // data: anything else is first copied by numpy into an aligned C-order array.
    let array = if array.is_c_contiguous() && array.is_aligned() {
        array.clone()
    } else {
        py.import("numpy")?
            .call_method1("require", (array, py.None(), "CA"))?
            .cast_into::<PyUntypedArray>()
            .map_err(|_| value_error(FLOAT64))?
    };
    array
        .cast_into::<PyArrayDyn<f64>>()
        .map_err(|_| value_error(FLOAT64))
}

/// A shape as Python writes it: `(2, 3)`, `(4,)`, `()`.
fn shape_str(shape: &[usize]) -> String {
    match shape {
        [d] => format!("({d},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        }
    }
}

const FLOAT64: &str = "values must be a float64 numpy array";

/// The elements of a float64 array in C order, as a new vector, and the array's shape.
fn float64_values(values: &Bound<'_, PyAny>) -> PyResult<(Vec<f64>, Vec<usize>)> {
    let array = float64_array(values)?;
    let shape = array.shape().to_vec();
    let ro = readonly(&array)?;
    let slice = ro.as_slice()?;
    let mut data = try_with_capacity(slice.len(), "the values")?;
    data.extend_from_slice(slice);
    Ok((data, shape))
}

fn readonly<'py>(array: &Bound<'py, PyArrayDyn<f64>>) -> PyResult<PyReadonlyArrayDyn<'py, f64>> {
    array
        .try_readonly()
        .map_err(|e| value_error(format!("values are being written elsewhere: {e}")))
}

/// portable_math(name, values)
/// --
///
/// An elementwise function of a float64 array, bit-identical on every CPU and platform
/// (IEEE-754 basic operations only; see the `ardm_core::portable` docs): a new float64 array
/// of the same shape. name is one of exp, log, log1p, expm1, sigmoid, log_sigmoid, tanh, erf,
/// sin, cos, gelu (torch's default GELU), gelu_tanh (approximate="tanh") and silu. Results are
/// within a few ulps of the exact values (sin and cos for |x| < 1.6e6); every NaN output is
/// the canonical quiet NaN. The values may have any shape and layout (a non-contiguous array
/// is copied); the work runs with the GIL released.
///
/// >>> import numpy as np
/// >>> from ardm._core import portable_math
/// >>> portable_math("exp", np.array([0.0, 1.0])).tolist()
/// [1.0, 2.718281828459045]
/// >>> y = portable_math("gelu", np.array([[-1.0], [0.0], [3.0]]))
/// >>> y.shape, y.ravel().tolist()
/// ((3, 1), [-0.15865525393145702, 0.0, 2.99595030590511])
#[pyfunction]
#[pyo3(text_signature = "(name, values)")]
fn portable_math<'py>(
    py: Python<'py>,
    name: &str,
    values: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
    let func = PortableFn::from_name(name)?;
    let (mut data, shape) = float64_values(values)?;
    py.detach(|| portable::apply(func, &mut data));
    data.into_pyarray(py).reshape(shape)
}

/// The ints and the scales of `portable_grid`.
type Grid<'py> = (Bound<'py, PyArray3<f64>>, Bound<'py, PyArray3<f64>>);

/// portable_grid(values, bits)
/// --
///
/// Rounds float64 values onto integer grids with power-of-two scales, bit-identical on every
/// CPU (see `ardm_core::portable::grid`). values has shape (outer, reduce, inner); every slice
/// values[o, :, i] gets the scale s = 2^(bits + 1022 - E), E the biased exponent field of its
/// largest magnitude (NaNs ignored), clamped to the normal powers of two (2^1023 for a zero
/// slice), so that |values * s| < 2^bits. Returns (ints, scales): ints = round(values * s)
/// (ties to even, |ints| <= 2^bits, the shape of values) and scales of shape (outer, 1, inner),
/// both new float64 arrays. The one exception to the bound, from the clamp: bits = 1 and a
/// largest magnitude >= 2^1023 give |ints| <= 4. Equal bit for bit to torch's
/// `largest = x.abs().amax(dim=1, keepdim=True); scale = ((2045 + bits - (largest.view(int64)
/// >> 52)).clamp(1, 2046) << 52).view(float64); ints = (x * scale).round()` for inputs without
/// NaN; a NaN is the canonical NaN in ints. bits must be an integer in 1..52. The values may
/// have any layout (a non-contiguous array is copied); the work runs with the GIL released.
///
/// >>> import numpy as np
/// >>> from ardm._core import portable_grid
/// >>> ints, scales = portable_grid(np.array([0.625, -3.0, 1.0]).reshape(1, 3, 1), 4)
/// >>> ints.ravel().tolist(), scales.shape, scales.ravel().tolist()
/// ([2.0, -12.0, 4.0], (1, 1, 1), [4.0])
/// >>> ints, scales = portable_grid(np.array([[[1.0, 0.0], [-0.3, 0.0]]]), 8)
/// >>> ints.tolist(), scales.tolist() == [[[128.0, 2.0**1023]]]
/// ([[[128.0, 0.0], [-38.0, 0.0]]], True)
#[pyfunction]
#[pyo3(text_signature = "(values, bits)")]
fn portable_grid<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    bits: &Bound<'py, PyAny>,
) -> PyResult<Grid<'py>> {
    let bits = match bits.extract::<i64>() {
        Ok(b @ 1..=52) => b as u32,
        _ => {
            return Err(value_error(format!(
                "bits must be an integer in 1..52, got {}",
                bits.repr()?
            )))
        }
    };
    let array = float64_array(values)?;
    let &[outer, reduce, inner] = array.shape() else {
        return Err(value_error(format!(
            "values must have 3 dimensions (outer, reduce, inner), got shape {}",
            shape_str(array.shape())
        )));
    };
    let ro = readonly(&array)?;
    let src = ro.as_slice()?;
    // SAFETY: an uninitialized array, written in full below before anything reads it.
    let ints = unsafe { PyArray3::<f64>::new(py, [outer, reduce, inner], false) };
    let scales = PyArray3::<f64>::zeros(py, [outer, 1, inner], false);
    // SAFETY: `ints` is a new C-order array of `src.len()` elements, fully written here (the
    // copy of the values) before any reference to its elements is made; nothing else refers to
    // the new arrays until they are returned, so the mutable slices are the only access.
    let (data, sc) = unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), ints.data(), src.len());
        (ints.as_slice_mut()?, scales.as_slice_mut()?)
    };
    drop(ro);
    py.detach(|| portable::grid_in_place(data, sc, outer, reduce, inner, bits))?;
    Ok((ints, scales))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(portable_math, m)?)?;
    m.add_function(wrap_pyfunction!(portable_grid, m)?)?;
    Ok(())
}
