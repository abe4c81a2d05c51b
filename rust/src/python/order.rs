//! Bindings of the portable orders (`crate::order`).

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::policy::{count_arg, index_array, index_vector, integer_arg};
use crate::order;

/// Indices as an int64 array, converted in place (usize and i64 have the same size on the
/// 64-bit targets, so no second buffer of the size of the order is needed).
fn into_index_array(py: Python<'_>, values: Vec<usize>) -> Bound<'_, PyArray1<i64>> {
    PyArray1::from_vec(py, values.into_iter().map(|v| v as i64).collect())
}

/// random_order(num_vars, seed)
/// --
///
/// The generation order of `num_vars` variables for a seed in 0..2**64: a permutation that is
/// identical on every platform and release (SplitMix64-seeded xoshiro256**, unbiased
/// Fisher-Yates; see the `ardm_core::order` docs). num_vars is at most 2**32.
///
/// >>> from ardm._core import random_order
/// >>> random_order(10, 0).tolist()
/// [7, 8, 3, 1, 5, 4, 2, 0, 9, 6]
#[pyfunction]
#[pyo3(text_signature = "(num_vars, seed)")]
fn random_order<'py>(
    py: Python<'py>,
    num_vars: &Bound<'py, PyAny>,
    seed: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let num_vars = count_arg(num_vars, "num_vars", 0)?;
    let seed = integer_arg(seed, "seed", 0)?;
    let order = py.detach(|| order::random_order(num_vars, seed))?;
    Ok(into_index_array(py, order))
}

/// random_orders(num_vars, seeds)
/// --
///
/// One order per seed as an int64 array of shape (len(seeds), num_vars); row i equals
/// random_order(num_vars, seeds[i]); at most 2**32 entries in all.
///
/// >>> from ardm._core import random_orders
/// >>> random_orders(10, [0, 1])[1].tolist()
/// [3, 6, 1, 5, 0, 9, 2, 8, 4, 7]
#[pyfunction]
#[pyo3(text_signature = "(num_vars, seeds)")]
fn random_orders<'py>(
    py: Python<'py>,
    num_vars: &Bound<'py, PyAny>,
    seeds: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let num_vars = count_arg(num_vars, "num_vars", 0)?;
    let seeds: Vec<u64> = index_vector(seeds, "seeds")?
        .into_iter()
        .map(|s| s as u64)
        .collect();
    let rows = seeds.len();
    let orders = py.detach(|| order::random_orders(num_vars, &seeds))?;
    into_index_array(py, orders)
        .reshape([rows, num_vars])
        .map_err(|err| PyValueError::new_err(format!("could not shape the orders: {err}")))
}

/// order_ranks(order)
/// --
///
/// The inverse permutation: ranks[order[t]] = t, the step at which each variable is generated.
///
/// >>> from ardm._core import order_ranks
/// >>> order_ranks([2, 0, 1]).tolist()
/// [1, 2, 0]
#[pyfunction]
#[pyo3(text_signature = "(order)")]
fn order_ranks<'py>(
    py: Python<'py>,
    order: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let order = index_vector(order, "order")?;
    let ranks = order::order_ranks(&order)?;
    Ok(index_array(py, &ranks))
}

/// step_positions(order, policy, step)
/// --
///
/// The variables generated together by call `step` of `policy`:
/// order[policy[step] : policy[step + 1]] (to the end for the last step).
///
/// >>> from ardm._core import step_positions
/// >>> step_positions([4, 2, 0, 1, 3], [0, 2], 1).tolist()
/// [0, 1, 3]
#[pyfunction]
#[pyo3(text_signature = "(order, policy, step)")]
fn step_positions<'py>(
    py: Python<'py>,
    order: &Bound<'py, PyAny>,
    policy: &Bound<'py, PyAny>,
    step: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let order = index_vector(order, "order")?;
    let policy = index_vector(policy, "policy")?;
    let step = count_arg(step, "step", 0)?;
    let positions = order::step_positions(&order, &policy, step)?;
    Ok(index_array(py, positions))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(random_order, m)?)?;
    m.add_function(wrap_pyfunction!(random_orders, m)?)?;
    m.add_function(wrap_pyfunction!(order_ranks, m)?)?;
    m.add_function(wrap_pyfunction!(step_positions, m)?)?;
    Ok(())
}
