//! Fused layers of the portable network evaluation (`ardm.coding.portable`): the rescaling of
//! an exact matrix product, softmax and the normalization of layer and group norms, each in one
//! or two passes over the data.
//!
//! Each function performs, element for element and in the same order, the IEEE-754 operations
//! that the equivalent sequence of torch operations performs (written out in each function's
//! docs), so its results are those very bits; it only avoids the eight to twelve passes over
//! memory (and temporaries) that the sequence makes. Like [`crate::portable`], the work is
//! basic IEEE operations only (`+ - * /`, `sqrt`, compares, selects, and the portable `exp` and
//! grid), so the results are the same on every CPU. The sums are of integers on a grid whose
//! every partial sum is exact (below `2^52`), so their order does not matter either.

use crate::error::{CoreError, CoreResult};
use crate::portable::{canonical, exp_k, grid_scale, round_even, row_abs_max};

/// Exact sum of the integers `round_even(f(v) * scale)` over a row (each at most `2^bits` in
/// magnitude, and `bits` small enough for the row's length that every partial sum is exact):
/// any order gives the same value, so eight lanes run side by side. A NaN gives the canonical
/// NaN; infinities give an infinity or NaN as any order would.
#[inline(always)]
fn grid_sum(row: &[f64], scale: f64, f: impl Fn(f64) -> f64) -> f64 {
    let (chunks, rest) = row.as_chunks::<8>();
    let mut acc = [0.0f64; 8];
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += round_even(f(v) * scale);
        }
    }
    let lanes = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    canonical(
        rest.iter()
            .fold(lanes, |s, &v| s + round_even(f(v) * scale)),
    )
}

/// The largest value of a row as torch's `amax` gives it: NaN if the row has a NaN, otherwise the
/// maximum (`-inf` for an empty row), which does not depend on the order; eight lanes side by
/// side, so the loop vectorizes.
#[inline(always)]
fn row_max(row: &[f64]) -> f64 {
    let (chunks, rest) = row.as_chunks::<8>();
    let mut acc = [f64::NEG_INFINITY; 8];
    let mut nan = [false; 8];
    for chunk in chunks {
        for ((m, n), &v) in acc.iter_mut().zip(nan.iter_mut()).zip(chunk) {
            *m = if v > *m { v } else { *m };
            *n |= v.is_nan();
        }
    }
    let mut top = f64::NEG_INFINITY;
    let mut any_nan = nan.iter().any(|&n| n);
    for &v in acc.iter().chain(rest) {
        top = if v > top { v } else { top };
        any_nan |= v.is_nan();
    }
    if any_nan {
        f64::NAN
    } else {
        top
    }
}

/// The exact sum of a row on its grid of `bits` bits, divided back: torch's
/// `ints, scale = grid(row, bits); ints.sum() / scale`.
#[inline(always)]
fn exact_row_sum(row: &[f64], bits: u32) -> f64 {
    let scale = grid_scale(row_abs_max(row), bits);
    canonical(grid_sum(row, scale, |v| v) / scale)
}

fn check_bits(bits: u32, what: &str) -> CoreResult<()> {
    if (1..=52).contains(&bits) {
        Ok(())
    } else {
        Err(CoreError::new(format!(
            "{what} must be in 1..=52, got {bits}"
        )))
    }
}

fn check_len(what: &str, got: usize, want: usize) -> CoreResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(CoreError::new(format!(
            "{what} must have {want} elements, got {got}"
        )))
    }
}

/// Defines `$avx2`, the kernel `$kernel` compiled with AVX2 enabled (wider vectors, the same
/// operations per element, so the same bits), and `$run`, which calls it where the CPU has AVX2
/// and the plain kernel otherwise.
macro_rules! dispatch {
    ($run:ident, $avx2:ident, $kernel:ident ( $($arg:ident : $ty:ty),* )) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2($($arg: $ty),*) {
            $kernel($($arg),*)
        }

        fn $run($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    unsafe { $avx2($($arg),*) };
                    return;
                }
            }
            $kernel($($arg),*)
        }
    };
}

/// The result of an exact product scaled back, in place: `y` has shape `(groups, rows, cols)`
/// in C order and every element becomes `((y / row_scales[g, r]) / col_scales[g, c]) *
/// multiplier + bias[c]` (the product and the sum only where given), as torch's
/// `y.div_(sa).div_(sb)`, then `* multiplier`, then `+ bias` compute it. `row_scales` has
/// `groups * rows` elements; `col_scales` has `cols` (one row shared by every group) or
/// `groups * cols`; `bias` has `cols`.
///
/// ```
/// use ardm_core::portable_layers::rescale;
/// let mut y = [8.0, 12.0, -4.0, 2.0];
/// rescale(&mut y, 1, 2, 2, &[2.0, 4.0], &[1.0, 2.0], None, Some(&[0.5, 0.0])).unwrap();
/// assert_eq!(y, [4.5, 3.0, -0.5, 0.25]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn rescale(
    y: &mut [f64],
    groups: usize,
    rows: usize,
    cols: usize,
    row_scales: &[f64],
    col_scales: &[f64],
    multiplier: Option<f64>,
    bias: Option<&[f64]>,
) -> CoreResult<()> {
    let too_large = || CoreError::new("rescale: the shape is too large");
    let group_rows = groups.checked_mul(rows).ok_or_else(too_large)?;
    check_len(
        "rescale: y",
        y.len(),
        group_rows.checked_mul(cols).ok_or_else(too_large)?,
    )?;
    check_len("rescale: row scales", row_scales.len(), group_rows)?;
    if col_scales.len() != cols && Some(col_scales.len()) != groups.checked_mul(cols) {
        return Err(CoreError::new(format!(
            "rescale: col scales must have {cols} or {groups} x {cols} elements, got {}",
            col_scales.len()
        )));
    }
    if let Some(b) = bias {
        check_len("rescale: bias", b.len(), cols)?;
    }
    if y.is_empty() || cols == 0 {
        return Ok(());
    }
    run_rescale(y, rows, cols, row_scales, col_scales, multiplier, bias);
    Ok(())
}

/// Softmax of every row of `x` (rows of `cols` values, C order), in place, as
/// `ardm.coding.portable` computes it in torch: `top = x.amax(-1)` (NaN if the row has one),
/// replaced by 0 where not finite; `w = exp(x - top)` (the portable `exp`); `total` the exact sum
/// of `w` on its grid of `sum_bits` bits (`exact_sum`), and `p = w / total`.
///
/// With `grid_bits`, `p` is then rounded onto its own grid of `grid_bits` bits, as the left
/// operand of an exact product (`portable_grid`): `x` receives the integers and `scales` (one
/// per row) the scales. Without it `x` receives `p` and `scales` is left as it is.
///
/// ```
/// use ardm_core::portable_layers::softmax;
/// let mut x = [0.0, 0.0, f64::NEG_INFINITY, 0.0];
/// let mut scales = [0.0];
/// softmax(&mut x, 4, 50, None, &mut scales).unwrap();
/// assert_eq!(x, [1.0 / 3.0, 1.0 / 3.0, 0.0, 1.0 / 3.0]);
/// ```
pub fn softmax(
    x: &mut [f64],
    cols: usize,
    sum_bits: u32,
    grid_bits: Option<u32>,
    scales: &mut [f64],
) -> CoreResult<()> {
    check_bits(sum_bits, "softmax: sum bits")?;
    if let Some(bits) = grid_bits {
        check_bits(bits, "softmax: grid bits")?;
    }
    if cols == 0 {
        return if x.is_empty() {
            Ok(())
        } else {
            Err(CoreError::new("softmax: rows of 0 values hold nothing"))
        };
    }
    if !x.len().is_multiple_of(cols) {
        return Err(CoreError::new(format!(
            "softmax: {} values are not rows of {cols}",
            x.len()
        )));
    }
    if grid_bits.is_some() {
        check_len("softmax: scales", scales.len(), x.len() / cols)?;
    }
    run_softmax(x, cols, sum_bits, grid_bits, scales);
    Ok(())
}

/// The normalization of layer and group norms over every row of `x` (rows of `cols` values, C
/// order), in place, as `ardm.coding.portable` computes it in torch: `mean = exact_sum(row) /
/// cols`, `c = row - mean`, `var = exact_sum(c * c) / cols`, `row = c / sqrt(var + eps)`, then
/// `* weight[j]` and `+ bias[j]` where given (one per column). Both sums are on grids of
/// `sum_bits` bits.
///
/// ```
/// use ardm_core::portable_layers::normalize;
/// let mut x = [1.0, 3.0];
/// normalize(&mut x, 2, 0.0, 51, None, Some(&[10.0, 10.0])).unwrap();
/// assert_eq!(x, [9.0, 11.0]);
/// ```
pub fn normalize(
    x: &mut [f64],
    cols: usize,
    eps: f64,
    sum_bits: u32,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
) -> CoreResult<()> {
    check_bits(sum_bits, "normalize: sum bits")?;
    if cols == 0 || !x.len().is_multiple_of(cols) {
        if cols == 0 && x.is_empty() {
            return Ok(());
        }
        return Err(CoreError::new(format!(
            "normalize: {} values are not rows of {cols}",
            x.len()
        )));
    }
    for (what, param) in [("weight", weight), ("bias", bias)] {
        if let Some(p) = param {
            check_len(&format!("normalize: {what}"), p.len(), cols)?;
        }
    }
    run_normalize(x, cols, eps, sum_bits, weight, bias);
    Ok(())
}

// ---- the kernels (sizes checked by the functions above) ----------------------------------------

#[inline(always)]
fn rescale_kernel(
    y: &mut [f64],
    rows: usize,
    cols: usize,
    row_scales: &[f64],
    col_scales: &[f64],
    multiplier: Option<f64>,
    bias: Option<&[f64]>,
) {
    let shared = col_scales.len() == cols; // one row of column scales for every group
    for (index, (row, &rs)) in y.chunks_exact_mut(cols).zip(row_scales).enumerate() {
        let group = if shared { 0 } else { index / rows };
        let cs = &col_scales[group * cols..(group + 1) * cols];
        match (multiplier, bias) {
            (None, None) => {
                for (v, &c) in row.iter_mut().zip(cs) {
                    *v = (*v / rs) / c;
                }
            }
            (Some(m), None) => {
                for (v, &c) in row.iter_mut().zip(cs) {
                    *v = ((*v / rs) / c) * m;
                }
            }
            (None, Some(b)) => {
                for ((v, &c), &b) in row.iter_mut().zip(cs).zip(b) {
                    *v = (*v / rs) / c + b;
                }
            }
            (Some(m), Some(b)) => {
                for ((v, &c), &b) in row.iter_mut().zip(cs).zip(b) {
                    *v = ((*v / rs) / c) * m + b;
                }
            }
        }
    }
}

dispatch!(run_rescale, rescale_avx2, rescale_kernel(y: &mut [f64], rows: usize, cols: usize, row_scales: &[f64], col_scales: &[f64], multiplier: Option<f64>, bias: Option<&[f64]>));

#[inline(always)]
fn softmax_kernel(
    x: &mut [f64],
    cols: usize,
    sum_bits: u32,
    grid_bits: Option<u32>,
    scales: &mut [f64],
) {
    for (index, row) in x.chunks_exact_mut(cols).enumerate() {
        let top = row_max(row);
        let top = if top.is_finite() { top } else { 0.0 };
        for v in row.iter_mut() {
            *v = canonical(exp_k(*v - top));
        }
        let total = exact_row_sum(row, sum_bits);
        for v in row.iter_mut() {
            *v /= total;
        }
        if let Some(bits) = grid_bits {
            let scale = grid_scale(row_abs_max(row), bits);
            scales[index] = scale;
            for v in row.iter_mut() {
                *v = round_even(*v * scale);
            }
        }
    }
}

dispatch!(run_softmax, softmax_avx2, softmax_kernel(x: &mut [f64], cols: usize, sum_bits: u32, grid_bits: Option<u32>, scales: &mut [f64]));

#[inline(always)]
fn normalize_kernel(
    x: &mut [f64],
    cols: usize,
    eps: f64,
    sum_bits: u32,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
) {
    let count = cols as f64;
    for row in x.chunks_exact_mut(cols) {
        let mean = exact_row_sum(row, sum_bits) / count;
        for v in row.iter_mut() {
            *v -= mean;
        }
        // The largest square is the square of the largest magnitude (rounding is monotonic).
        let largest = row_abs_max(row);
        let m = largest * largest;
        let scale = grid_scale(m, sum_bits);
        let squares = grid_sum(row, scale, |v| v * v);
        let variance = canonical(squares / scale) / count;
        let denominator = (variance + eps).sqrt();
        for v in row.iter_mut() {
            *v /= denominator;
        }
        match (weight, bias) {
            (Some(w), Some(b)) => {
                for ((v, &w), &b) in row.iter_mut().zip(w).zip(b) {
                    *v = *v * w + b;
                }
            }
            (Some(w), None) => {
                for (v, &w) in row.iter_mut().zip(w) {
                    *v *= w;
                }
            }
            (None, Some(b)) => {
                for (v, &b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
            (None, None) => {}
        }
    }
}

dispatch!(run_normalize, normalize_avx2, normalize_kernel(x: &mut [f64], cols: usize, eps: f64, sum_bits: u32, weight: Option<&[f64]>, bias: Option<&[f64]>));

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values of every magnitude, with zeros, infinities and a NaN among them.
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut out: Vec<f64> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                unit * 2f64.powi(((s >> 3) % 40) as i32 - 20)
            })
            .collect();
        out[3] = 0.0;
        out[n / 2] = f64::NEG_INFINITY;
        out[n - 2] = f64::NAN;
        out
    }

    fn same_bits(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn the_dispatched_kernels_give_the_plain_kernels_bits() {
        let (rows, cols) = (37, 61);
        let input = values(rows * cols, 1);
        let (mut a, mut b) = (input.clone(), input.clone());
        let (mut sa, mut sb) = (vec![0.0; rows], vec![0.0; rows]);
        run_softmax(&mut a, cols, 46, Some(23), &mut sa);
        softmax_kernel(&mut b, cols, 46, Some(23), &mut sb);
        assert!(same_bits(&a, &b) && same_bits(&sa, &sb));

        let (weight, bias) = (values(cols, 2), values(cols, 3));
        let (mut a, mut b) = (input.clone(), input.clone());
        run_normalize(&mut a, cols, 1e-5, 46, Some(&weight), Some(&bias));
        normalize_kernel(&mut b, cols, 1e-5, 46, Some(&weight), Some(&bias));
        assert!(same_bits(&a, &b));

        let row_scales: Vec<f64> = (0..rows).map(|i| 2f64.powi(i as i32 * 7 - 100)).collect();
        let col_scales: Vec<f64> = (0..cols).map(|j| 2f64.powi(j as i32 - 30)).collect();
        let (mut a, mut b) = (input.clone(), input);
        run_rescale(
            &mut a,
            rows,
            cols,
            &row_scales,
            &col_scales,
            Some(0.3),
            Some(&bias),
        );
        rescale_kernel(
            &mut b,
            rows,
            cols,
            &row_scales,
            &col_scales,
            Some(0.3),
            Some(&bias),
        );
        assert!(same_bits(&a, &b));
    }

    #[test]
    fn softmax_rows_sum_to_one_and_follow_the_maximum() {
        let mut x = vec![1.0, 2.0, 3.0, f64::NEG_INFINITY];
        softmax(&mut x, 4, 50, None, &mut []).unwrap();
        assert!((x.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!(x[2] > x[1] && x[1] > x[0] && x[3] == 0.0);
    }

    #[test]
    fn bad_sizes_are_errors_not_panics() {
        let mut x = vec![0.0; 6];
        assert!(rescale(&mut x, 1, 2, 3, &[1.0], &[1.0; 3], None, None).is_err());
        assert!(rescale(&mut x, 1, 2, 3, &[1.0; 2], &[1.0; 4], None, None).is_err());
        assert!(rescale(&mut x, 1, 2, 3, &[1.0; 2], &[1.0; 3], None, Some(&[0.0])).is_err());
        assert!(rescale(&mut x, usize::MAX, 2, 3, &[], &[], None, None).is_err());
        assert!(softmax(&mut x, 4, 40, None, &mut []).is_err());
        assert!(softmax(&mut x, 0, 40, None, &mut []).is_err());
        assert!(softmax(&mut x, 3, 53, None, &mut []).is_err());
        assert!(softmax(&mut x, 3, 40, Some(20), &mut [0.0]).is_err());
        assert!(normalize(&mut x, 4, 1e-5, 40, None, None).is_err());
        assert!(normalize(&mut x, 3, 1e-5, 40, Some(&[1.0]), None).is_err());
        assert!(normalize(&mut x, 3, 1e-5, 0, None, None).is_err());
        assert!(softmax(&mut [], 0, 40, None, &mut []).is_ok());
    }
}
