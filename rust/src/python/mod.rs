//! The Python module `ardm._core`: thin wrappers only, no logic. Each submodule registers the
//! functions of one core module. Inputs are copied into Rust-owned data, then the work runs with
//! the GIL released.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::CoreError;

mod ans;
mod order;
mod policy;
mod portable;

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        PyValueError::new_err(err.0)
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    policy::register(m)?;
    order::register(m)?;
    ans::register(m)?;
    portable::register(m)?;
    Ok(())
}
