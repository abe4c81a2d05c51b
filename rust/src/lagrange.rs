//! Budget policies for sorted step losses by a price per network call (Lagrangian relaxation,
//! also known as the "Aliens trick" or WQS binary search), for one stage or for the stages of an
//! upscale ARDM sharing one budget (Hoogeboom et al., ICLR 2022, arXiv:2110.02037, Sec. 4).
//!
//! With non-increasing losses the cost of a step, `w(s, e) = (e - s) * L[s]`, is Monge:
//! `w(a, c) + w(b, d) <= w(a, d) + w(b, c)` for `a <= b <= c <= d` (the difference is
//! `(d - c) * (L[a] - L[b]) >= 0`). So the least cost `f(k)` with `k` calls is convex in `k`, and
//! a price `p` per call turns the budget into a penalty: one O(D) monotone hull pass solves
//! `min over policies of cost + p * calls`, and the policy it returns is optimal for its own
//! number of calls. The search keeps a bracket of two such policies, one with fewer calls than
//! the budget and one with more, and tries: a price predicted from how the call count of smooth
//! losses falls with the price (about `price^(-1/2)`); the
//! middle of the price bracket when a prediction brings nothing new; and the chord, the price at
//! which the two ends tie, which finds the vertex of the curve farthest below it or shows there
//! is none. At D = 16,000 that takes 1 to 15 passes for realistic losses.
//!
//! Ties. Where `f` is straight between two call counts, one price is optimal for all of them and
//! a pass may return either end, so the budget itself may never come out of a pass. When a chord
//! has no policy below it, the two policies at its ends (`A` with `k1 < k` calls, `B` with
//! `k2 > k`) are both optimal at its price, and `splice` joins them into one with exactly `k`
//! calls: the first `i + 1` starts of `B`, then the starts of `A` after `a_j`, where
//! `a_j <= b_i < b_{i+1} <= a_{j+1}` and `i - j = k - k1`. By the Monge inequality this policy and
//! the complementary one cost no more than `A` and `B` together, so both are optimal at that price
//! and the spliced one costs exactly `f(k)`. Such an `i` always exists: `i - j(i)` grows from 0 to
//! `k2 - k1`, and only in steps of one, each at an `i` where `B`'s step lies inside one of `A`'s.
//!
//! Stages. The expected loss of an upscale ARDM is the sum of its stages' costs, each convex in
//! its own calls, so one common price splits a total budget optimally: each stage solves its own
//! pass at that price, and the stage budgets are the call counts that come out (between the two
//! ends of a straight stretch, spliced as above, filled in stage order).

use crate::error::{CoreError, CoreResult};
use crate::policy::{unit_scale, validate_step_losses};

/// At most this many priced passes per search (each O(D)); the search usually needs 1 to 15.
const MAX_PASSES: usize = 200;

/// Below this many calls between the two ends of the bracket, the search only takes chords.
const CHORD_GAP: usize = 8;

/// A policy per stage and the budget each stage was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    /// Calls given to each stage: `1 <= budgets[s] <= D_s`, summing to `min(budget, sum D_s)`.
    /// A stage whose cost stops falling before its budget runs fewer calls than this.
    pub budgets: Vec<usize>,
    /// Each stage's least-cost policy with at most `budgets[s]` calls (fewest calls on ties).
    pub policies: Vec<Vec<usize>>,
}

/// Whether `losses` never increase: the models sort their step losses this way before planning.
pub fn is_non_increasing(losses: &[f64]) -> bool {
    losses.windows(2).all(|w| w[1] <= w[0])
}

/// The least-cost policy with at most `budget` calls for non-increasing `step_losses`, in
/// O(D log) time: a search over a price per call (see the module docs). Fewest calls among
/// equal costs, like [`crate::policy::optimal_policy`], which calls this for sorted losses.
///
/// ```
/// use ardm_core::lagrange::optimal_policy_by_price;
/// use ardm_core::policy::{budget_curve, policy_cost};
/// let losses = [4.0, 3.0, 2.0, 1.0];
/// let policy = optimal_policy_by_price(&losses, 2).unwrap();
/// assert_eq!(policy, vec![0, 2]);
/// assert_eq!(policy_cost(&losses, &policy).unwrap(), budget_curve(&losses).unwrap()[2]);
/// ```
pub fn optimal_policy_by_price(step_losses: &[f64], budget: usize) -> CoreResult<Vec<usize>> {
    validate_step_losses(step_losses)?;
    if budget < 1 {
        return Err(CoreError::new(
            "budget must be at least 1 network call, got 0",
        ));
    }
    check_sorted(step_losses, "step_losses")?;
    check_len(step_losses.len())?;
    let calls = budget.min(step_losses.len());
    let mut plan = plan_by_price(&[step_losses], calls);
    Ok(plan.policies.pop().unwrap_or_else(|| vec![0]))
}

/// The split of `budget` calls across stages of least total cost, and each stage's policy.
///
/// `stages[s]` are stage `s`'s step losses, each non-increasing (sort them first, as the models
/// do). Every stage gets at least one call, so `budget` must be at least the number of stages.
/// The total cost equals the least sum of the stages' [`crate::policy::budget_curve`] entries
/// over all splits; budgets beyond what lowers the cost are spread in stage order.
///
/// ```
/// use ardm_core::lagrange::optimal_stage_policies;
/// let plan = optimal_stage_policies(&[&[4.0, 3.0, 2.0, 1.0], &[1.0, 1.0, 1.0, 1.0]], 3).unwrap();
/// assert_eq!(plan.budgets, vec![2, 1]);
/// assert_eq!(plan.policies, vec![vec![0, 2], vec![0]]);
/// ```
pub fn optimal_stage_policies(stages: &[&[f64]], budget: usize) -> CoreResult<StagePlan> {
    if stages.is_empty() {
        return Err(CoreError::new(
            "step_losses has no stages: need the losses of at least one stage",
        ));
    }
    for (s, losses) in stages.iter().enumerate() {
        validate_step_losses(losses)
            .map_err(|err| CoreError::new(format!("stage {s}: {}", err.0)))?;
        check_sorted(losses, &format!("stage {s}: step_losses"))?;
        check_len(losses.len())?;
    }
    if budget < stages.len() {
        return Err(CoreError::new(format!(
            "budget must be at least the number of stages S = {} (one call per stage), got {budget}",
            stages.len()
        )));
    }
    Ok(plan_by_price(stages, budget))
}

fn check_sorted(losses: &[f64], name: &str) -> CoreResult<()> {
    match losses.windows(2).position(|w| w[1] > w[0]) {
        None => Ok(()),
        Some(i) => Err(CoreError::new(format!(
            "{name} must be sorted in descending order for the price search, got {name}[{}] = {} \
             after {}; sort them first (the models plan on sorted losses)",
            i + 1,
            losses[i + 1],
            losses[i]
        ))),
    }
}

fn check_len(num_steps: usize) -> CoreResult<()> {
    if num_steps >= u32::MAX as usize {
        return Err(CoreError::new(format!(
            "too many steps: {num_steps} (at most {})",
            u32::MAX - 1
        )));
    }
    Ok(())
}

/// The cost of `policy`, accumulated left to right from `0.0` as `policy_cost` does.
fn cost_of(losses: &[f64], policy: &[usize]) -> f64 {
    let mut cost = 0.0f64;
    for (i, &start) in policy.iter().enumerate() {
        let end = policy.get(i + 1).copied().unwrap_or(losses.len());
        cost += (end - start) as f64 * losses[start];
    }
    cost
}

/// The least-cost policy with the fewest calls: a new call wherever the (sorted) loss drops.
/// Its cost is the least of all, since a call over equal losses loses nothing.
fn run_starts(losses: &[f64]) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend((1..losses.len()).filter(|&t| losses[t] < losses[t - 1]));
    starts
}

/// A policy per stage with its totals, optimal at `price` per call.
#[derive(Clone)]
struct Candidate {
    policies: Vec<Vec<usize>>,
    calls: usize,
    cost: f64,
    price: f64,
}

impl Candidate {
    fn new(stages: &[&[f64]], policies: Vec<Vec<usize>>, price: f64) -> Self {
        let calls = policies.iter().map(Vec::len).sum();
        let cost = stages
            .iter()
            .zip(&policies)
            .fold(0.0, |acc, (losses, p)| acc + cost_of(losses, p));
        Candidate {
            policies,
            calls,
            cost,
            price,
        }
    }

    fn into_plan(self) -> StagePlan {
        StagePlan {
            budgets: self.policies.iter().map(Vec::len).collect(),
            policies: self.policies,
        }
    }
}

/// The price search; `stages` are validated and sorted, `S <= budget`.
///
/// It runs on the losses scaled by one power of two that brings the largest into `[1, 2)`:
/// the same policies in exact arithmetic, but prices and the hull's products (a cost times a
/// loss) stay far from underflow and overflow, and tiny (even subnormal) losses keep every bit.
fn plan_by_price(stages: &[&[f64]], budget: usize) -> StagePlan {
    let largest: Vec<f64> = stages.iter().filter_map(|l| l.first().copied()).collect();
    let [u0, u1] = unit_scale(&largest);
    let scaled: Vec<Vec<f64>> = stages
        .iter()
        .map(|l| l.iter().map(|&x| x * u0 * u1).collect())
        .collect();
    let stages: Vec<&[f64]> = scaled.iter().map(Vec::as_slice).collect();
    let stages = &stages[..];
    let runs: Vec<Vec<usize>> = stages.iter().map(|losses| run_starts(losses)).collect();
    let fewest: usize = runs.iter().map(Vec::len).sum();
    if fewest <= budget {
        // Every stage at its least cost already; the calls left over lower nothing and are
        // handed out in stage order, as the greedy split of marginal gains did.
        let mut budgets: Vec<usize> = runs.iter().map(Vec::len).collect();
        let mut left = budget - fewest;
        for (given, losses) in budgets.iter_mut().zip(stages) {
            let more = left.min(losses.len() - *given);
            *given += more;
            left -= more;
        }
        return StagePlan {
            budgets,
            policies: runs,
        };
    }
    // Bracket: one call per stage (optimal at any price >= f(1) - f(D) of every stage) and the
    // fewest calls of least cost (optimal at price 0).
    let mut more = Candidate::new(stages, runs, 0.0);
    let mut fewer = Candidate::new(stages, vec![vec![0]; stages.len()], 0.0);
    if fewer.calls == budget {
        return fewer.into_plan();
    }
    fewer.price = stages
        .iter()
        .zip(&more.policies)
        .map(|(losses, p)| losses.len() as f64 * losses[0] - cost_of(losses, p))
        .fold(0.0, f64::max);

    let most = more.calls;
    let mut pass = PricedPass::new(stages.iter().map(|l| l.len()).max().unwrap_or(0));
    let mut step = Step::Aim;
    // Regula falsi stalls when one end keeps moving: after two moves of one end in a row, the
    // next aim halves the price bracket instead.
    let mut last_side = None;
    // Extrapolations from the one-call end (the other still at price 0) that fell short.
    let mut short = 0;
    for _ in 0..MAX_PASSES {
        // The price at which both ends cost the same.
        let chord = ((fewer.cost - more.cost) / (more.calls - fewer.calls) as f64).max(0.0);
        // Close to the budget the call count is a staircase in the price with steps of
        // irregular width; the chord (the vertex farthest below it, near the middle for a
        // smooth curve) halves the gap more reliably than any interpolation of the price.
        if more.calls - fewer.calls <= CHORD_GAP && more.price > 0.0 {
            step = Step::Certify;
        }
        let price = match step {
            Step::Certify => chord,
            Step::Halve => log_midpoint(more.price, fewer.price),
            Step::Aim if more.price <= 0.0 => extrapolate(&fewer, &more, budget, short),
            Step::Aim => interpolate(&fewer, &more, budget, most),
        };
        let policies = stages.iter().map(|l| pass.policy(l, price)).collect();
        let found = Candidate::new(stages, policies, price);
        if found.calls == budget {
            return found.into_plan();
        }
        let between = fewer.calls < found.calls && found.calls < more.calls;
        // Strictly below the chord (beyond rounding): a vertex of the curve between its ends.
        let on_chord = more.cost + chord * more.calls as f64;
        let below = found.cost + chord * (found.calls as f64) < on_chord - 1e-14 * on_chord.abs();
        let side = found.calls < budget;
        short = match step {
            Step::Aim if more.price <= 0.0 && side && between => short + 1,
            _ => 0,
        };
        // A policy with an end's own call count at a price nearer the other end narrows the
        // price bracket; one beyond an end (rounding) is dropped.
        if side && found.calls >= fewer.calls {
            fewer = found;
        } else if !side && found.calls <= more.calls {
            more = found;
        }
        step = match step {
            // Nothing below the chord: its ends are optimal at its price; splice them.
            Step::Certify if !(between && below) => {
                return splice_plan(stages, &fewer, &more, budget)
            }
            // No new call count: halve the price bracket once, then certify.
            Step::Aim if !between => Step::Halve,
            Step::Halve if !between => Step::Certify,
            _ if last_side == Some(side) && step == Step::Aim && more.price > 0.0 => Step::Halve,
            _ => Step::Aim,
        };
        last_side = between.then_some(side);
    }
    // Not reached in any test; the join is still a valid policy with the budget's calls.
    #[cfg(test)]
    tests::EXHAUSTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    splice_plan(stages, &fewer, &more, budget)
}

/// What the next priced pass tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A price predicted to give the budget.
    Aim,
    /// The middle of the price bracket (in log price).
    Halve,
    /// The price at which the two ends tie: finds a vertex of the curve between them, or shows
    /// there is none.
    Certify,
}

/// The midpoint of two prices `0 <= low < high` in their bit patterns: about their geometric
/// mean, and from 0 a jump to the middle exponent, so that at most 64 halvings separate any
/// two prices (losses near the smallest doubles included).
fn log_midpoint(low: f64, high: f64) -> f64 {
    let (a, b) = (low.to_bits(), high.to_bits());
    f64::from_bits(a / 2 + b / 2 + (a & b & 1))
}

/// A price for `budget` calls between the ends of the bracket (both at prices above 0). The
/// call count of a smooth loss curve falls like `price^(-1/2)` (a call where the loss falls at
/// rate `r` per step is about `sqrt(2 price / r)` steps long), and near the most calls (`most`,
/// at price 0) the calls saved grow like a power of the price; so interpolate, in log price,
/// the log calls or, for budgets nearer `most`, the log calls saved.
fn interpolate(fewer: &Candidate, more: &Candidate, budget: usize, most: usize) -> f64 {
    let space = |calls: usize| {
        if 2 * budget > most {
            ((most - calls.min(most)) as f64 + 0.5).ln()
        } else {
            (calls as f64).ln()
        }
    };
    let t = (space(budget) - space(more.calls)) / (space(fewer.calls) - space(more.calls));
    // Keep clear of the ends, where a pass would bring nothing new.
    let t = if t.is_finite() {
        t.clamp(1.0 / 64.0, 63.0 / 64.0)
    } else {
        0.5
    };
    let (low, high) = (more.price.ln(), fewer.price.ln());
    let price = (low + t * (high - low)).exp();
    if price > more.price && price < fewer.price {
        price
    } else {
        log_midpoint(more.price, fewer.price)
    }
}

/// A price for `budget` calls below the end with fewer calls while the other end is still the
/// price-0 one: the same power laws extrapolated from that end (whichever asks for the lower
/// price; an overshoot gives the bracket a lower end above 0). Each extrapolation that again
/// fell `short` squares the step: losses that fall faster than any power (exponentially, say)
/// need prices orders of magnitude apart.
fn extrapolate(fewer: &Candidate, more: &Candidate, budget: usize, short: i32) -> f64 {
    let calls = fewer.calls as f64 / budget as f64;
    let saved = (more.calls - budget) as f64 / (more.calls - fewer.calls) as f64;
    fewer.price * calls.min(saved).powi(2 << short.min(8))
}

/// Stage budgets between the two ends' call counts that sum to `budget` (filled in stage
/// order), and each stage's policy for its budget, spliced from the two ends where needed.
fn splice_plan(stages: &[&[f64]], fewer: &Candidate, more: &Candidate, budget: usize) -> StagePlan {
    let mut budgets: Vec<usize> = fewer
        .policies
        .iter()
        .zip(&more.policies)
        .map(|(a, b)| a.len().min(b.len()))
        .collect();
    let mut left = budget.saturating_sub(budgets.iter().sum());
    for ((given, a), b) in budgets.iter_mut().zip(&fewer.policies).zip(&more.policies) {
        let more_calls = left.min(a.len().max(b.len()) - *given);
        *given += more_calls;
        left -= more_calls;
    }
    let policies = stages
        .iter()
        .zip(budgets.iter())
        .zip(fewer.policies.iter().zip(&more.policies))
        .map(|((losses, &calls), (a, b))| {
            let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
            if calls == short.len() {
                short.clone()
            } else if calls == long.len() {
                long.clone()
            } else {
                splice(losses, short, long, calls)
            }
        })
        .collect();
    StagePlan { budgets, policies }
}

/// A policy with exactly `calls` calls from `fewer` (fewer calls) and `more` (more calls), both
/// optimal at one price, so it is optimal for its calls (see the module docs). Among the
/// candidate joins the cheapest is taken, the first on ties.
fn splice(losses: &[f64], fewer: &[usize], more: &[usize], calls: usize) -> Vec<usize> {
    #[cfg(test)]
    tests::SPLICES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let num_steps = losses.len();
    debug_assert!(fewer.len() < calls && calls < more.len());
    let shift = calls - fewer.len();
    let step_cost = |policy: &[usize], i: usize| {
        let end = policy.get(i + 1).copied().unwrap_or(num_steps);
        (end - policy[i]) as f64 * losses[policy[i]]
    };
    // suffix[j]: the cost of fewer's calls j.. (only used to pick among candidates).
    let mut suffix = vec![0.0; fewer.len() + 1];
    for j in (0..fewer.len()).rev() {
        suffix[j] = suffix[j + 1] + step_cost(fewer, j);
    }
    let mut prefix = 0.0;
    let mut j = 0;
    let mut best: Option<(f64, usize, usize)> = None;
    for i in 0..more.len() {
        // j: fewer's last call that starts at or before more[i].
        while j + 1 < fewer.len() && fewer[j + 1] <= more[i] {
            j += 1;
        }
        let next_more = more.get(i + 1).copied().unwrap_or(num_steps);
        let next_fewer = fewer.get(j + 1).copied().unwrap_or(num_steps);
        if i >= j && i - j == shift && next_more <= next_fewer {
            let cost = prefix + (next_fewer - more[i]) as f64 * losses[more[i]] + suffix[j + 1];
            if best.is_none_or(|(least, _, _)| cost < least) {
                best = Some((cost, i, j));
            }
        }
        prefix += step_cost(more, i);
    }
    match best {
        Some((_, i, j)) => {
            let mut policy = more[..=i].to_vec();
            policy.extend_from_slice(&fewer[j + 1..]);
            policy
        }
        // Unreachable by the lemma in the module docs; a valid policy within budget regardless.
        None => fewer.to_vec(),
    }
}

/// One line of the hull: a candidate start step `s` with `f(s)`, slope `L[s]` and intercept
/// `f(s) - s * L[s]`.
#[derive(Clone, Copy, Default)]
struct Line {
    step: f64,
    f: f64,
    slope: f64,
    intercept: f64,
}

/// Scratch space of the priced pass, allocated once per search.
struct PricedPass {
    best: Vec<f64>,
    parent: Vec<u32>,
    hull: Vec<Line>,
}

impl PricedPass {
    fn new(num_steps: usize) -> Self {
        PricedPass {
            best: vec![0.0; num_steps + 1],
            parent: vec![0; num_steps + 1],
            hull: vec![Line::default(); num_steps + 1],
        }
    }

    /// A policy minimizing `cost + price * calls` for non-increasing `losses`:
    /// `g(e) = price + min_{s < e} g(s) + (e - s) * L[s]`, a monotone convex hull trick (slopes
    /// arrive non-increasing, queries increase), the values compared exactly as
    /// `g(s) + (e - s) * L[s]` and the line form used only to prune the hull.
    fn policy(&mut self, losses: &[f64], price: f64) -> Vec<usize> {
        let num_steps = losses.len();
        let best = &mut self.best[..=num_steps];
        let parent = &mut self.parent[..=num_steps];
        let hull = &mut self.hull[..];
        best[0] = 0.0;
        let mut head = 0usize;
        let mut tail = 0usize;
        for end in 1..=num_steps {
            // Keep the live hull at the front so that it stays in L1 cache (amortized O(1)).
            if head >= 64 && head >= tail - head {
                hull.copy_within(head..tail, 0);
                tail -= head;
                head = 0;
            }
            // 1. Add the line of start step s = end - 1.
            let s = end - 1;
            let line = Line {
                step: s as f64,
                f: best[s],
                slope: losses[s],
                intercept: best[s] - s as f64 * losses[s],
            };
            let mut keep = true;
            while tail > head {
                let last = hull[tail - 1];
                if last.slope == line.slope {
                    // Parallel: the lower line dominates; on a tie keep the earlier start.
                    if last.intercept <= line.intercept {
                        keep = false;
                        break;
                    }
                    tail -= 1;
                    continue;
                }
                if tail - head >= 2 {
                    // Drop `last` if the new line overtakes `first` no later than `last` does.
                    let first = hull[tail - 2];
                    let lhs = (line.intercept - first.intercept) * (first.slope - last.slope);
                    let rhs = (last.intercept - first.intercept) * (first.slope - line.slope);
                    if lhs <= rhs {
                        tail -= 1;
                        continue;
                    }
                }
                break;
            }
            if keep {
                hull[tail] = line;
                tail += 1;
            }
            // 2. Query at e = end with the exact values.
            let end_f = end as f64;
            let front = hull[head];
            let mut value = front.f + (end_f - front.step) * front.slope;
            while tail - head >= 2 {
                let next = hull[head + 1];
                let next_value = next.f + (end_f - next.step) * next.slope;
                if next_value <= value {
                    head += 1;
                    value = next_value;
                } else {
                    break;
                }
            }
            best[end] = value + price;
            parent[end] = hull[head].step as u32;
        }
        let mut starts = Vec::new();
        let mut end = num_steps;
        while end > 0 {
            let start = parent[end] as usize;
            starts.push(start);
            end = start;
        }
        starts.reverse();
        starts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{loss_value, splitmix, uniform};
    use crate::policy::{budget_curve, optimal_policy_with, policy_cost, PolicyMethod};
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// How many policies were spliced (all tests together; only ever grows).
    pub(super) static SPLICES: AtomicUsize = AtomicUsize::new(0);
    /// How many searches ran out of passes without a certificate: must stay 0.
    pub(super) static EXHAUSTED: AtomicUsize = AtomicUsize::new(0);

    fn sorted(mut losses: Vec<f64>) -> Vec<f64> {
        losses.sort_by(|a, b| b.total_cmp(a));
        losses
    }

    /// Losses of many shapes: smooth, noisy, ties, zeros, huge dynamic range.
    fn random_losses(state: &mut u64, n: usize, kind: u64) -> Vec<f64> {
        sorted(
            (0..n)
                .map(|t| match kind % 6 {
                    0 => uniform(state) * 10.0,
                    1 => (splitmix(state) % 4) as f64,
                    2 => 10f64.powf(uniform(state) * 200.0 - 100.0),
                    3 => 4.0 / (1.0 + t as f64 / 10.0) + 0.01 * uniform(state),
                    4 => (splitmix(state) % 3) as f64 * 0.1,
                    _ => 1.0,
                })
                .collect(),
        )
    }

    fn close(a: f64, b: f64, scale: f64) -> bool {
        (a - b).abs() <= 1e-11 * a.abs().max(b.abs()) + 1e-13 * scale
    }

    /// Every budget against the curve of the layer DP, and the policy contract.
    fn check_every_budget(losses: &[f64]) {
        let curve = budget_curve(losses).unwrap();
        let n = losses.len();
        for budget in 1..=n + 1 {
            let policy = optimal_policy_by_price(losses, budget).unwrap();
            crate::policy::validate_policy(&policy, n).unwrap();
            assert!(policy.len() <= budget);
            let cost = policy_cost(losses, &policy).unwrap();
            let entry = curve[budget.min(n)];
            assert!(
                close(cost, entry, curve[1]),
                "n {n}, budget {budget}: price {cost} vs curve {entry}"
            );
            // Fewest calls: one fewer would cost more.
            if policy.len() > 1 {
                assert!(curve[policy.len() - 1] > entry - 1e-13 * curve[1]);
            }
        }
    }

    #[test]
    fn matches_the_curve_on_every_budget() {
        let mut state = 17u64;
        for trial in 0..240 {
            let n = 1 + (splitmix(&mut state) % 60) as usize;
            let losses = random_losses(&mut state, n, trial);
            check_every_budget(&losses);
        }
    }

    #[test]
    fn matches_the_curve_at_larger_sizes() {
        let mut state = 23u64;
        for kind in 0..6 {
            let losses = random_losses(&mut state, 700, kind);
            check_every_budget(&losses);
        }
    }

    #[test]
    fn splice_joins_two_policies_at_any_count() {
        // Equal losses: every policy costs the same, so any join is optimal.
        let losses = [1.0; 10];
        let fewer = [0, 5];
        let more = [0, 1, 2, 3, 4, 6, 7, 8, 9];
        for calls in 3..more.len() {
            let p = splice(&losses, &fewer, &more, calls);
            assert_eq!(p.len(), calls);
            crate::policy::validate_policy(&p, 10).unwrap();
        }
    }

    #[test]
    fn straight_curves_need_the_splice() {
        // f(k) is straight where the losses are a staircase of equal drops over equal lengths.
        let losses: Vec<f64> = (0..64).map(|t| f64::from(7 - t / 8)).collect();
        check_every_budget(&losses);
        let zeros = vec![0.0; 50];
        assert_eq!(optimal_policy_by_price(&zeros, 7).unwrap(), vec![0]);
        let mut tail = vec![3.0, 2.0, 1.0];
        tail.extend(std::iter::repeat_n(0.0, 40));
        assert_eq!(
            optimal_policy_by_price(&tail, 10).unwrap(),
            vec![0, 1, 2, 3]
        );
        check_every_budget(&tail);
    }

    #[test]
    fn linear_losses_have_straight_stretches() {
        // L[t] = D - t: f(k) = sum(L) + sum of len*(len-1)/2 over balanced steps, straight for
        // every k between D/(q+1) and D/q, in exact integer arithmetic: one price fits a whole
        // stretch, and the budgets inside it need the splice.
        let before = SPLICES.load(Ordering::Relaxed);
        for n in [64usize, 100, 257] {
            let losses: Vec<f64> = (0..n).map(|t| (n - t) as f64).collect();
            let curve = budget_curve(&losses).unwrap();
            for (budget, &entry) in curve.iter().enumerate().skip(1) {
                let policy = optimal_policy_by_price(&losses, budget).unwrap();
                assert_eq!(policy.len(), budget);
                // Integers: exact.
                let cost = policy_cost(&losses, &policy).unwrap();
                assert_eq!(cost, entry, "n {n}, k {budget}");
            }
        }
        assert!(SPLICES.load(Ordering::Relaxed) > before);
    }

    #[test]
    fn tiny_and_huge_scales() {
        let mut state = 31u64;
        for scale in [1e-300, 1e-200, 1e-20, 1e20, 1e250] {
            for kind in [0, 3] {
                let losses: Vec<f64> = random_losses(&mut state, 300, kind)
                    .into_iter()
                    .map(|l| l * scale)
                    .collect();
                check_every_budget(&losses);
            }
        }
        // Subnormal losses: differences below the smallest normal double.
        let losses: Vec<f64> = (0..200).map(|t| f64::from(200 - t) * 5e-324).collect();
        check_every_budget(&losses);
        assert_eq!(EXHAUSTED.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn auto_method_takes_the_price_search_for_sorted_losses() {
        let mut state = 5u64;
        let losses = random_losses(&mut state, 300, 3);
        for budget in [1, 2, 9, 40, 299, 300] {
            let auto = optimal_policy_with(&losses, budget, PolicyMethod::Auto).unwrap();
            let price = optimal_policy_with(&losses, budget, PolicyMethod::Price).unwrap();
            assert_eq!(auto, price);
        }
        let err = optimal_policy_with(&[1.0, 2.0], 1, PolicyMethod::Price).unwrap_err();
        assert!(err.0.contains("descending"), "{err}");
    }

    /// Least total cost over all splits, from the per-stage curves.
    fn brute_split(stages: &[Vec<f64>], budget: usize) -> f64 {
        let curves: Vec<Vec<f64>> = stages.iter().map(|l| budget_curve(l).unwrap()).collect();
        let mut best = vec![0.0f64];
        for curve in &curves {
            let mut next = vec![f64::INFINITY; best.len() + curve.len() - 1];
            for (used, &b) in best.iter().enumerate() {
                for (k, &c) in curve.iter().enumerate().skip(1) {
                    next[used + k] = next[used + k].min(b + c);
                }
            }
            best = next;
        }
        best.iter()
            .take(budget + 1)
            .fold(f64::INFINITY, |a, &b| a.min(b))
    }

    #[test]
    fn stage_split_matches_the_min_plus_split() {
        let mut state = 41u64;
        for trial in 0..150 {
            let num_stages = 1 + (splitmix(&mut state) % 4) as usize;
            let n = 1 + (splitmix(&mut state) % 25) as usize;
            let stages: Vec<Vec<f64>> = (0..num_stages)
                .map(|s| {
                    let scale = [1.0, 0.3, 5.0, 1.0][s];
                    random_losses(&mut state, n, trial + s as u64)
                        .into_iter()
                        .map(|l| l * scale)
                        .collect()
                })
                .collect();
            let views: Vec<&[f64]> = stages.iter().map(Vec::as_slice).collect();
            let scale: f64 = stages.iter().map(|l| n as f64 * l[0]).sum();
            for budget in num_stages..=num_stages * n + 1 {
                let plan = optimal_stage_policies(&views, budget).unwrap();
                assert_eq!(
                    plan.budgets.iter().sum::<usize>(),
                    budget.min(num_stages * n)
                );
                let mut cost = 0.0;
                for ((l, p), &b) in stages.iter().zip(&plan.policies).zip(&plan.budgets) {
                    crate::policy::validate_policy(p, n).unwrap();
                    assert!(1 <= b && b <= n && p.len() <= b);
                    cost += policy_cost(l, p).unwrap();
                }
                let expected = brute_split(&stages, budget);
                assert!(
                    close(cost, expected, scale),
                    "trial {trial}, budget {budget}: {cost} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(optimal_policy_by_price(&[1.0], 0)
            .unwrap_err()
            .0
            .contains("budget"));
        assert!(optimal_policy_by_price(&[1.0, f64::NAN], 1)
            .unwrap_err()
            .0
            .contains("NaN"));
        let err = optimal_stage_policies(&[&[1.0, 1.0], &[1.0, 1.0]], 1).unwrap_err();
        assert!(err.0.contains("S = 2"), "{err}");
        let err = optimal_stage_policies(&[&[1.0, 1.0], &[1.0, -1.0]], 2).unwrap_err();
        assert!(
            err.0.contains("stage 1") && err.0.contains("negative"),
            "{err}"
        );
        let err = optimal_stage_policies(&[&[1.0, 2.0]], 2).unwrap_err();
        assert!(
            err.0.contains("stage 0") && err.0.contains("descending"),
            "{err}"
        );
        assert!(optimal_stage_policies(&[], 2).is_err());
    }

    proptest! {
        #[test]
        fn price_search_matches_the_curve(losses in prop::collection::vec(loss_value(), 1..=40)) {
            check_every_budget(&sorted(losses));
        }
    }
}
