//! `ardm-core`: the exact, fast parts of Autoregressive Diffusion Models
//! (Hoogeboom et al., ICLR 2022, arXiv:2110.02037).
//!
//! * [`policy`]: the budget dynamic program (paper Sec. 4, "Parallel generation"):
//!   least-cost policies for every budget of network calls.
//! * [`order`]: seeded, portable permutations and their bookkeeping.
//! * [`quantize`]: logits -> integer frequency tables, a pure function of the float bits.
//! * [`ans`]: a rANS stack coder, one stream or many independent streams.
//! * [`portable`]: elementwise float64 math (`exp`, `log`, `erf`, `gelu`, `sin`, ...) from
//!   IEEE-754 basic operations only, bit-identical on every CPU and platform.
//! * [`portable_layers`]: the portable evaluation's products scaled back, softmax and
//!   normalization, fused, bit for bit the operations they stand for.
//!
//! Nothing here knows Python; the bindings live in `python/` behind the `python` feature.

pub mod ans;
pub mod error;
pub mod lagrange;
pub mod order;
pub mod policy;
pub mod portable;
pub mod portable_layers;
pub mod quantize;

pub use error::CoreError;

#[cfg(feature = "python")]
mod python;
