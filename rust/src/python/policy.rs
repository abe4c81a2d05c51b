//! Bindings of the budget DP (`crate::policy`) and the argument conversions shared with the
//! order bindings. Any bad argument (wrong dtype or shape, a float where an integer belongs, a
//! negative count) is a `ValueError` that names the argument.

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyList, PyString, PyTuple};

use crate::lagrange;
use crate::policy::{self, PolicyMethod};

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// `numpy.asarray(obj)` as a 1-D array, checking its dtype kind against `kinds` (e.g. "iuf").
fn as_1d_array<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    kinds: &str,
    what: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() {
        return Err(PyValueError::new_err(format!(
            "{name} must be a 1-D array of {what}, got a string"
        )));
    }
    let numpy = py.import("numpy")?;
    let array = numpy.call_method1("asarray", (obj,)).map_err(|err| {
        PyValueError::new_err(format!(
            "{name} must be a 1-D array of {what}, got {} ({err})",
            type_name(obj)
        ))
    })?;
    let ndim: usize = array.getattr("ndim")?.extract()?;
    let size: usize = array.getattr("size")?.extract()?;
    if ndim != 1 {
        return Err(PyValueError::new_err(format!(
            "{name} must be 1-D, got an array with {ndim} dimensions"
        )));
    }
    let dtype = array.getattr("dtype")?;
    let kind: String = dtype.getattr("kind")?.extract()?;
    // An empty list has dtype float64; let the core report emptiness.
    if size > 0 && !kinds.contains(kind.as_str()) {
        return Err(PyValueError::new_err(format!(
            "{name} must be an array of {what}, got dtype {}",
            dtype.str()?
        )));
    }
    Ok(array)
}

/// A 1-D array-like of real numbers (any int or float dtype) as `Vec<f64>`.
pub(super) fn float_vector(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<f64>> {
    let py = obj.py();
    let array = as_1d_array(obj, name, "iuf", "real numbers")?;
    let numpy = py.import("numpy")?;
    let array = numpy
        .call_method1("require", (array, numpy.getattr("float64")?, "CA"))?
        .cast_into::<PyArray1<f64>>()
        .map_err(|_| PyValueError::new_err(format!("{name} could not be read as float64")))?;
    Ok(array.readonly().as_slice()?.to_vec())
}

/// A 2-D array-like of real numbers as a row-major `Vec<f64>` with its (rows, columns).
fn float_matrix(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<(Vec<f64>, usize, usize)> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() {
        return Err(PyValueError::new_err(format!(
            "{name} must be a 2-D array of real numbers, got a string"
        )));
    }
    let numpy = py.import("numpy")?;
    let array = numpy.call_method1("asarray", (obj,)).map_err(|err| {
        PyValueError::new_err(format!(
            "{name} must be a 2-D array of real numbers, got {} ({err})",
            type_name(obj)
        ))
    })?;
    let ndim: usize = array.getattr("ndim")?.extract()?;
    if ndim != 2 {
        return Err(PyValueError::new_err(format!(
            "{name} must be 2-D (stages x steps), got an array with {ndim} dimensions"
        )));
    }
    let (rows, cols): (usize, usize) = array.getattr("shape")?.extract()?;
    let dtype = array.getattr("dtype")?;
    let kind: String = dtype.getattr("kind")?.extract()?;
    if rows * cols > 0 && !"iuf".contains(kind.as_str()) {
        return Err(PyValueError::new_err(format!(
            "{name} must be an array of real numbers, got dtype {}",
            dtype.str()?
        )));
    }
    let flat = numpy
        .call_method1("require", (array, numpy.getattr("float64")?, "CA"))?
        .call_method0("ravel")?
        .cast_into::<PyArray1<f64>>()
        .map_err(|_| PyValueError::new_err(format!("{name} could not be read as float64")))?;
    let values = flat.readonly().as_slice()?.to_vec();
    Ok((values, rows, cols))
}

/// A 1-D array-like of non-negative integers (any integer dtype) as `Vec<usize>`.
pub(super) fn index_vector(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<usize>> {
    let py = obj.py();
    let array = as_1d_array(obj, name, "iu", "integers")?;
    let numpy = py.import("numpy")?;
    let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
    let size: usize = array.getattr("size")?.extract()?;
    if size == 0 {
        return Ok(Vec::new());
    }
    if kind == "u" {
        let array = numpy
            .call_method1("require", (array, numpy.getattr("uint64")?, "CA"))?
            .cast_into::<PyArray1<u64>>()
            .map_err(|_| PyValueError::new_err(format!("{name} could not be read as uint64")))?;
        let values = array.readonly().as_slice()?.to_vec();
        return values
            .into_iter()
            .map(|v| {
                usize::try_from(v).map_err(|_| {
                    PyValueError::new_err(format!("{name} holds a value too large: {v}"))
                })
            })
            .collect();
    }
    let array = numpy
        .call_method1("require", (array, numpy.getattr("int64")?, "CA"))?
        .cast_into::<PyArray1<i64>>()
        .map_err(|_| PyValueError::new_err(format!("{name} could not be read as int64")))?;
    let values = array.readonly().as_slice()?.to_vec();
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            usize::try_from(v)
                .map_err(|_| PyValueError::new_err(format!("{name}[{i}] = {v} is negative")))
        })
        .collect()
}

/// A Python integer (or anything with `__index__`, but not a bool) in `min..=u64::MAX`.
pub(super) fn integer_arg(obj: &Bound<'_, PyAny>, name: &str, min: u64) -> PyResult<u64> {
    let py = obj.py();
    if obj.is_instance_of::<PyBool>() {
        return Err(PyValueError::new_err(format!(
            "{name} must be an integer, got a bool"
        )));
    }
    let index = py
        .import("operator")?
        .call_method1("index", (obj,))
        .map_err(|_| {
            PyValueError::new_err(format!("{name} must be an integer, got {}", type_name(obj)))
        })?;
    let value: i128 = index
        .extract()
        .map_err(|_| PyValueError::new_err(format!("{name} is too large: {}", obj_repr(obj))))?;
    if value < i128::from(min) {
        return Err(PyValueError::new_err(format!(
            "{name} must be at least {min}, got {value}"
        )));
    }
    u64::try_from(value).map_err(|_| PyValueError::new_err(format!("{name} is too large: {value}")))
}

fn obj_repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// A count argument (a number of steps, calls or variables) as usize.
pub(super) fn count_arg(obj: &Bound<'_, PyAny>, name: &str, min: u64) -> PyResult<usize> {
    let value = integer_arg(obj, name, min)?;
    usize::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{name} is too large: {value}")))
}

pub(super) fn index_array<'py>(py: Python<'py>, values: &[usize]) -> Bound<'py, PyArray1<i64>> {
    PyArray1::from_vec(py, values.iter().map(|&v| v as i64).collect())
}

/// budget_curve(step_losses)
/// --
///
/// Least total loss with at most k network calls, for every k in 0..D (Hoogeboom et al. 2022,
/// Sec. 4). Entry 0 is inf; for non-increasing losses entry D equals their sum.
///
/// step_losses: 1-D array-like of D finite, non-negative per-step losses.
/// Returns float64[D + 1]. Raises ValueError on bad input.
///
/// >>> from ardm._core import budget_curve
/// >>> budget_curve([4.0, 2.0, 1.0]).tolist()
/// [inf, 12.0, 8.0, 7.0]
#[pyfunction]
#[pyo3(text_signature = "(step_losses)")]
fn budget_curve<'py>(
    py: Python<'py>,
    step_losses: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let losses = float_vector(step_losses, "step_losses")?;
    let curve = py.detach(|| policy::budget_curve(&losses))?;
    Ok(PyArray1::from_vec(py, curve))
}

/// optimal_policy(step_losses, budget, method="auto")
/// --
///
/// The least-loss policy with at most `budget` network calls (the fewest calls among equal
/// losses): start steps, strictly increasing from 0 and below D. Its cost equals
/// budget_curve(step_losses)[min(budget, D)]: exactly for unsorted losses, up to rounding
/// (relative 1e-12) for losses sorted in descending order, which take a search over a price per
/// call (O(D) per try, a few milliseconds at D = 16,000) instead of the O(budget * D) layers.
/// method: "auto" (that choice), "price" (sorted losses only) or "layers".
///
/// >>> from ardm._core import optimal_policy
/// >>> optimal_policy([4.0, 1.0, 1.0, 1.0], 2).tolist()
/// [0, 1]
/// >>> optimal_policy([4.0, 3.0, 2.0, 1.0], 2, method="layers").tolist()
/// [0, 2]
#[pyfunction]
#[pyo3(signature = (step_losses, budget, method = None), text_signature = "(step_losses, budget, method='auto')")]
fn optimal_policy<'py>(
    py: Python<'py>,
    step_losses: &Bound<'py, PyAny>,
    budget: &Bound<'py, PyAny>,
    method: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let losses = float_vector(step_losses, "step_losses")?;
    let budget = count_arg(budget, "budget", 1)?;
    let method = match method {
        None => PolicyMethod::Auto,
        Some(name) => name
            .extract::<String>()
            .map_err(|_| {
                PyValueError::new_err(format!(
                    "method must be a string (\"auto\", \"price\" or \"layers\"), got {}",
                    type_name(name)
                ))
            })?
            .parse()?,
    };
    let policy = py.detach(|| policy::optimal_policy_with(&losses, budget, method))?;
    Ok(index_array(py, &policy))
}

/// optimal_stage_policies(step_losses, budget)
/// --
///
/// The split of `budget` network calls across the stages of an upscale ARDM of least total
/// loss, and each stage's policy: one common price per call for all stages (each stage's least
/// loss is convex in its calls). step_losses: float (S, D), each row sorted in descending order.
/// Every stage gets at least one call; calls that lower nothing are spread in stage order.
/// Returns (budgets int64[S], [policy int64[<= budgets[s]] per stage]).
///
/// >>> from ardm._core import optimal_stage_policies
/// >>> budgets, policies = optimal_stage_policies([[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]], 3)
/// >>> budgets.tolist(), [p.tolist() for p in policies]
/// ([2, 1], [[0, 2], [0]])
#[pyfunction]
#[pyo3(text_signature = "(step_losses, budget)")]
fn optimal_stage_policies<'py>(
    py: Python<'py>,
    step_losses: &Bound<'py, PyAny>,
    budget: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (losses, rows, cols) = float_matrix(step_losses, "step_losses")?;
    let budget = count_arg(budget, "budget", 1)?;
    let plan = py.detach(|| {
        let stages: Vec<&[f64]> = (0..rows)
            .map(|s| &losses[s * cols..(s + 1) * cols])
            .collect();
        lagrange::optimal_stage_policies(&stages, budget)
    })?;
    let policies = PyList::empty(py);
    for policy in &plan.policies {
        policies.append(index_array(py, policy))?;
    }
    PyTuple::new(
        py,
        [
            index_array(py, &plan.budgets).into_any(),
            policies.into_any(),
        ],
    )
}

/// policy_cost(step_losses, policy)
/// --
///
/// The cost sum_i (t[i+1] - t[i]) * step_losses[t[i]] of a policy (t[k] = D), summed left to
/// right.
///
/// >>> from ardm._core import policy_cost
/// >>> policy_cost([3.0, 2.0, 1.0], [0, 2])
/// 7.0
#[pyfunction]
#[pyo3(text_signature = "(step_losses, policy)")]
fn policy_cost(step_losses: &Bound<'_, PyAny>, policy: &Bound<'_, PyAny>) -> PyResult<f64> {
    let losses = float_vector(step_losses, "step_losses")?;
    let policy = index_vector(policy, "policy")?;
    Ok(policy::policy_cost(&losses, &policy)?)
}

/// naive_policy(num_steps, budget)
/// --
///
/// The evenly spaced policy: t[i] = floor(i * D / k) for i < k = min(budget, D).
///
/// >>> from ardm._core import naive_policy
/// >>> naive_policy(10, 4).tolist()
/// [0, 2, 5, 7]
#[pyfunction]
#[pyo3(text_signature = "(num_steps, budget)")]
fn naive_policy<'py>(
    py: Python<'py>,
    num_steps: &Bound<'py, PyAny>,
    budget: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let num_steps = count_arg(num_steps, "num_steps", 1)?;
    let budget = count_arg(budget, "budget", 1)?;
    let policy = policy::naive_policy(num_steps, budget)?;
    Ok(index_array(py, &policy))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(budget_curve, m)?)?;
    m.add_function(wrap_pyfunction!(optimal_policy, m)?)?;
    m.add_function(wrap_pyfunction!(optimal_stage_policies, m)?)?;
    m.add_function(wrap_pyfunction!(policy_cost, m)?)?;
    m.add_function(wrap_pyfunction!(naive_policy, m)?)?;
    Ok(())
}
