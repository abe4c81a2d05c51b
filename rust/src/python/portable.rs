//! Bindings of the portable float64 math (`crate::portable`).
//!
//! The values must be a float64 numpy array of any shape and layout; they are copied into a
//! Rust buffer (C order; other layouts and misaligned arrays through `numpy.require`), the
//! function runs on it with the GIL released, and the buffer becomes the new array, reshaped
//! like the input. Every bad argument is a `ValueError`.

use numpy::{
    Element, IntoPyArray, PyArray1, PyArray3, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::try_with_capacity;
use crate::portable::{self, PortableFn};
use crate::portable_layers;

fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// A numpy array of element type `T` as a C-contiguous, aligned typed array (the array itself
/// when it is one; otherwise a copy by `numpy.require`); `expected` says what was wanted.
fn typed_array<'py, T: Element>(
    values: &Bound<'py, PyAny>,
    expected: &str,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let py = values.py();
    let array = values.cast::<PyUntypedArray>().map_err(|_| {
        let name = values
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".to_string());
        value_error(format!("{expected}, got {name}"))
    })?;
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&T::get_dtype(py)) {
        return Err(value_error(format!(
            "{expected} (native byte order), got dtype {}",
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
            .map_err(|_| value_error(expected.to_string()))?
    };
    array
        .cast_into::<PyArrayDyn<T>>()
        .map_err(|_| value_error(expected.to_string()))
}

/// Whether `values` is a numpy array of float32 (native byte order).
fn is_float32(values: &Bound<'_, PyAny>) -> bool {
    values
        .cast::<PyUntypedArray>()
        .is_ok_and(|a| a.dtype().is_equiv_to(&f32::get_dtype(values.py())))
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
const FLOAT: &str = "values must be a float64 or float32 numpy array";

/// The elements of a numpy array of element type `T` in C order, as a new vector, and the
/// array's shape; `expected` says what was wanted.
fn typed_values<T: Element + Copy>(
    values: &Bound<'_, PyAny>,
    expected: &str,
) -> PyResult<(Vec<T>, Vec<usize>)> {
    let array = typed_array::<T>(values, expected)?;
    let shape = array.shape().to_vec();
    let ro = readonly(&array)?;
    let slice = ro.as_slice()?;
    let mut data = try_with_capacity(slice.len(), "the values")?;
    data.extend_from_slice(slice);
    Ok((data, shape))
}

fn float64_values(values: &Bound<'_, PyAny>) -> PyResult<(Vec<f64>, Vec<usize>)> {
    typed_values(values, FLOAT64)
}

fn float32_values(values: &Bound<'_, PyAny>) -> PyResult<(Vec<f32>, Vec<usize>)> {
    typed_values(values, "values must be a float32 numpy array")
}

fn readonly<'py, T: Element>(
    array: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    array
        .try_readonly()
        .map_err(|e| value_error(format!("values are being written elsewhere: {e}")))
}

/// portable_math(name, values)
/// --
///
/// An elementwise function of a float64 array, bit-identical on every CPU and platform
/// (IEEE-754 basic operations only; see the `ardm_core::portable` docs): a new float64 array
/// of the same shape. A float32 array gives a float32 array: each value widened to float64,
/// the function computed there and rounded once to float32 (the same bits as converting the
/// array to float64, calling this and converting back, with two passes less). name is one of exp, log, log1p, expm1, sigmoid, log_sigmoid, tanh, erf,
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
) -> PyResult<Bound<'py, PyAny>> {
    let func = PortableFn::from_name(name)?;
    if is_float32(values) {
        let (mut data, shape) = float32_values(values)?;
        py.detach(|| portable::apply_f32(func, &mut data));
        return Ok(data.into_pyarray(py).reshape(shape)?.into_any());
    }
    let (mut data, shape) = typed_values::<f64>(values, FLOAT)?;
    py.detach(|| portable::apply(func, &mut data));
    Ok(data.into_pyarray(py).reshape(shape)?.into_any())
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
/// A float32 array is widened to float64 (exactly) on the way, the same as converting it first.
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
    if is_float32(values) {
        grid_of::<f32>(py, values, bits)
    } else {
        grid_of::<f64>(py, values, bits)
    }
}

/// `portable_grid` of an array of element type `T` (float64, or float32 widened exactly).
fn grid_of<'py, T: Element + Copy + Into<f64>>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    bits: u32,
) -> PyResult<Grid<'py>> {
    let array = typed_array::<T>(values, FLOAT)?;
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
    // values, widened) before any reference to its elements is made; nothing else refers to
    // the new arrays until they are returned, so the mutable slices are the only access.
    let (data, sc) = unsafe {
        let dst = ints.data();
        for (i, &v) in src.iter().enumerate() {
            dst.add(i).write(v.into());
        }
        (ints.as_slice_mut()?, scales.as_slice_mut()?)
    };
    drop(ro);
    py.detach(|| portable::grid_in_place(data, sc, outer, reduce, inner, bits))?;
    Ok((ints, scales))
}

// ---- fused layers, in place (`crate::portable_layers`) -------------------------------------------

/// A float64 array that the fused layers write in place: it must be C-contiguous, aligned and
/// writeable (a copy would lose the writes), with `ndim` dimensions.
fn writable<'py>(
    values: &Bound<'py, PyAny>,
    what: &str,
    ndim: usize,
) -> PyResult<PyReadwriteArrayDyn<'py, f64>> {
    let array = values
        .cast::<PyArrayDyn<f64>>()
        .map_err(|_| value_error(format!("{what} must be a float64 numpy array")))?;
    if !array.is_c_contiguous() || !array.is_aligned() {
        return Err(value_error(format!(
            "{what} must be C-contiguous and aligned (it is written in place)"
        )));
    }
    if array.ndim() != ndim {
        return Err(value_error(format!(
            "{what} must have {ndim} dimensions, got shape {}",
            shape_str(array.shape())
        )));
    }
    array
        .try_readwrite()
        .map_err(|e| value_error(format!("{what} cannot be written in place: {e}")))
}

/// The elements of an optional float64 array (any shape, C order), copied.
fn optional_values(values: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<f64>>> {
    match values {
        Some(v) if !v.is_none() => Ok(Some(float64_values(v)?.0)),
        _ => Ok(None),
    }
}

fn bits_arg(bits: &Bound<'_, PyAny>, what: &str) -> PyResult<u32> {
    match bits.extract::<i64>() {
        Ok(b @ 1..=52) => Ok(b as u32),
        _ => Err(value_error(format!(
            "{what} must be an integer in 1..52, got {}",
            bits.repr()?
        ))),
    }
}

/// portable_rescale(y, row_scales, col_scales, multiplier=None, bias=None)
/// --
///
/// Scales an exact product back, in place: y (float64, shape (groups, rows, cols),
/// C-contiguous and writeable) becomes ((y / row_scales) / col_scales) * multiplier + bias,
/// the product and the sum only where given, the same bits as torch computes that sequence.
/// row_scales has groups * rows elements, col_scales cols (shared by the groups) or
/// groups * cols, bias cols. See `ardm_core::portable_layers::rescale`.
///
/// >>> import numpy as np
/// >>> from ardm._core import portable_rescale
/// >>> y = np.array([[[8.0, 12.0], [-4.0, 2.0]]])
/// >>> portable_rescale(y, np.array([2.0, 4.0]), np.array([1.0, 2.0]), bias=np.array([0.5, 0.0]))
/// >>> y.tolist()
/// [[[4.5, 3.0], [-0.5, 0.25]]]
#[pyfunction]
#[pyo3(signature = (y, row_scales, col_scales, multiplier=None, bias=None))]
fn portable_rescale(
    py: Python<'_>,
    y: &Bound<'_, PyAny>,
    row_scales: &Bound<'_, PyAny>,
    col_scales: &Bound<'_, PyAny>,
    multiplier: Option<f64>,
    bias: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let mut y = writable(y, "y", 3)?;
    let &[groups, rows, cols] = y.shape() else {
        unreachable!("checked to have 3 dimensions")
    };
    let (row_scales, _) = float64_values(row_scales)?;
    let (col_scales, _) = float64_values(col_scales)?;
    let bias = optional_values(bias)?;
    let data = y.as_slice_mut()?;
    py.detach(|| {
        portable_layers::rescale(
            data,
            groups,
            rows,
            cols,
            &row_scales,
            &col_scales,
            multiplier,
            bias.as_deref(),
        )
    })?;
    Ok(())
}

/// portable_softmax(x, sum_bits, grid_bits=None)
/// --
///
/// Softmax of every row of x (float64, shape (rows, cols), C-contiguous and writeable), in
/// place, the same bits as `ardm.coding.portable` computes it (portable exp, the sum exact on
/// a grid of sum_bits bits). With grid_bits, the probabilities are then rounded onto integer
/// grids of grid_bits bits (as portable_grid does, one scale per row): x receives the
/// integers and the scales come back as a new array of shape (rows,); otherwise None. See
/// `ardm_core::portable_layers::softmax`.
///
/// >>> import numpy as np
/// >>> from ardm._core import portable_softmax
/// >>> x = np.array([[0.0, 0.0, -np.inf, 0.0]])
/// >>> portable_softmax(x, 50), x.round(6).tolist()
/// (None, [[0.333333, 0.333333, 0.0, 0.333333]])
#[pyfunction]
#[pyo3(signature = (x, sum_bits, grid_bits=None))]
fn portable_softmax<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    sum_bits: &Bound<'py, PyAny>,
    grid_bits: Option<&Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyArray1<f64>>>> {
    let sum_bits = bits_arg(sum_bits, "sum_bits")?;
    let grid_bits = match grid_bits {
        Some(b) if !b.is_none() => Some(bits_arg(b, "grid_bits")?),
        _ => None,
    };
    let mut x = writable(x, "x", 2)?;
    let &[rows, cols] = x.shape() else {
        unreachable!("checked to have 2 dimensions")
    };
    let mut scales = vec![0.0; if grid_bits.is_some() { rows } else { 0 }];
    let data = x.as_slice_mut()?;
    py.detach(|| portable_layers::softmax(data, cols, sum_bits, grid_bits, &mut scales))?;
    Ok(grid_bits.map(|_| scales.into_pyarray(py)))
}

/// portable_normalize(x, eps, sum_bits, weight=None, bias=None)
/// --
///
/// The normalization of layer and group norms over every row of x (float64, shape
/// (rows, cols), C-contiguous and writeable), in place: (x - mean) / sqrt(var + eps) with the
/// mean and the variance summed exactly on grids of sum_bits bits, then * weight and + bias
/// (cols elements each) where given; the same bits as `ardm.coding.portable` computes it in
/// torch. See `ardm_core::portable_layers::normalize`.
///
/// >>> import numpy as np
/// >>> from ardm._core import portable_normalize
/// >>> x = np.array([[1.0, 3.0]])
/// >>> portable_normalize(x, 0.0, 51, bias=np.array([10.0, 10.0]))
/// >>> x.tolist()
/// [[9.0, 11.0]]
#[pyfunction]
#[pyo3(signature = (x, eps, sum_bits, weight=None, bias=None))]
fn portable_normalize(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    eps: f64,
    sum_bits: &Bound<'_, PyAny>,
    weight: Option<&Bound<'_, PyAny>>,
    bias: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let sum_bits = bits_arg(sum_bits, "sum_bits")?;
    let mut x = writable(x, "x", 2)?;
    let cols = x.shape()[1];
    let weight = optional_values(weight)?;
    let bias = optional_values(bias)?;
    let data = x.as_slice_mut()?;
    py.detach(|| {
        portable_layers::normalize(
            data,
            cols,
            eps,
            sum_bits,
            weight.as_deref(),
            bias.as_deref(),
        )
    })?;
    Ok(())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(portable_math, m)?)?;
    m.add_function(wrap_pyfunction!(portable_grid, m)?)?;
    m.add_function(wrap_pyfunction!(portable_rescale, m)?)?;
    m.add_function(wrap_pyfunction!(portable_softmax, m)?)?;
    m.add_function(wrap_pyfunction!(portable_normalize, m)?)?;
    Ok(())
}
