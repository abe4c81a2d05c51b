//! The budget dynamic program of Autoregressive Diffusion Models (Hoogeboom et al., ICLR 2022,
//! arXiv:2110.02037, Sec. 4 "Parallel generation" and Appendix A).
//!
//! An ARDM over `D` variables can generate several variables in one network call. Given the
//! expected per-variable loss `L[t]` of a variable generated at step `t` (with `t` variables
//! already known), a *policy* is a strictly increasing list of start steps
//! `0 = t_0 < t_1 < ... < t_{k-1} < D`; call `i` generates the variables `t_i .. t_{i+1}-1`
//! (with `t_k = D`), all conditioned on the first `t_i`. Its cost is the paper's
//!
//! ```text
//! cost = sum_i (t_{i+1} - t_i) * L[t_i]
//! ```
//!
//! accumulated left to right from `0.0` in exactly this order, so that [`policy_cost`] and the
//! dynamic program produce the same float bit for bit.
//!
//! The paper's DP (exact-`k` layers over end positions) is
//!
//! ```text
//! f_0(0) = 0,   f_0(e > 0) = inf,
//! f_j(e) = min_{s < e} f_{j-1}(s) + (e - s) * L[s],
//! ```
//!
//! and the reference implementation evaluates it in O(D^3) time and O(D^2) memory. For a fixed
//! layer the candidate `s` contributes a *line* in `e` (slope `L[s]`, intercept
//! `f_{j-1}(s) - s * L[s]`), so `f_j` is the lower envelope of lines queried at increasing `e`:
//!
//! * for non-increasing `L` (the sorted losses the models plan with) the slopes arrive in
//!   non-increasing order and a monotone convex hull trick answers a whole layer in O(D);
//! * for any other input a Li Chao tree answers a layer in O(D log D).
//!
//! For non-increasing `L` the step cost is Monge (see [`crate::lagrange`]), so the leftmost
//! argmins are monotone in both the end and the layer (Knuth, Yao):
//! `opt_{j-1}(e) <= opt_j(e) <= opt_j(e + 1)`. [`budget_curve`] scans only that range for each
//! end, a layer from right to left; the ranges telescope along diagonals, so all budgets cost
//! O(D^2) time with a short, branch-light inner loop (a few candidates per end).
//!
//! All budgets therefore cost O(D^2) time (O(D^2 log D) for unsorted input) and O(D) memory.
//! The line form (and the Knuth range) is only used to choose the argmin `s`; the stored value is
//! always recomputed as `f_{j-1}(s) + (e - s) * L[s]`, the cost of the policy it stands for.
//!
//! [`optimal_policy`] finds the policy for one budget `k`. For sorted losses it searches a price
//! per call ([`crate::lagrange`], O(D) per try, a few dozen tries); its cost equals the curve's
//! entry up to rounding (the two sum the same policy cost in different orders only when several
//! policies tie). For other losses (or [`PolicyMethod::Layers`]) it runs the layers in O(k D)
//! time without an O(D^2) table: it keeps a checkpoint of every `c ~ sqrt(k)`-th layer, then
//! recomputes one segment of `c` layers at a time with argmins and backtracks through it. The
//! recomputation runs the very same layer code as the forward pass, so the argmins agree and the
//! cost equals the entry of [`budget_curve`] bit for bit for unsorted losses.

use crate::error::{try_with_capacity, CoreError, CoreResult};
use crate::lagrange::{is_non_increasing, optimal_policy_by_price};
use crate::order::MAX_NUM_VARS;

/// Marks an empty Li Chao node.
const NO_LINE: u32 = u32::MAX;

/// Checks that `step_losses` is a non-empty list of finite, non-negative numbers whose costs
/// cannot overflow.
pub fn validate_step_losses(step_losses: &[f64]) -> CoreResult<()> {
    if step_losses.is_empty() {
        return Err(CoreError::new(
            "step_losses is empty: need the loss of at least one generation step",
        ));
    }
    let mut largest = 0.0f64;
    for (i, &loss) in step_losses.iter().enumerate() {
        if loss.is_nan() {
            return Err(CoreError::new(format!("step_losses[{i}] is NaN")));
        }
        if loss.is_infinite() {
            return Err(CoreError::new(format!(
                "step_losses[{i}] = {loss} is not finite"
            )));
        }
        if loss < 0.0 {
            return Err(CoreError::new(format!(
                "step_losses[{i}] = {loss} is negative; step losses are expected losses and must be >= 0"
            )));
        }
        largest = largest.max(loss);
    }
    // Costs are at most D * max(L); hull intercepts at most twice that. Keep a margin so that
    // no intermediate of the DP can overflow to infinity.
    if !(4.0 * step_losses.len() as f64 * largest).is_finite() {
        return Err(CoreError::new(format!(
            "step_losses are too large (max {largest:e}): the total cost would overflow"
        )));
    }
    Ok(())
}

/// Checks that `policy` is a valid policy for `num_steps` steps: non-empty, starting at 0,
/// strictly increasing and below `num_steps`.
pub fn validate_policy(policy: &[usize], num_steps: usize) -> CoreResult<()> {
    if policy.is_empty() {
        return Err(CoreError::new(
            "policy is empty: a policy needs at least one step, starting at 0",
        ));
    }
    if policy[0] != 0 {
        return Err(CoreError::new(format!(
            "policy must start at 0, got policy[0] = {}",
            policy[0]
        )));
    }
    for i in 1..policy.len() {
        if policy[i] <= policy[i - 1] {
            return Err(CoreError::new(format!(
                "policy must be strictly increasing, got policy[{}] = {} after policy[{}] = {}",
                i,
                policy[i],
                i - 1,
                policy[i - 1]
            )));
        }
    }
    let last = policy[policy.len() - 1];
    if last >= num_steps {
        return Err(CoreError::new(format!(
            "policy steps must be below the number of steps {num_steps}, got policy[{}] = {last}",
            policy.len() - 1
        )));
    }
    Ok(())
}

fn validate_budget(budget: usize) -> CoreResult<()> {
    if budget < 1 {
        return Err(CoreError::new(
            "budget must be at least 1 network call, got 0",
        ));
    }
    Ok(())
}

/// The cost `sum_i (t_{i+1} - t_i) * L[t_i]` of `policy` (paper Sec. 4), accumulated left to
/// right from `0.0`.
///
/// ```
/// use ardm_core::policy::policy_cost;
/// assert_eq!(policy_cost(&[3.0, 2.0, 1.0], &[0, 2]).unwrap(), 2.0 * 3.0 + 1.0 * 1.0);
/// ```
pub fn policy_cost(step_losses: &[f64], policy: &[usize]) -> CoreResult<f64> {
    validate_step_losses(step_losses)?;
    validate_policy(policy, step_losses.len())?;
    let num_steps = step_losses.len();
    let mut cost = 0.0f64;
    for (i, &start) in policy.iter().enumerate() {
        let end = policy.get(i + 1).copied().unwrap_or(num_steps);
        cost += (end - start) as f64 * step_losses[start];
    }
    Ok(cost)
}

/// The evenly spaced policy for `budget` calls over `num_steps` steps: `t_i = floor(i * D / k)`
/// for `i` in `0..k` with `k = min(budget, D)` (strictly increasing because `D / k >= 1`).
/// `num_steps` must lie in `1..=MAX_NUM_VARS` (2^32, the most variables of an order).
///
/// ```
/// use ardm_core::policy::naive_policy;
/// assert_eq!(naive_policy(10, 4).unwrap(), vec![0, 2, 5, 7]);
/// assert_eq!(naive_policy(3, 8).unwrap(), vec![0, 1, 2]);
/// assert!(naive_policy(1 << 40, 1 << 40).is_err());
/// ```
pub fn naive_policy(num_steps: usize, budget: usize) -> CoreResult<Vec<usize>> {
    if !(1..=MAX_NUM_VARS).contains(&num_steps) {
        return Err(CoreError::new(format!(
            "num_steps must lie in 1..={MAX_NUM_VARS} (2^32), got {num_steps}"
        )));
    }
    validate_budget(budget)?;
    let calls = budget.min(num_steps);
    let mut policy: Vec<usize> = try_with_capacity(calls, "the policy")?;
    for i in 0..calls {
        let start = (i as u128 * num_steps as u128 / calls as u128) as usize;
        if policy.last().is_none_or(|&last| start > last) {
            policy.push(start);
        }
    }
    Ok(policy)
}

/// Least cost with at most `k` calls for every `k` in `0..=D`; entry 0 is `+inf`.
///
/// Entry `k` is the minimum over policies with at most `k` steps, so the curve is
/// non-increasing; for non-increasing losses entry `D` equals the left-to-right sum of the
/// losses. O(D^2) time for non-increasing losses (Knuth's monotone argmins), O(D^2 log D)
/// otherwise (Li Chao tree), O(D) memory. For non-increasing losses and D >= 2048 it uses a
/// second thread of the rayon pool when one is free (`RAYON_NUM_THREADS=1` keeps it on one);
/// the result is the same bit for bit either way.
///
/// ```
/// use ardm_core::policy::budget_curve;
/// let curve = budget_curve(&[4.0, 2.0, 1.0]).unwrap();
/// assert_eq!(curve, vec![f64::INFINITY, 12.0, 8.0, 7.0]);
/// ```
pub fn budget_curve(step_losses: &[f64]) -> CoreResult<Vec<f64>> {
    validate_step_losses(step_losses)?;
    if is_non_increasing(step_losses) {
        return Ok(budget_curve_sorted(step_losses));
    }
    budget_curve_layers(step_losses)
}

/// [`budget_curve`] by the layer DP of [`Planner`] (hull or Li Chao tree), for any order: what
/// [`budget_curve`] runs for unsorted losses. Public for the benchmarks (the hull against the
/// Knuth ranges on sorted losses); not part of the API.
#[doc(hidden)]
pub fn budget_curve_layers(step_losses: &[f64]) -> CoreResult<Vec<f64>> {
    validate_step_losses(step_losses)?;
    let num_steps = step_losses.len();
    let mut planner = Planner::new(step_losses);
    let mut prev = first_layer(num_steps);
    let mut cur = vec![f64::INFINITY; num_steps + 1];
    let mut curve = vec![f64::INFINITY; num_steps + 1];
    let mut best = f64::INFINITY;
    for (layer, entry) in curve.iter_mut().enumerate().skip(1) {
        planner.layer::<false>(layer, &prev, &mut cur, &mut []);
        // "At most k calls": a prefix minimum over the exact-k layers; strict `<` keeps the
        // fewest calls among equal costs (optimal_policy applies the same rule).
        if cur[num_steps] < best {
            best = cur[num_steps];
        }
        *entry = best;
        std::mem::swap(&mut prev, &mut cur);
    }
    Ok(curve)
}

/// How [`optimal_policy_with`] finds a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyMethod {
    /// The price search for non-increasing losses, the layers for any other.
    #[default]
    Auto,
    /// The price search of [`crate::lagrange`]: O(D) per try; losses must be non-increasing.
    Price,
    /// The exact layer DP: O(k D) time (times log D for unsorted losses), O(sqrt(k) D) memory.
    Layers,
}

impl std::str::FromStr for PolicyMethod {
    type Err = CoreError;

    fn from_str(name: &str) -> CoreResult<Self> {
        match name {
            "auto" => Ok(PolicyMethod::Auto),
            "price" => Ok(PolicyMethod::Price),
            "layers" => Ok(PolicyMethod::Layers),
            _ => Err(CoreError::new(format!(
                "unknown policy method {name:?}; choose one of \"auto\", \"price\", \"layers\""
            ))),
        }
    }
}

/// The least-cost policy with at most `budget` calls (`budget > D` is treated as `D`), with the
/// fewest calls among equal costs.
///
/// Its [`policy_cost`] equals `budget_curve(step_losses)[budget]`: bit for bit for losses that
/// are not sorted, up to rounding (relative 1e-12) for non-increasing ones, which take the price
/// search of [`crate::lagrange`] (O(D) per try, a few ms at D = 16,000) instead of the O(k D)
/// layers. See [`optimal_policy_with`] to choose.
///
/// ```
/// use ardm_core::policy::{budget_curve, optimal_policy, policy_cost};
/// let losses = [4.0, 1.0, 1.0, 1.0];
/// let policy = optimal_policy(&losses, 2).unwrap();
/// assert_eq!(policy, vec![0, 1]);
/// assert_eq!(policy_cost(&losses, &policy).unwrap(), budget_curve(&losses).unwrap()[2]);
/// ```
pub fn optimal_policy(step_losses: &[f64], budget: usize) -> CoreResult<Vec<usize>> {
    optimal_policy_with(step_losses, budget, PolicyMethod::Auto)
}

/// [`optimal_policy`] by a chosen method; [`PolicyMethod::Price`] is an error for losses that
/// are not non-increasing.
///
/// ```
/// use ardm_core::policy::{optimal_policy_with, PolicyMethod};
/// let losses = [4.0, 3.0, 2.0, 1.0];
/// let by_price = optimal_policy_with(&losses, 2, PolicyMethod::Price).unwrap();
/// assert_eq!(by_price, optimal_policy_with(&losses, 2, PolicyMethod::Layers).unwrap());
/// ```
pub fn optimal_policy_with(
    step_losses: &[f64],
    budget: usize,
    method: PolicyMethod,
) -> CoreResult<Vec<usize>> {
    validate_step_losses(step_losses)?;
    validate_budget(budget)?;
    match method {
        PolicyMethod::Price => optimal_policy_by_price(step_losses, budget),
        PolicyMethod::Auto if is_non_increasing(step_losses) => {
            optimal_policy_by_price(step_losses, budget)
        }
        _ => optimal_policy_layers(step_losses, budget),
    }
}

/// [`optimal_policy`] by the layer DP with checkpoints (see the module docs).
fn optimal_policy_layers(step_losses: &[f64], budget: usize) -> CoreResult<Vec<usize>> {
    let num_steps = step_losses.len();
    if num_steps >= NO_LINE as usize {
        return Err(CoreError::new(format!(
            "too many steps for optimal_policy: {num_steps} (at most {})",
            NO_LINE - 1
        )));
    }
    let calls = budget.min(num_steps);
    let width = num_steps + 1;
    // Segment length ~ sqrt(k): sqrt(k) checkpoints forward, sqrt(k) layers of argmins back.
    let segment = ((calls as f64).sqrt().ceil() as usize).max(1);

    let mut planner = Planner::new(step_losses);
    let mut prev = first_layer(num_steps);
    let mut cur = vec![f64::INFINITY; width];
    let mut checkpoints = prev.clone();
    let mut best = f64::INFINITY;
    let mut best_layer = 0;
    for layer in 1..=calls {
        planner.layer::<false>(layer, &prev, &mut cur, &mut []);
        if cur[num_steps] < best {
            best = cur[num_steps];
            best_layer = layer;
        }
        std::mem::swap(&mut prev, &mut cur);
        if layer % segment == 0 && layer < calls {
            checkpoints.extend_from_slice(&prev);
        }
    }

    // Backtrack from (best_layer, D), one segment of layers at a time.
    let mut argmins = vec![0u32; segment.min(best_layer) * width];
    let mut starts_reversed = Vec::with_capacity(best_layer);
    let mut end = num_steps;
    let mut layer = best_layer;
    while layer >= 1 {
        let index = (layer - 1) / segment;
        let base = index * segment;
        prev.copy_from_slice(&checkpoints[index * width..(index + 1) * width]);
        for l in base + 1..=layer {
            let row = &mut argmins[(l - base - 1) * width..(l - base) * width];
            planner.layer::<true>(l, &prev, &mut cur, row);
            std::mem::swap(&mut prev, &mut cur);
        }
        for l in (base + 1..=layer).rev() {
            let start = argmins[(l - base - 1) * width + end] as usize;
            starts_reversed.push(start);
            end = start;
        }
        layer = base;
    }
    debug_assert_eq!(end, 0);
    starts_reversed.reverse();
    Ok(starts_reversed)
}

/// [`budget_curve`] for non-increasing losses. Layer `j` is computed from right to left, each
/// end scanning only `opt_{j-1}(e) ..= opt_j(e + 1)` for its leftmost argmin (module docs):
/// 2.7 candidates per end on average at D = 16,000, 70% of the ranges a single one, and the
/// argmin is the range's first candidate for 99.6% of the ends. The inner loop therefore only
/// asks whether any candidate beats the first (four lanes at once with AVX2, no branch that
/// depends on the range's length below four) and scans only when one does; and from
/// D = 2048 on, a second thread computes the left part of each layer (see [`knuth`]). Every
/// variant computes the same candidates with the same IEEE operations and picks the same
/// leftmost argmin, so the curve is the same bit for bit on every machine and thread count.
fn budget_curve_sorted(losses: &[f64]) -> Vec<f64> {
    knuth::curve(losses, knuth::Kernel::detect(), knuth::Split::DEFAULT)
}

/// The Knuth-range layers of [`budget_curve_sorted`].
///
/// The argmin of an end depends on its right neighbour's (the range's upper end), so a layer is
/// a chain from right to left. To split a layer at `m` across two threads, the left part starts
/// at `m - 1` with the widest upper bound `m - 2` instead of `opt_j(m)`: in exact arithmetic
/// the leftmost argmin over the wider range is the same (Knuth), and once both parts are done
/// [`fix_up`] recomputes the left part's ends with the exact bounds, from `m - 1` down, until an
/// argmin agrees with the speculative one (from there on both chains see the same bounds). That
/// is one end per layer in practice, and the result is the serial chain's, bit for bit. The
/// helper runs as the second half of a `rayon::join` and claims a layer's left part with an
/// atomic; whenever it has not claimed it by the time the caller's thread finishes the right
/// part, the caller computes the left part itself, so a busy or single-thread pool costs no
/// waiting.
mod knuth {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Entries after position D of the value and loss arrays: the four-lane loads start at a
    /// candidate `s <= D - 1` and read up to `s + 3`.
    const PAD: usize = 4;

    /// The inner loop: plain Rust, or the same comparisons four lanes at a time.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Kernel {
        Portable,
        /// Only [`Kernel::detect`] returns it, on a CPU with AVX2.
        #[cfg(target_arch = "x86_64")]
        Avx2,
    }

    impl Kernel {
        pub(super) fn detect() -> Self {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
            Kernel::Portable
        }
    }

    /// When to split layers across two threads.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Split {
        /// Split no layer below this many steps (the threads' start-up and one synchronization
        /// per layer would outweigh the gain).
        pub min_steps: usize,
        /// Split only layers of at least this many ends (at least 4).
        pub min_ends: usize,
    }

    impl Split {
        pub(super) const DEFAULT: Split = Split {
            min_steps: 2048,
            min_ends: 512,
        };
        #[cfg(test)]
        pub(super) const NEVER: Split = Split {
            min_steps: usize::MAX,
            min_ends: usize::MAX,
        };
    }

    /// One layer `j`: reads `f_{j-1}` and its argmins, writes `f_j` and its argmins.
    ///
    /// `losses` and the value arrays hold `D + 1 + PAD` entries, the argmin arrays `D + 1`. While
    /// a layer is computed nobody writes `prev`/`prev_opt`, and each end of `cur`/`cur_opt` is
    /// written by one thread only (the two parts of a split layer are disjoint).
    #[derive(Clone, Copy)]
    pub(super) struct Layer {
        pub layer: usize,
        pub losses: *const f64,
        pub prev: *const f64,
        pub prev_opt: *const u32,
        pub cur: *mut f64,
        pub cur_opt: *mut u32,
    }

    impl Layer {
        /// The leftmost argmin over `lo..=hi` of `f_{j-1}(s) + (e - s) * L[s]`, and its value:
        /// the scan of the original loop, candidate by candidate.
        ///
        /// # Safety
        /// `hi < D + 1` and the arrays as documented on [`Layer`].
        #[inline]
        unsafe fn scan(&self, end: usize, lo: usize, hi: usize) -> (f64, usize) {
            let prev = std::slice::from_raw_parts(self.prev, hi + 1);
            let losses = std::slice::from_raw_parts(self.losses, hi + 1);
            // `length` = e - s is exact in f64.
            let mut length = (end - lo) as f64;
            let mut value = prev[lo] + length * losses[lo];
            let mut arg = 0;
            let candidates = prev[lo + 1..=hi].iter().zip(&losses[lo + 1..=hi]);
            for (i, (&f, &loss)) in candidates.enumerate() {
                length -= 1.0;
                let v = f + length * loss;
                if v < value {
                    value = v;
                    arg = i + 1;
                }
            }
            (value, lo + arg)
        }

        /// Ends `last` down to `first`, the range of `last` ending at `upper`.
        ///
        /// # Safety
        /// `layer <= first <= last <= D`, `upper <= D - 1`, and the arrays as documented on
        /// [`Layer`]; for [`Kernel::Avx2`] the CPU has AVX2.
        pub(super) unsafe fn ends(&self, kernel: Kernel, first: usize, last: usize, upper: usize) {
            match kernel {
                Kernel::Portable => self.ends_portable(first, last, upper),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => self.ends_avx2(first, last, upper),
            }
        }

        /// # Safety
        /// As [`Layer::ends`].
        unsafe fn ends_portable(&self, first: usize, last: usize, mut upper: usize) {
            let layer = self.layer;
            for end in (first..=last).rev() {
                // f_layer(e) needs e >= layer; its argmin s >= layer - 1 (where f_{layer-1} is
                // finite).
                let lower = (*self.prev_opt.add(end) as usize).max(layer - 1);
                // Rounding could cross the bounds; scan between them either way.
                let (lo, hi) = if lower <= upper {
                    (lower, upper)
                } else {
                    (upper, lower)
                };
                let (value, arg) = self.scan(end, lo, hi);
                self.cur.add(end).write(value);
                self.cur_opt.add(end).write(arg as u32);
                upper = arg.min(end - 2).max(layer - 1);
            }
        }

        /// [`Layer::ends_portable`] with the test "does any candidate beat the first?" on four
        /// lanes: the values are the same IEEE products and sums (never fused), the first
        /// candidate's value is lane 0, and a range with a better candidate goes to
        /// [`Layer::tail_avx2`], which finds the same leftmost argmin.
        ///
        /// # Safety
        /// As [`Layer::ends`], on a CPU with AVX2.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn ends_avx2(&self, first: usize, last: usize, mut upper: usize) {
            use std::arch::x86_64::*;
            let layer = self.layer;
            let lanes = _mm256_set_pd(3.0, 2.0, 1.0, 0.0);
            for end in (first..=last).rev() {
                let lower = (*self.prev_opt.add(end) as usize).max(layer - 1);
                let (value, arg) = if lower <= upper {
                    let lo = lower;
                    let extra = upper - lo;
                    // Candidates lo..lo+3 (those past `upper` are masked out below; the loads
                    // stay inside the padding).
                    let length = _mm256_sub_pd(_mm256_set1_pd((end - lo) as i64 as f64), lanes);
                    let products = _mm256_mul_pd(length, _mm256_loadu_pd(self.losses.add(lo)));
                    let values = _mm256_add_pd(_mm256_loadu_pd(self.prev.add(lo)), products);
                    let first_value = _mm256_cvtsd_f64(values);
                    let better = _mm256_cmp_pd::<_CMP_LT_OQ>(values, _mm256_set1_pd(first_value));
                    let better = _mm256_movemask_pd(better) as u32;
                    if extra < 4 && better & ((2u32 << (extra & 3)) - 1) == 0 {
                        (first_value, lo)
                    } else {
                        self.tail_avx2(end, lo, upper, first_value)
                    }
                } else {
                    self.scan(end, upper, lower)
                };
                self.cur.add(end).write(value);
                self.cur_opt.add(end).write(arg as u32);
                upper = arg.min(end - 2).max(layer - 1);
            }
        }

        /// The leftmost argmin over `lo..=hi` given the first candidate's value: the least
        /// value (a minimum is exact in any order), then the first candidate that has it.
        ///
        /// # Safety
        /// `lo < hi <= D - 1`, the arrays as documented on [`Layer`], a CPU with AVX2.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[inline(never)]
        unsafe fn tail_avx2(
            &self,
            end: usize,
            lo: usize,
            hi: usize,
            first_value: f64,
        ) -> (f64, usize) {
            use std::arch::x86_64::*;
            let lanes = _mm256_set_pd(3.0, 2.0, 1.0, 0.0);
            let lane_index = _mm256_set_epi64x(3, 2, 1, 0);
            let infinity = _mm256_set1_pd(f64::INFINITY);
            let mut least = _mm256_set1_pd(first_value);
            let mut start = lo + 1;
            while start <= hi {
                let length = _mm256_sub_pd(_mm256_set1_pd((end - start) as i64 as f64), lanes);
                let products = _mm256_mul_pd(length, _mm256_loadu_pd(self.losses.add(start)));
                let values = _mm256_add_pd(_mm256_loadu_pd(self.prev.add(start)), products);
                let inside =
                    _mm256_cmpgt_epi64(_mm256_set1_epi64x((hi - start) as i64 + 1), lane_index);
                let values = _mm256_blendv_pd(infinity, values, _mm256_castsi256_pd(inside));
                least = _mm256_min_pd(least, values);
                start += 4;
            }
            let pair = _mm_min_pd(
                _mm256_castpd256_pd128(least),
                _mm256_extractf128_pd::<1>(least),
            );
            let least = _mm_cvtsd_f64(_mm_min_sd(pair, _mm_unpackhi_pd(pair, pair)));
            if least < first_value {
                let mut length = (end - lo) as f64;
                for s in lo + 1..=hi {
                    length -= 1.0;
                    let v = *self.prev.add(s) + length * *self.losses.add(s);
                    if v == least {
                        return (v, s);
                    }
                }
            }
            (first_value, lo)
        }
    }

    /// Recomputes the ends `last` down to `first` of a layer whose end `last + 1` is final, with
    /// the exact bounds, until an argmin agrees with the one already there; returns how many
    /// ends it recomputed.
    ///
    /// # Safety
    /// `layer <= first <= last < D`, the arrays as documented on [`Layer`], and every end of
    /// `first..=last + 1` written by [`Layer::ends`] (of any kernel, from any upper bound).
    pub(super) unsafe fn fix_up(view: &Layer, first: usize, last: usize) -> usize {
        let layer = view.layer;
        let mut recomputed = 0;
        for end in (first..=last).rev() {
            let upper = (*view.cur_opt.add(end + 1) as usize)
                .min(end - 1)
                .max(layer - 1);
            let lower = (*view.prev_opt.add(end) as usize).max(layer - 1);
            let (lo, hi) = if lower <= upper {
                (lower, upper)
            } else {
                (upper, lower)
            };
            let (value, arg) = view.scan(end, lo, hi);
            let agrees = *view.cur_opt.add(end) as usize == arg;
            view.cur.add(end).write(value);
            view.cur_opt.add(end).write(arg as u32);
            recomputed += 1;
            if agrees {
                break;
            }
        }
        recomputed
    }

    /// The two value arrays and two argmin arrays (layer `j` in `j % 2`), and the handshake of
    /// the split layers.
    struct Shared {
        losses: *const f64,
        values: [*mut f64; 2],
        opts: [*mut u32; 2],
        num_steps: usize,
        kernel: Kernel,
        /// The last layer whose left part may be claimed; `split` holds its split point.
        open: AtomicUsize,
        split: AtomicUsize,
        /// The last layer whose left part someone claimed.
        claimed: AtomicUsize,
        /// The last layer whose left part the helper finished.
        finished: AtomicUsize,
        stop: AtomicBool,
    }

    // SAFETY: the pointers are only dereferenced under the protocol of [`curve`]: in a split
    // layer the helper writes only the ends below the split point, the caller's thread only the
    // others until it has seen (acquire) the helper finish, and nobody writes the previous
    // layer.
    unsafe impl Sync for Shared {}

    impl Shared {
        fn view(&self, layer: usize) -> Layer {
            Layer {
                layer,
                losses: self.losses,
                prev: self.values[(layer - 1) % 2],
                prev_opt: self.opts[(layer - 1) % 2],
                cur: self.values[layer % 2],
                cur_opt: self.opts[layer % 2],
            }
        }

        /// Claims the left part of `layer` (its split point read after a successful claim).
        fn claim(&self, layer: usize) -> bool {
            let last = self.claimed.load(Ordering::Relaxed);
            last < layer
                && self
                    .claimed
                    .compare_exchange(last, layer, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        }

        /// The left part `layer..split` of a split layer, its first end from the widest bound.
        ///
        /// # Safety
        /// Called once per split layer, by whoever claimed it, while the layer is open.
        unsafe fn left(&self, layer: usize, split: usize) {
            let view = self.view(layer);
            view.ends(self.kernel, layer, split - 1, (split - 2).max(layer - 1));
        }

        /// The helper: claims the left part of every layer it sees opened in time.
        fn help(&self) {
            let mut next = 2;
            loop {
                let mut layer = 0;
                wait_until(|| {
                    layer = self.open.load(Ordering::Acquire);
                    layer >= next || self.stop.load(Ordering::Relaxed)
                });
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                next = layer + 1;
                if self.claim(layer) {
                    // The caller's thread waits for this layer now, so `split` is its own.
                    let split = self.split.load(Ordering::Relaxed);
                    // SAFETY: claimed once, while open.
                    unsafe { self.left(layer, split) };
                    self.finished.store(layer, Ordering::Release);
                }
            }
        }
    }

    fn wait_until(mut done: impl FnMut() -> bool) {
        let mut spins = 0u32;
        while !done() {
            if spins < 1 << 12 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Stops the helper however the caller's side ends.
    struct StopOnDrop<'a>(&'a AtomicBool);

    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// The whole curve for non-increasing losses (entry 0 is `+inf`), as documented on
    /// [`super::budget_curve_sorted`].
    pub(super) fn curve(losses: &[f64], kernel: Kernel, split: Split) -> Vec<f64> {
        let num_steps = losses.len();
        let width = num_steps + 1 + PAD;
        let mut padded = vec![0.0f64; width];
        padded[..num_steps].copy_from_slice(losses);
        // Layer 1: one call from step 0 (the value as the layers compute it: 0 + e * L[0]).
        let mut values = [vec![f64::INFINITY; width], vec![f64::INFINITY; width]];
        for (e, value) in values[1][1..=num_steps].iter_mut().enumerate() {
            *value = 0.0 + (e + 1) as f64 * losses[0];
        }
        let mut opts = [vec![0u32; num_steps + 1], vec![0u32; num_steps + 1]];
        let mut curve = Vec::with_capacity(num_steps + 1);
        curve.extend([f64::INFINITY, values[1][num_steps]]);
        let [v0, v1] = &mut values;
        let [o0, o1] = &mut opts;
        let shared = Shared {
            losses: padded.as_ptr(),
            values: [v0.as_mut_ptr(), v1.as_mut_ptr()],
            opts: [o0.as_mut_ptr(), o1.as_mut_ptr()],
            num_steps,
            kernel,
            open: AtomicUsize::new(0),
            split: AtomicUsize::new(0),
            claimed: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        };
        let min_ends = split.min_ends.max(4);
        if num_steps >= split.min_steps && num_steps > min_ends && rayon::current_num_threads() > 1
        {
            rayon::join(|| layers(&shared, min_ends, &mut curve), || shared.help());
        } else {
            layers(&shared, usize::MAX, &mut curve);
        }
        curve
    }

    /// Layers 2..=D on the caller's thread, splitting those of at least `min_ends` ends.
    fn layers(shared: &Shared, min_ends: usize, curve: &mut Vec<f64>) {
        let _stop = StopOnDrop(&shared.stop);
        let num_steps = shared.num_steps;
        let mut best = curve[1];
        // The share of a split layer's ends on the helper's side, nudged towards balance.
        let mut share = 0.5f64;
        for layer in 2..=num_steps {
            let view = shared.view(layer);
            let count = num_steps + 1 - layer;
            // SAFETY (every `unsafe` here): the arrays have the sizes documented on `Layer`;
            // the helper touches this layer only between `open` and `finished` and only the
            // ends below `split`.
            if count < min_ends {
                unsafe { view.ends(shared.kernel, layer, num_steps, num_steps - 1) };
            } else {
                let split = layer + ((count as f64 * share) as usize).clamp(2, count - 2);
                shared.split.store(split, Ordering::Relaxed);
                shared.open.store(layer, Ordering::Release);
                unsafe { view.ends(shared.kernel, split, num_steps, num_steps - 1) };
                if shared.claim(layer) {
                    unsafe { shared.left(layer, split) };
                } else if shared.finished.load(Ordering::Acquire) >= layer {
                    share = (share + 0.002).min(0.95);
                } else {
                    share = (share - 0.002).max(0.05);
                    wait_until(|| shared.finished.load(Ordering::Acquire) >= layer);
                }
                unsafe { fix_up(&view, layer, split - 1) };
            }
            // "At most k calls": a prefix minimum over the exact-k layers.
            let last = unsafe { *view.cur.add(num_steps) };
            if last < best {
                best = last;
            }
            curve.push(best);
        }
    }
}

/// Two powers of two whose product brings the largest loss into `[1, 2)` (1 for all zeros).
///
/// The hull's pruning test multiplies an intercept difference (a cost, up to D times the largest
/// loss) by a slope difference (a loss): for losses near 1e-300 that underflows to 0 and near
/// 1e200 it overflows, and the hull drops lines it needs. Scaling the slope differences by this
/// factor (exactly: a power of two, applied as two factors since it may exceed `f64::MAX`)
/// keeps the products within range and decides the same in exact arithmetic.
pub(crate) fn unit_scale(losses: &[f64]) -> [f64; 2] {
    let largest = losses.iter().fold(0.0f64, |a, &b| a.max(b));
    if largest <= 0.0 {
        return [1.0, 1.0];
    }
    let mut exponent = 0i32;
    let mut m = largest;
    while m >= 2.0 {
        m *= 0.5;
        exponent -= 1;
    }
    while m < 1.0 {
        m *= 2.0;
        exponent += 1;
    }
    let half = exponent / 2;
    [2f64.powi(half), 2f64.powi(exponent - half)]
}

/// Layer 0 of the DP: nothing generated costs nothing; any other end is unreachable.
fn first_layer(num_steps: usize) -> Vec<f64> {
    let mut layer = vec![f64::INFINITY; num_steps + 1];
    layer[0] = 0.0;
    layer
}

/// Scratch space for one DP layer, allocated once and reused by every layer.
struct Planner<'a> {
    losses: &'a [f64],
    /// Non-increasing losses: monotone convex hull trick; otherwise a Li Chao tree.
    monotone: bool,
    /// Hull as a deque of lines (struct of arrays): start step, the step as f64, `f_{j-1}(s)`,
    /// slope and intercept.
    hull_start: Vec<u32>,
    hull_step: Vec<f64>,
    hull_f: Vec<f64>,
    hull_slope: Vec<f64>,
    hull_intercept: Vec<f64>,
    /// Scales slope differences in the hull's pruning test (see [`unit_scale`]).
    unit: [f64; 2],
    /// Li Chao tree over end positions; each node holds a start step or [`NO_LINE`].
    tree: Vec<u32>,
}

impl<'a> Planner<'a> {
    fn new(losses: &'a [f64]) -> Self {
        let monotone = losses.windows(2).all(|w| w[1] <= w[0]);
        Self::with_method(losses, monotone)
    }

    fn with_method(losses: &'a [f64], monotone: bool) -> Self {
        let n = losses.len() + 1;
        let (hull, tree) = if monotone { (n, 0) } else { (0, 4 * n) };
        Planner {
            losses,
            monotone,
            unit: unit_scale(losses),
            hull_start: vec![0; hull],
            hull_step: vec![0.0; hull],
            hull_f: vec![0.0; hull],
            hull_slope: vec![0.0; hull],
            hull_intercept: vec![0.0; hull],
            tree: vec![NO_LINE; tree],
        }
    }

    /// Computes `cur = f_layer` from `prev = f_{layer-1}`; with `RECORD`, also the argmin start
    /// step of every end position into `argmin`.
    fn layer<const RECORD: bool>(
        &mut self,
        layer: usize,
        prev: &[f64],
        cur: &mut [f64],
        argmin: &mut [u32],
    ) {
        cur[..layer].fill(f64::INFINITY);
        if self.monotone {
            self.layer_hull::<RECORD>(layer, prev, cur, argmin);
        } else {
            self.layer_li_chao::<RECORD>(layer, prev, cur, argmin);
        }
    }

    /// Monotone convex hull trick: slopes `L[s]` arrive non-increasing, queries `e` increase.
    fn layer_hull<const RECORD: bool>(
        &mut self,
        layer: usize,
        prev: &[f64],
        cur: &mut [f64],
        argmin: &mut [u32],
    ) {
        let losses = self.losses;
        let num_steps = losses.len();
        let starts = &mut self.hull_start[..];
        let start_fs = &mut self.hull_f[..];
        let start_steps = &mut self.hull_step[..];
        let slopes = &mut self.hull_slope[..];
        let intercepts = &mut self.hull_intercept[..];
        let mut head = 0usize;
        let mut tail = 0usize;
        for end in layer..=num_steps {
            // Keep the live hull at the front of its arrays so that it stays in L1 cache; the
            // dead prefix is at least as long as what moves, so this is amortized O(1).
            if head >= 64 && head >= tail - head {
                for array in [
                    &mut *start_fs,
                    &mut *start_steps,
                    &mut *slopes,
                    &mut *intercepts,
                ] {
                    array.copy_within(head..tail, 0);
                }
                starts.copy_within(head..tail, 0);
                tail -= head;
                head = 0;
            }
            // 1. Add the line of start step s = end - 1: y(e) = f(s) + (e - s) * L[s].
            let s = end - 1;
            let f_s = prev[s];
            if f_s.is_finite() {
                let slope = losses[s];
                let s_f = s as f64;
                let intercept = f_s - s_f * slope;
                let mut keep = true;
                while tail > head {
                    let last = tail - 1;
                    if slopes[last] == slope {
                        // Parallel: the lower line dominates; on a tie keep the earlier start.
                        if intercepts[last] <= intercept {
                            keep = false;
                            break;
                        }
                        tail -= 1;
                        continue;
                    }
                    if tail - head >= 2 {
                        // Drop `last` if the new line overtakes `first` no later than `last` does.
                        let first = tail - 2;
                        let [u0, u1] = self.unit;
                        let drop_last = (slopes[first] - slopes[last]) * u0 * u1;
                        let drop_new = (slopes[first] - slope) * u0 * u1;
                        let lhs = (intercept - intercepts[first]) * drop_last;
                        let rhs = (intercepts[last] - intercepts[first]) * drop_new;
                        if lhs <= rhs {
                            tail -= 1;
                            continue;
                        }
                    }
                    break;
                }
                if keep {
                    starts[tail] = s as u32;
                    start_fs[tail] = f_s;
                    start_steps[tail] = s_f;
                    slopes[tail] = slope;
                    intercepts[tail] = intercept;
                    tail += 1;
                }
            }
            // 2. Query at e = end, comparing the exact values f(s) + (e - s) * L[s].
            let end_f = end as f64;
            let mut best = start_fs[head] + (end_f - start_steps[head]) * slopes[head];
            while tail - head >= 2 {
                let next = start_fs[head + 1] + (end_f - start_steps[head + 1]) * slopes[head + 1];
                if next <= best {
                    head += 1;
                    best = next;
                } else {
                    break;
                }
            }
            cur[end] = best;
            if RECORD {
                argmin[end] = starts[head];
            }
        }
    }

    /// Li Chao tree over the end positions `layer..=D`, for losses in any order.
    fn layer_li_chao<const RECORD: bool>(
        &mut self,
        layer: usize,
        prev: &[f64],
        cur: &mut [f64],
        argmin: &mut [u32],
    ) {
        let losses = self.losses;
        let num_steps = losses.len();
        let tree = &mut self.tree[..];
        tree.fill(NO_LINE);
        // The exact value of start step s at end position x (x may lie left of s inside the
        // tree; (x - s) is exact in f64 for any realistic D).
        let value = |s: u32, x: usize| -> f64 {
            let s = s as usize;
            prev[s] + (x as f64 - s as f64) * losses[s]
        };
        for end in layer..=num_steps {
            let s = end - 1;
            if prev[s].is_finite() {
                // Insert line s.
                let mut candidate = s as u32;
                let (mut node, mut lo, mut hi) = (1usize, layer, num_steps);
                loop {
                    let held = tree[node];
                    if held == NO_LINE {
                        tree[node] = candidate;
                        break;
                    }
                    let mid = lo + (hi - lo) / 2;
                    let (winner, loser) = if value(candidate, mid) < value(held, mid) {
                        (candidate, held)
                    } else {
                        (held, candidate)
                    };
                    tree[node] = winner;
                    if lo == hi {
                        break;
                    }
                    candidate = loser;
                    if value(loser, lo) < value(winner, lo) {
                        node *= 2;
                        hi = mid;
                    } else if value(loser, hi) < value(winner, hi) {
                        node = 2 * node + 1;
                        lo = mid + 1;
                    } else {
                        break;
                    }
                }
            }
            // Query at end: the best line on the root-to-leaf path.
            let (mut node, mut lo, mut hi) = (1usize, layer, num_steps);
            let mut best = f64::INFINITY;
            let mut best_start = NO_LINE;
            loop {
                let held = tree[node];
                if held != NO_LINE {
                    let v = value(held, end);
                    if v < best {
                        best = v;
                        best_start = held;
                    }
                }
                if lo == hi {
                    break;
                }
                let mid = lo + (hi - lo) / 2;
                if end <= mid {
                    node *= 2;
                    hi = mid;
                } else {
                    node = 2 * node + 1;
                    lo = mid + 1;
                }
            }
            cur[end] = best;
            if RECORD {
                argmin[end] = best_start;
            }
        }
    }

    #[cfg(test)]
    fn is_monotone(&self) -> bool {
        self.monotone
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Least cost with exactly k calls for every k, by enumerating every policy.
    fn brute_force_curve(losses: &[f64]) -> Vec<f64> {
        let n = losses.len();
        let mut exact = vec![f64::INFINITY; n + 1];
        for mask in 0u32..(1u32 << (n - 1)) {
            let mut policy = vec![0usize];
            policy.extend((1..n).filter(|&t| mask & (1 << (t - 1)) != 0));
            let cost = policy_cost(losses, &policy).unwrap();
            let k = policy.len();
            exact[k] = exact[k].min(cost);
        }
        let mut best = f64::INFINITY;
        exact
            .iter()
            .map(|&c| {
                best = best.min(c);
                best
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        if a.is_infinite() || b.is_infinite() {
            return a == b;
        }
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()) + 1e-300
    }

    fn check_against_brute_force(losses: &[f64]) {
        let curve = budget_curve(losses).unwrap();
        let expected = brute_force_curve(losses);
        assert_eq!(curve.len(), expected.len());
        for k in 0..curve.len() {
            assert!(
                close(curve[k], expected[k]),
                "losses {losses:?}, k {k}: dp {} vs brute force {}",
                curve[k],
                expected[k]
            );
        }
        // The layers (hull or Li Chao tree) and their policies agree bit for bit; the price
        // search on sorted losses agrees up to rounding.
        let layers = budget_curve_layers(losses).unwrap();
        let sorted = is_non_increasing(losses);
        for k in 1..=losses.len() + 1 {
            let entry = curve[k.min(losses.len())];
            assert!(
                close(layers[k.min(losses.len())], entry),
                "losses {losses:?}, k {k}"
            );
            for method in [PolicyMethod::Auto, PolicyMethod::Layers] {
                let policy = optimal_policy_with(losses, k, method).unwrap();
                assert!(policy.len() <= k);
                validate_policy(&policy, losses.len()).unwrap();
                let cost = policy_cost(losses, &policy).unwrap();
                if sorted && method == PolicyMethod::Auto {
                    assert!(
                        close(cost, entry),
                        "losses {losses:?}, k {k}: {cost} vs {entry}"
                    );
                } else {
                    let exact = layers[k.min(losses.len())];
                    assert_eq!(cost.to_bits(), exact.to_bits(), "losses {losses:?}, k {k}");
                }
            }
        }
    }

    /// A tiny deterministic generator for test inputs (SplitMix64).
    pub(crate) fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn uniform(state: &mut u64) -> f64 {
        (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn small_examples() {
        check_against_brute_force(&[1.0]);
        check_against_brute_force(&[0.0]);
        check_against_brute_force(&[4.0, 2.0, 1.0]);
        check_against_brute_force(&[0.0, 0.0, 0.0, 0.0]);
        check_against_brute_force(&[1.0, 1.0, 1.0, 1.0, 1.0]);
        check_against_brute_force(&[1.0, 5.0, 0.0, 3.0, 3.0, 0.5]);
        check_against_brute_force(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        check_against_brute_force(&[9.0, 8.0, 8.0, 8.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn random_losses_match_brute_force() {
        let mut state = 7u64;
        for trial in 0..300 {
            let n = 1 + (splitmix(&mut state) % 10) as usize;
            let mut losses: Vec<f64> = (0..n)
                .map(|_| match trial % 3 {
                    0 => uniform(&mut state) * 10.0,
                    1 => (splitmix(&mut state) % 3) as f64, // ties and zeros
                    _ => uniform(&mut state).powi(3) * 1e3,
                })
                .collect();
            if trial % 2 == 0 {
                losses.sort_by(|a, b| b.partial_cmp(a).unwrap());
            }
            check_against_brute_force(&losses);
        }
    }

    #[test]
    fn sorted_curve_ends_at_the_sum() {
        let mut state = 3u64;
        let mut losses: Vec<f64> = (0..500).map(|_| uniform(&mut state) * 5.0).collect();
        losses.sort_by(|a, b| b.partial_cmp(a).unwrap());
        let curve = budget_curve(&losses).unwrap();
        let sum = losses.iter().fold(0.0, |acc, &l| acc + l);
        assert_eq!(curve[losses.len()], sum);
        assert!(curve.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn hull_and_li_chao_agree_on_sorted_losses() {
        let mut state = 11u64;
        let n = 300;
        let mut losses: Vec<f64> = (0..n)
            .map(|t| 4.0 / (1.0 + t as f64 / 30.0) + 0.05 * uniform(&mut state))
            .collect();
        losses.sort_by(|a, b| b.partial_cmp(a).unwrap());
        let mut hull = Planner::with_method(&losses, true);
        let mut tree = Planner::with_method(&losses, false);
        assert!(hull.is_monotone() && !tree.is_monotone());
        let mut prev_h = first_layer(n);
        let mut prev_t = first_layer(n);
        let mut cur_h = vec![0.0; n + 1];
        let mut cur_t = vec![0.0; n + 1];
        for layer in 1..=n {
            hull.layer::<false>(layer, &prev_h, &mut cur_h, &mut []);
            tree.layer::<false>(layer, &prev_t, &mut cur_t, &mut []);
            for e in layer..=n {
                assert!(close(cur_h[e], cur_t[e]), "layer {layer} end {e}");
            }
            std::mem::swap(&mut prev_h, &mut cur_h);
            std::mem::swap(&mut prev_t, &mut cur_t);
        }
    }

    #[test]
    fn optimal_policy_is_exact_for_many_budgets() {
        let mut state = 5u64;
        for &sorted in &[true, false] {
            let mut losses: Vec<f64> = (0..200).map(|_| uniform(&mut state) * 3.0).collect();
            if sorted {
                losses.sort_by(|a, b| b.partial_cmp(a).unwrap());
            }
            let curve = budget_curve(&losses).unwrap();
            let layers = budget_curve_layers(&losses).unwrap();
            for budget in [1, 2, 3, 7, 10, 50, 99, 199, 200, 1000] {
                let policy = optimal_policy(&losses, budget).unwrap();
                assert!(policy.len() <= budget);
                let cost = policy_cost(&losses, &policy).unwrap();
                let entry = curve[budget.min(200)];
                if sorted {
                    assert!(close(cost, entry), "budget {budget}: {cost} vs {entry}");
                } else {
                    assert_eq!(cost.to_bits(), entry.to_bits());
                }
                let policy = optimal_policy_with(&losses, budget, PolicyMethod::Layers).unwrap();
                let cost = policy_cost(&losses, &policy).unwrap();
                assert_eq!(cost.to_bits(), layers[budget.min(200)].to_bits());
            }
        }
    }

    #[test]
    fn knuth_ranges_agree_with_the_hull_layers() {
        let mut state = 13u64;
        for trial in 0..120 {
            let n = 1 + (splitmix(&mut state) % 80) as usize;
            let mut losses: Vec<f64> = (0..n)
                .map(|t| match trial % 5 {
                    0 => uniform(&mut state) * 10.0,
                    // Small integers: every cost is exact, so ties are exact too.
                    1 => (splitmix(&mut state) % 4) as f64,
                    2 => 10f64.powf(uniform(&mut state) * 120.0 - 60.0),
                    3 => 4.0 / (1.0 + t as f64 / 10.0) + 0.01 * uniform(&mut state),
                    _ => f64::from((splitmix(&mut state) % 2) as u8),
                })
                .collect();
            losses.sort_by(|a, b| b.total_cmp(a));
            let knuth = budget_curve_sorted(&losses);
            let layers = budget_curve_layers(&losses).unwrap();
            for k in 1..=n {
                if trial % 5 == 1 || trial % 5 == 4 {
                    assert_eq!(knuth[k], layers[k], "losses {losses:?}, k {k}");
                } else {
                    assert!(close(knuth[k], layers[k]), "losses {losses:?}, k {k}");
                }
            }
        }
    }

    /// The Knuth-range loop as it was before the lane kernel and the split layers (kept
    /// verbatim): every variant of [`knuth::curve`] must reproduce it bit for bit.
    fn serial_knuth_curve(losses: &[f64]) -> Vec<f64> {
        let num_steps = losses.len();
        let mut curve = Vec::with_capacity(num_steps + 1);
        let mut prev: Vec<f64> = (0..=num_steps)
            .map(|e| 0.0 + e as f64 * losses[0])
            .collect();
        prev[0] = f64::INFINITY;
        let mut prev_opt = vec![0u32; num_steps + 1];
        let mut cur = vec![f64::INFINITY; num_steps + 1];
        let mut cur_opt = vec![0u32; num_steps + 1];
        let mut best = prev[num_steps];
        curve.extend([f64::INFINITY, best]);
        for layer in 2..=num_steps {
            let mut upper = num_steps - 1;
            for end in (layer..=num_steps).rev() {
                let lower = (prev_opt[end] as usize).max(layer - 1);
                let (lo, hi) = if lower <= upper {
                    (lower, upper)
                } else {
                    (upper, lower)
                };
                let mut length = (end - lo) as f64;
                let mut value = prev[lo] + length * losses[lo];
                let mut arg = 0;
                let candidates = prev[lo + 1..=hi].iter().zip(&losses[lo + 1..=hi]);
                for (i, (&f, &loss)) in candidates.enumerate() {
                    length -= 1.0;
                    let v = f + length * loss;
                    if v < value {
                        value = v;
                        arg = i + 1;
                    }
                }
                let arg = lo + arg;
                cur[end] = value;
                cur_opt[end] = arg as u32;
                upper = arg.min(end - 2).max(layer - 1);
            }
            if cur[num_steps] < best {
                best = cur[num_steps];
            }
            curve.push(best);
            std::mem::swap(&mut prev, &mut cur);
            std::mem::swap(&mut prev_opt, &mut cur_opt);
        }
        curve
    }

    /// Sorted (non-increasing) test losses of several kinds: smooth, noisy, tied small integers,
    /// 0/1, and magnitudes spread over 120 decades (where rounding decides many comparisons).
    fn sorted_test_losses(kind: usize, n: usize, state: &mut u64) -> Vec<f64> {
        let mut losses: Vec<f64> = (0..n)
            .map(|t| match kind % 6 {
                0 => uniform(state) * 10.0,
                1 => (splitmix(state) % 4) as f64,
                2 => 10f64.powf(uniform(state) * 120.0 - 60.0),
                3 => 4.0 / (1.0 + t as f64 / 10.0) + 0.01 * uniform(state),
                4 => f64::from((splitmix(state) % 2) as u8),
                _ => {
                    let known = t as f64 / n as f64;
                    0.3 + 4.5 * (1.0 - known).powi(2) + 0.02 * uniform(state)
                }
            })
            .collect();
        losses.sort_by(|a, b| b.total_cmp(a));
        losses
    }

    fn assert_same_bits(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x.to_bits(), y.to_bits(), "{what}, k {k}: {x} vs {y}");
        }
    }

    #[test]
    fn knuth_kernels_and_split_layers_match_the_serial_loop() {
        let mut kernels = vec![knuth::Kernel::Portable];
        if knuth::Kernel::detect() != knuth::Kernel::Portable {
            kernels.push(knuth::Kernel::detect());
        }
        // Split every layer of at least 4 ends, however small the input.
        let always = knuth::Split {
            min_steps: 0,
            min_ends: 4,
        };
        let mut state = 17u64;
        for trial in 0..240 {
            let n = 1 + (splitmix(&mut state) % 120) as usize;
            let losses = sorted_test_losses(trial, n, &mut state);
            let expected = serial_knuth_curve(&losses);
            for &kernel in &kernels {
                for split in [knuth::Split::NEVER, always, knuth::Split::DEFAULT] {
                    let curve = knuth::curve(&losses, kernel, split);
                    assert_same_bits(
                        &curve,
                        &expected,
                        &format!("{kernel:?} {split:?} {losses:?}"),
                    );
                }
            }
        }
        // Sizes where the default splits layers (and the helper thread runs).
        for (kind, n) in [(5, 2048), (2, 2500), (1, 2100), (0, 3000)] {
            let losses = sorted_test_losses(kind, n, &mut state);
            let expected = serial_knuth_curve(&losses);
            for &kernel in &kernels {
                let curve = knuth::curve(&losses, kernel, knuth::Split::DEFAULT);
                assert_same_bits(
                    &curve,
                    &expected,
                    &format!("{kernel:?}, kind {kind}, n {n}"),
                );
            }
            assert_same_bits(&budget_curve(&losses).unwrap(), &expected, "budget_curve");
        }
    }

    #[test]
    fn fix_up_restores_the_serial_chain_from_any_upper_bound() {
        // Each layer split at every point, its left part started from any upper bound (too
        // narrow ones too, which make the speculative chain wrong for a while): the fix-up
        // recomputes ends until the chains meet, and the layer is the serial one bit for bit.
        let mut state = 23u64;
        let mut longest = 0;
        for trial in 0..36 {
            let n = 4 + (splitmix(&mut state) % 28) as usize;
            let losses = sorted_test_losses(trial, n, &mut state);
            let width = n + 1 + 4;
            let mut padded = vec![0.0; width];
            padded[..n].copy_from_slice(&losses);
            let mut prev = vec![f64::INFINITY; width];
            for (e, value) in prev[1..=n].iter_mut().enumerate() {
                *value = 0.0 + (e + 1) as f64 * losses[0];
            }
            let mut prev_opt = vec![0u32; n + 1];
            for layer in 2..=n {
                let mut exact = vec![f64::INFINITY; width];
                let mut exact_opt = vec![0u32; n + 1];
                let view = knuth::Layer {
                    layer,
                    losses: padded.as_ptr(),
                    prev: prev.as_ptr(),
                    prev_opt: prev_opt.as_ptr(),
                    cur: exact.as_mut_ptr(),
                    cur_opt: exact_opt.as_mut_ptr(),
                };
                // SAFETY: the arrays have the sizes `Layer` documents; one thread.
                unsafe { view.ends(knuth::Kernel::Portable, layer, n, n - 1) };
                for split in layer + 1..=n {
                    for upper in layer - 1..=split - 2 {
                        let mut cur = vec![f64::INFINITY; width];
                        let mut cur_opt = vec![0u32; n + 1];
                        let view = knuth::Layer {
                            cur: cur.as_mut_ptr(),
                            cur_opt: cur_opt.as_mut_ptr(),
                            ..view
                        };
                        let kernel = knuth::Kernel::detect();
                        // SAFETY: as above.
                        let recomputed = unsafe {
                            view.ends(kernel, split, n, n - 1);
                            view.ends(kernel, layer, split - 1, upper);
                            knuth::fix_up(&view, layer, split - 1)
                        };
                        longest = longest.max(recomputed);
                        assert_same_bits(&cur[layer..=n], &exact[layer..=n], "values");
                        assert_eq!(cur_opt[layer..], exact_opt[layer..], "argmins");
                    }
                }
                prev = exact;
                prev_opt = exact_opt;
            }
        }
        assert!(
            longest > 1,
            "no speculative chain was ever wrong: the test tests nothing"
        );
    }

    #[test]
    fn hull_layers_at_extreme_scales() {
        // Without the unit scale the hull's pruning products underflow (1e-300 * 1e-300) or
        // overflow (1e200 * 1e200) and the layers lose the optimum.
        let mut state = 29u64;
        let mut base: Vec<f64> = (0..120).map(|_| uniform(&mut state) * 3.0).collect();
        base.sort_by(|a, b| b.total_cmp(a));
        for scale in [1e-300, 1e-150, 1.0, 1e150, 1e250] {
            let losses: Vec<f64> = base.iter().map(|l| l * scale).collect();
            let knuth = budget_curve(&losses).unwrap();
            let layers = budget_curve_layers(&losses).unwrap();
            for k in 1..=losses.len() {
                assert!(close(knuth[k], layers[k]), "scale {scale:e}, k {k}");
                let policy = optimal_policy_with(&losses, k, PolicyMethod::Layers).unwrap();
                let cost = policy_cost(&losses, &policy).unwrap();
                assert_eq!(
                    cost.to_bits(),
                    layers[k].to_bits(),
                    "scale {scale:e}, k {k}"
                );
            }
        }
    }

    #[test]
    fn policy_methods_parse() {
        assert_eq!("auto".parse::<PolicyMethod>().unwrap(), PolicyMethod::Auto);
        assert_eq!(
            "price".parse::<PolicyMethod>().unwrap(),
            PolicyMethod::Price
        );
        assert_eq!(
            "layers".parse::<PolicyMethod>().unwrap(),
            PolicyMethod::Layers
        );
        let err = "fast".parse::<PolicyMethod>().unwrap_err();
        assert!(err.0.contains("unknown policy method") && err.0.contains("layers"));
    }

    #[test]
    fn naive_policies() {
        assert_eq!(naive_policy(10, 1).unwrap(), vec![0]);
        assert_eq!(naive_policy(10, 3).unwrap(), vec![0, 3, 6]);
        assert_eq!(naive_policy(10, 10).unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(naive_policy(4, 100).unwrap(), vec![0, 1, 2, 3]);
        assert!(naive_policy(0, 1).is_err());
        assert!(naive_policy(5, 0).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(budget_curve(&[]).unwrap_err().0.contains("empty"));
        assert!(budget_curve(&[1.0, f64::NAN])
            .unwrap_err()
            .0
            .contains("[1] is NaN"));
        assert!(budget_curve(&[f64::INFINITY])
            .unwrap_err()
            .0
            .contains("not finite"));
        assert!(budget_curve(&[f64::NEG_INFINITY]).is_err());
        let err = budget_curve(&[1.0, 2.0, -0.5]).unwrap_err().0;
        assert!(
            err.contains("step_losses[2] = -0.5") && err.contains("negative"),
            "{err}"
        );
        assert!(budget_curve(&[f64::MAX, 1.0])
            .unwrap_err()
            .0
            .contains("overflow"));
        assert!(optimal_policy(&[1.0], 0).unwrap_err().0.contains("budget"));
        assert!(policy_cost(&[1.0, 1.0], &[])
            .unwrap_err()
            .0
            .contains("empty"));
        assert!(policy_cost(&[1.0, 1.0], &[1])
            .unwrap_err()
            .0
            .contains("start at 0"));
        assert!(policy_cost(&[1.0, 1.0, 1.0], &[0, 2, 1])
            .unwrap_err()
            .0
            .contains("strictly increasing"));
        assert!(policy_cost(&[1.0, 1.0, 1.0], &[0, 0]).is_err());
        assert!(policy_cost(&[1.0, 1.0], &[0, 2])
            .unwrap_err()
            .0
            .contains("below"));
    }

    pub(crate) fn loss_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            (0u8..4).prop_map(f64::from),
            0.0f64..10.0,
            (0.0f64..1.0).prop_map(|x| x * x * x * 1e6),
        ]
    }

    proptest! {
        #[test]
        fn dp_matches_brute_force(losses in prop::collection::vec(loss_value(), 1..=9), sort in any::<bool>()) {
            let mut losses = losses;
            if sort {
                losses.sort_by(|a, b| b.partial_cmp(a).unwrap());
            }
            check_against_brute_force(&losses);
        }
    }
}
