//! Bindings of the quantizer (`crate::quantize`) and the rANS coder (`crate::ans`).
//!
//! Symbols may be any integer array-like (numpy integer dtypes of any width, lists); logits and
//! probabilities must be C-contiguous float32 numpy arrays, borrowed without a copy while the
//! coding runs with the GIL released. Every bad argument is a `ValueError` naming the problem.

use numpy::{
    Element, IntoPyArray, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString};

use super::policy::count_arg;
use crate::ans::{check_num_streams, AnsBatch, AnsCoder, MAX_STREAMS, STATE_LOW};
use crate::quantize::{self, Input};

fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

fn shape_str(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("({})", parts.join(", "))
}

/// Integer symbols of any integer dtype as `numpy.asarray(obj)` with `ndim` dimensions, and
/// its shape. Nothing is copied yet: the caller checks the shape against the logits first, so
/// that a broadcast array of a huge shape is an error, not a huge copy.
fn symbols_arg<'py>(
    obj: &Bound<'py, PyAny>,
    ndim: usize,
) -> PyResult<(Bound<'py, PyUntypedArray>, Vec<usize>)> {
    let py = obj.py();
    let what = if ndim == 1 {
        "a 1-D integer array (N,)"
    } else {
        "a 2-D integer array (B, N)"
    };
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(value_error(format!(
            "symbols must be {what}, got {}",
            type_name(obj)
        )));
    }
    let array = py
        .import("numpy")?
        .call_method1("asarray", (obj,))
        .map_err(|e| value_error(format!("symbols must be {what}: {e}")))?;
    let array = array
        .cast_into::<PyUntypedArray>()
        .map_err(|_| value_error(format!("symbols must be {what}")))?;
    let shape = array.shape().to_vec();
    if shape.len() != ndim {
        return Err(value_error(format!(
            "symbols must be {what}, got shape {}",
            shape_str(&shape)
        )));
    }
    Ok((array, shape))
}

/// The values of a checked symbols array as flat i64, copied into an aligned C-contiguous
/// buffer. Values beyond the i64 range saturate (and are then out of range for the coder).
fn symbol_values(array: &Bound<'_, PyUntypedArray>) -> PyResult<Vec<i64>> {
    if array.len() == 0 {
        return Ok(Vec::new());
    }
    let numpy = array.py().import("numpy")?;
    // `require(..., "CA")`, unlike `ascontiguousarray`, also copies a misaligned array.
    let as_dtype = |name: &str| numpy.call_method1("require", (array, numpy.getattr(name)?, "CA"));
    let values = match array.dtype().kind() {
        b'i' => {
            let a = as_dtype("int64")?
                .cast_into::<PyArrayDyn<i64>>()
                .map_err(|_| value_error("symbols could not be read as int64"))?;
            let ro = a.readonly();
            ro.as_slice()?.to_vec()
        }
        b'u' => {
            let a = as_dtype("uint64")?
                .cast_into::<PyArrayDyn<u64>>()
                .map_err(|_| value_error("symbols could not be read as uint64"))?;
            let ro = a.readonly();
            ro.as_slice()?
                .iter()
                .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect()
        }
        _ => {
            return Err(value_error(format!(
                "symbols must be integers, got dtype {}",
                array.dtype().str()?
            )))
        }
    };
    Ok(values)
}

/// A C-contiguous float32 numpy array with `ndim` dimensions, checked with messages that say
/// what is wrong.
fn float_rows_arg<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndim: usize,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let py = obj.py();
    let what = if ndim == 2 {
        "a C-contiguous float32 numpy array of shape (N, K)"
    } else {
        "a C-contiguous float32 numpy array of shape (B, N, K)"
    };
    let array = obj
        .cast::<PyUntypedArray>()
        .map_err(|_| value_error(format!("{name} must be {what}, got {}", type_name(obj))))?;
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&f32::get_dtype(py)) {
        return Err(value_error(format!(
            "{name} must be {what}, got dtype {}",
            dtype.str()?
        )));
    }
    if array.ndim() != ndim {
        return Err(value_error(format!(
            "{name} must be {what}, got shape {}",
            shape_str(array.shape())
        )));
    }
    if !array.is_c_contiguous() {
        return Err(value_error(format!(
            "{name} must be C-contiguous (use numpy.ascontiguousarray)"
        )));
    }
    if !array.is_aligned() && array.len() > 0 {
        return Err(value_error(format!(
            "{name} must be aligned in memory for float32 (pass a copy: numpy.array({name}))"
        )));
    }
    Ok(array.clone())
}

/// Runs `f` on the flat data of a checked float32 array without copying it.
fn with_floats<T>(
    array: &Bound<'_, PyUntypedArray>,
    f: impl FnOnce(&[f32]) -> PyResult<T>,
) -> PyResult<T> {
    let typed = array
        .cast::<PyArrayDyn<f32>>()
        .map_err(|_| value_error("expected a float32 array"))?;
    let ro = typed
        .try_readonly()
        .map_err(|e| value_error(format!("array is being written elsewhere: {e}")))?;
    f(ro.as_slice()?)
}

fn bytes_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    Err(value_error(format!(
        "an ANS stream must be bytes or bytearray, got {}",
        type_name(obj)
    )))
}

/// An ANS state from a Python integer; anything that is not an integer in [floor, 2^63)
/// (negative, too large, not an int) is a ValueError, never an OverflowError.
fn state_arg(obj: &Bound<'_, PyAny>, name: &str, floor: u64) -> PyResult<u64> {
    let bad = || {
        let shown = obj
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| type_name(obj));
        let low = if floor == STATE_LOW {
            "2^31".to_string()
        } else {
            floor.to_string()
        };
        value_error(format!(
            "{name} must be an integer in [{low}, 2^63), got {shown}"
        ))
    };
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(bad());
    }
    let state: u64 = obj.extract().map_err(|_| bad())?;
    if !(floor..1 << 63).contains(&state) {
        return Err(bad());
    }
    Ok(state)
}

/// A stream's floor (rust/src/ans.rs, "Streams that start below L"): None is 2^31; anything
/// but an integer in [1, 2^31] is a ValueError.
fn floor_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(STATE_LOW);
    };
    let bad = || {
        value_error(format!(
            "floor must be an integer in [1, 2^31], got {}",
            obj.repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| type_name(obj))
        ))
    };
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(bad());
    }
    let floor: u64 = obj.extract().map_err(|_| bad())?;
    if !(1..=STATE_LOW).contains(&floor) {
        return Err(bad());
    }
    Ok(floor)
}

/// A sequence of bytes/bytearray objects, copied.
fn bytes_list_arg(streams: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    if streams.is_instance_of::<PyBytes>() || streams.is_instance_of::<PyString>() {
        return Err(value_error(
            "streams must be a sequence of bytes objects, got a single bytes/str",
        ));
    }
    let iter = streams.try_iter().map_err(|_| {
        value_error(format!(
            "streams must be a sequence of bytes objects, got {}",
            type_name(streams)
        ))
    })?;
    let mut all = Vec::new();
    // At most one more than the core accepts: an endless iterator is an error, not a hang.
    for item in iter.take(MAX_STREAMS + 1) {
        all.push(bytes_arg(&item?)?);
    }
    Ok(all)
}

/// Integer frequency tables (uint32, shape (N, K), each row summing to 2^24, every entry >= 1)
/// of float32 logits of shape (N, K): the exact, platform-independent quantization the coder
/// uses.
///
/// >>> import numpy as np
/// >>> from ardm._core import quantize_logits
/// >>> f = quantize_logits(np.array([[0.0, 1.0, -1.0]], dtype=np.float32))
/// >>> int(f.sum()), bool(f[0, 1] > f[0, 0] > f[0, 2])
/// (16777216, True)
#[pyfunction]
fn quantize_logits<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<u32>>> {
    let array = float_rows_arg(logits, "logits", 2)?;
    let (n, k) = (array.shape()[0], array.shape()[1]);
    let tables = with_floats(&array, |rows| {
        Ok(py.detach(|| quantize::quantize(rows, k, Input::Logits))?)
    })?;
    let out = tables.into_pyarray(py);
    out.reshape([n, k])
}

/// A rANS stack coder: `push` N symbols with their float32 logits (N, K), and a later `pop`
/// with the same logits returns them in the same order; separate pushes pop in reverse.
///
/// >>> import numpy as np
/// >>> from ardm._core import AnsCoder
/// >>> logits = np.array([[0.0, 2.0, -1.0], [1.0, 1.0, 1.0]], dtype=np.float32)
/// >>> coder = AnsCoder()
/// >>> coder.push([1, 2], logits)
/// >>> data = coder.to_bytes()
/// >>> AnsCoder.from_bytes(data).pop(logits).tolist()
/// [1, 2]
#[pyclass(name = "AnsCoder", module = "ardm._core")]
struct PyAnsCoder {
    inner: AnsCoder,
}

impl PyAnsCoder {
    fn push_any(
        &mut self,
        symbols: &Bound<'_, PyAny>,
        rows: &Bound<'_, PyAny>,
        input: Input,
    ) -> PyResult<()> {
        let py = symbols.py();
        let name = input_name(input);
        let array = float_rows_arg(rows, name, 2)?;
        let (n, k) = (array.shape()[0], array.shape()[1]);
        let (symbols, shape) = symbols_arg(symbols, 1)?;
        if shape[0] != n {
            return Err(value_error(format!(
                "{} symbols but {n} rows of distributions",
                shape[0]
            )));
        }
        let symbols = symbol_values(&symbols)?;
        let coder = &mut self.inner;
        with_floats(&array, |rows| {
            Ok(py.detach(|| coder.push_rows(&symbols, rows, k, input))?)
        })
    }

    fn pop_any<'py>(
        &mut self,
        rows: &Bound<'py, PyAny>,
        input: Input,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let py = rows.py();
        let array = float_rows_arg(rows, input_name(input), 2)?;
        let k = array.shape()[1];
        let coder = &mut self.inner;
        let out = with_floats(&array, |rows| {
            Ok(py.detach(|| coder.pop_rows(rows, k, input))?)
        })?;
        Ok(out.into_pyarray(py))
    }
}

fn input_name(input: Input) -> &'static str {
    match input {
        Input::Logits => "logits",
        Input::Probs => "probs",
    }
}

#[pymethods]
impl PyAnsCoder {
    /// A coder whose state starts at `initial_state` (an int in [floor, 2^63), default 2^31:
    /// an empty coder). A decoder that pops everything ends at that state with no words, so
    /// it can carry a checksum: see `state()`. `floor` (an int in [1, 2^31], default 2^31) lets
    /// the stream start below 2^31, so that a short checksum costs only its own bits; its
    /// decoder is opened with the same floor (`from_compact_bytes(data, floor)`).
    ///
    /// >>> d = AnsCoder.from_compact_bytes(AnsCoder(70000, floor=2**16).to_compact_bytes(), 2**16)
    /// >>> d.state(), d.num_words()
    /// (70000, 0)
    #[new]
    #[pyo3(
        signature = (initial_state = None, floor = None),
        text_signature = "(initial_state=2147483648, floor=2147483648)"
    )]
    fn new(
        initial_state: Option<&Bound<'_, PyAny>>,
        floor: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let floor = floor_arg(floor)?;
        let state = match initial_state.filter(|s| !s.is_none()) {
            None => STATE_LOW,
            Some(obj) => state_arg(obj, "initial_state", floor)?,
        };
        Ok(PyAnsCoder {
            inner: AnsCoder::with_floor(state, floor)?,
        })
    }

    /// Encodes `symbols[n]` (any integers, shape (N,)) under `softmax(logits[n])`, logits
    /// float32 (N, K). Atomic: on a ValueError the coder is unchanged.
    ///
    /// >>> import numpy as np
    /// >>> c = AnsCoder(); c.push(np.array([3], dtype=np.uint8), np.zeros((1, 4), np.float32))
    /// >>> c.num_bits()
    /// 64
    fn push(&mut self, symbols: &Bound<'_, PyAny>, logits: &Bound<'_, PyAny>) -> PyResult<()> {
        self.push_any(symbols, logits, Input::Logits)
    }

    /// Decodes one symbol per row of `logits` (float32 (N, K)), the first row first; int64 (N,).
    ///
    /// >>> import numpy as np
    /// >>> c = AnsCoder(); c.push([3], np.zeros((1, 4), np.float32))
    /// >>> c.pop(np.zeros((1, 4), np.float32)).tolist()
    /// [3]
    fn pop<'py>(&mut self, logits: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        self.pop_any(logits, Input::Logits)
    }

    /// `push` with float32 probabilities (N, K) (non-negative, any positive row sum).
    ///
    /// >>> import numpy as np
    /// >>> c = AnsCoder(); c.push_probs([1], np.array([[0.25, 0.75]], np.float32))
    /// >>> c.pop_probs(np.array([[0.25, 0.75]], np.float32)).tolist()
    /// [1]
    fn push_probs(&mut self, symbols: &Bound<'_, PyAny>, probs: &Bound<'_, PyAny>) -> PyResult<()> {
        self.push_any(symbols, probs, Input::Probs)
    }

    /// `pop` with float32 probabilities (N, K).
    fn pop_probs<'py>(&mut self, probs: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        self.pop_any(probs, Input::Probs)
    }

    /// The stream: its 32-bit words then the state (2 words), little endian.
    ///
    /// >>> len(AnsCoder().to_bytes())
    /// 8
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    /// A coder from `to_bytes()` output; ValueError if the bytes cannot be a stream.
    ///
    /// >>> AnsCoder.from_bytes(AnsCoder().to_bytes()).is_empty()
    /// True
    #[staticmethod]
    fn from_bytes(data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let bytes = bytes_arg(data)?;
        Ok(PyAnsCoder {
            inner: AnsCoder::from_bytes(&bytes)?,
        })
    }

    /// The stream in the compact format (rust/src/ans.rs, "The compact byte format"): the
    /// state in its minimal 4 to 7 bytes, big endian, then the 32-bit words in the order the
    /// decoder reads them, little endian. Up to 7 bits above the state's bit length instead of
    /// 64 bits for the state in `to_bytes()`.
    ///
    /// >>> AnsCoder().to_compact_bytes()
    /// b'\x80\x00\x00\x00'
    fn to_compact_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let coder = &self.inner;
        let bytes = py.detach(|| coder.to_compact_bytes());
        PyBytes::new(py, &bytes)
    }

    /// A coder from `to_compact_bytes()` output of a stream of floor `floor` (default 2^31);
    /// ValueError for any bytes it cannot have written.
    ///
    /// >>> AnsCoder.from_compact_bytes(AnsCoder(2**31 + 5).to_compact_bytes()).state()
    /// 2147483653
    #[staticmethod]
    #[pyo3(signature = (data, floor = None))]
    fn from_compact_bytes(
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        floor: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let floor = floor_arg(floor)?;
        let bytes = bytes_arg(data)?;
        let inner = py.detach(|| AnsCoder::from_compact_bytes_with_floor(&bytes, floor))?;
        Ok(PyAnsCoder { inner })
    }

    /// The current state, an int in [2^31, 2^63) (or, in a stream of a lower floor with no
    /// words left, in [floor, 2^31)). After popping every symbol it is the initial state
    /// again (and `num_words()` is 0) exactly when the stream decoded as it was encoded.
    ///
    /// >>> import numpy as np
    /// >>> c = AnsCoder(2**31 + 12345); c.push([1, 0], np.zeros((2, 3), np.float32))
    /// >>> d = AnsCoder.from_compact_bytes(c.to_compact_bytes()); _ = d.pop(np.zeros((2, 3), np.float32))
    /// >>> d.state() == 2**31 + 12345, d.num_words()
    /// (True, 0)
    fn state(&self) -> u64 {
        self.inner.state()
    }

    /// The number of 32-bit words besides the state.
    fn num_words(&self) -> usize {
        self.inner.num_words()
    }

    /// Size of `to_bytes()` in bits.
    fn num_bits(&self) -> u64 {
        self.inner.num_bits()
    }

    /// True when there is nothing to pop.
    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    fn __repr__(&self) -> String {
        format!("AnsCoder(num_bits={})", self.inner.num_bits())
    }
}

/// Many independent rANS streams coded in one call on all cores (rayon). Stream b's bytes are
/// exactly those of an `AnsCoder` fed `symbols[b]` and `logits[b]`.
///
/// >>> import numpy as np
/// >>> from ardm._core import AnsCoderBatch
/// >>> batch = AnsCoderBatch(2)
/// >>> logits = np.zeros((2, 3, 4), dtype=np.float32)
/// >>> batch.push(np.array([[0, 1, 2], [3, 2, 1]]), logits)
/// >>> batch.pop(logits).tolist()
/// [[0, 1, 2], [3, 2, 1]]
#[pyclass(name = "AnsCoderBatch", module = "ardm._core")]
struct PyAnsCoderBatch {
    inner: AnsBatch,
}

impl PyAnsCoderBatch {
    /// Checks that logits of `shape` have one entry per stream along their first axis.
    fn check_streams(&self, b: usize, shape: &[usize]) -> PyResult<()> {
        if b != self.inner.len() {
            return Err(value_error(format!(
                "logits of shape {} are for {b} streams, but the batch has {}",
                shape_str(shape),
                self.inner.len()
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl PyAnsCoderBatch {
    /// `num_streams` streams (at most 2**24), empty or, given `initial_states` (a sequence of
    /// `num_streams` ints in [floor, 2^63), e.g. a list or a numpy integer array), starting at
    /// those states; `floor` as for `AnsCoder` (default 2^31).
    #[new]
    #[pyo3(signature = (num_streams, initial_states = None, floor = None))]
    fn new(
        num_streams: &Bound<'_, PyAny>,
        initial_states: Option<&Bound<'_, PyAny>>,
        floor: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let count = count_arg(num_streams, "num_streams", 0)?;
        let floor = floor_arg(floor)?;
        let Some(initial_states) = initial_states.filter(|s| !s.is_none()) else {
            if floor != STATE_LOW {
                return Err(value_error(
                    "a floor needs initial_states (at least the floor)",
                ));
            }
            return Ok(PyAnsCoderBatch {
                inner: AnsBatch::try_new(count)?,
            });
        };
        check_num_streams(count)?;
        let what = "initial_states must be a sequence of ints, one per stream";
        if initial_states.is_instance_of::<PyString>()
            || initial_states.is_instance_of::<PyBytes>()
            || initial_states.is_instance_of::<PyByteArray>()
        {
            return Err(value_error(format!(
                "{what}, got {}",
                type_name(initial_states)
            )));
        }
        let iter = initial_states
            .try_iter()
            .map_err(|_| value_error(format!("{what}, got {}", type_name(initial_states))))?;
        let mut states = Vec::with_capacity(count);
        // At most one more than needed: an endless iterator is an error, not a hang.
        for (b, item) in iter.take(count + 1).enumerate() {
            if b == count {
                return Err(value_error(format!(
                    "{count} streams but more than {count} initial states"
                )));
            }
            states.push(state_arg(&item?, &format!("initial_states[{b}]"), floor)?);
        }
        if states.len() != count {
            return Err(value_error(format!(
                "{count} streams but {} initial states",
                states.len()
            )));
        }
        Ok(PyAnsCoderBatch {
            inner: AnsBatch::with_initial_states_and_floor(&states, floor)?,
        })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Pushes `symbols[b]` (integers, shape (B, N)) under `logits[b]` (float32 (B, N, K)) onto
    /// stream b. All or nothing: on a ValueError no stream changes.
    fn push(&mut self, symbols: &Bound<'_, PyAny>, logits: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = symbols.py();
        let array = float_rows_arg(logits, "logits", 3)?;
        let shape = array.shape().to_vec();
        let (b, n, k) = (shape[0], shape[1], shape[2]);
        let (symbols, sym_shape) = symbols_arg(symbols, 2)?;
        if sym_shape != [b, n] {
            return Err(value_error(format!(
                "symbols of shape {} do not match logits of shape {}",
                shape_str(&sym_shape),
                shape_str(&shape)
            )));
        }
        self.check_streams(b, &shape)?;
        let symbols = symbol_values(&symbols)?;
        let batch = &mut self.inner;
        with_floats(&array, |rows| {
            Ok(py.detach(|| batch.push_rows(&symbols, rows, n, k, Input::Logits))?)
        })
    }

    /// Pops N symbols from every stream, given logits float32 (B, N, K); int64 (B, N).
    fn pop<'py>(&mut self, logits: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let py = logits.py();
        let array = float_rows_arg(logits, "logits", 3)?;
        let shape = array.shape().to_vec();
        let (b, n, k) = (shape[0], shape[1], shape[2]);
        self.check_streams(b, &shape)?;
        let batch = &mut self.inner;
        let out = with_floats(&array, |rows| {
            Ok(py.detach(|| batch.pop_rows(rows, n, k, Input::Logits))?)
        })?;
        out.into_pyarray(py).reshape([b, n])
    }

    /// Every stream's `to_bytes()`.
    fn to_bytes_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let streams: Vec<Bound<'py, PyBytes>> = self
            .inner
            .to_bytes_list()
            .iter()
            .map(|b| PyBytes::new(py, b))
            .collect();
        PyList::new(py, streams)
    }

    /// A batch from a sequence of `to_bytes()` outputs.
    #[staticmethod]
    fn from_bytes_list(streams: &Bound<'_, PyAny>) -> PyResult<Self> {
        let all = bytes_list_arg(streams)?;
        Ok(PyAnsCoderBatch {
            inner: AnsBatch::from_bytes_list(&all)?,
        })
    }

    /// Every stream's size in bits, int64 (B,).
    fn num_bits<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let bits: Vec<i64> = self.inner.num_bits().iter().map(|&b| b as i64).collect();
        bits.into_pyarray(py)
    }

    /// Every stream's `to_compact_bytes()`.
    fn to_compact_bytes_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let batch = &self.inner;
        let streams = py.detach(|| batch.to_compact_bytes_list());
        let streams: Vec<Bound<'py, PyBytes>> =
            streams.iter().map(|b| PyBytes::new(py, b)).collect();
        PyList::new(py, streams)
    }

    /// A batch from a sequence of `to_compact_bytes()` outputs of streams of floor `floor`
    /// (default 2^31); ValueError naming the first stream that is not one.
    #[staticmethod]
    #[pyo3(signature = (streams, floor = None))]
    fn from_compact_bytes_list(
        py: Python<'_>,
        streams: &Bound<'_, PyAny>,
        floor: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let floor = floor_arg(floor)?;
        let all = bytes_list_arg(streams)?;
        let inner = py.detach(|| AnsBatch::from_compact_bytes_list_with_floor(&all, floor))?;
        Ok(PyAnsCoderBatch { inner })
    }

    /// Every stream's state, uint64 (B,): each equals its initial state with `num_words()` 0
    /// after popping everything that was pushed.
    fn states<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        self.inner.states().into_pyarray(py)
    }

    /// Every stream's number of 32-bit words besides the state, int64 (B,).
    fn num_words<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let words: Vec<i64> = self.inner.num_words().iter().map(|&w| w as i64).collect();
        words.into_pyarray(py)
    }

    fn __repr__(&self) -> String {
        format!("AnsCoderBatch(num_streams={})", self.inner.len())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(quantize_logits, m)?)?;
    m.add_class::<PyAnsCoder>()?;
    m.add_class::<PyAnsCoderBatch>()?;
    Ok(())
}
