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
/// otherwise (Li Chao tree), O(D) memory.
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
/// 2.7 candidates per end on average at D = 4000, most ranges a single one. (A branch-free
/// four-candidate version, values and losses interleaved, and two layers interleaved in one
/// sweep were all measured no faster.)
fn budget_curve_sorted(losses: &[f64]) -> Vec<f64> {
    let num_steps = losses.len();
    let mut curve = Vec::with_capacity(num_steps + 1);
    // Layer 1: one call from step 0 (the value as the layers compute it: 0 + e * L[0]).
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
        // f_layer(e) needs e >= layer; its argmin s >= layer - 1 (where f_{layer-1} is finite).
        let mut upper = num_steps - 1;
        for end in (layer..=num_steps).rev() {
            let lower = (prev_opt[end] as usize).max(layer - 1);
            // Rounding could cross the bounds; scan between them either way.
            let (lo, hi) = if lower <= upper {
                (lower, upper)
            } else {
                (upper, lower)
            };
            // Candidates s = lo..=hi; `length` = e - s is exact in f64.
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
