//! Generation orders of Autoregressive Diffusion Models (Hoogeboom et al., ICLR 2022,
//! arXiv:2110.02037, Sec. 3): an order-agnostic ARDM generates the `D` variables in a random
//! order `sigma`, and lossless compression (Sec. 5) must rebuild exactly the same order when
//! decoding. The permutations here are therefore a pure function of `(D, seed)`, identical on
//! every platform and in every release; test vectors pin them.
//!
//! # The exact algorithm (part of the format: never change it)
//!
//! 1. **Seeding (SplitMix64).** With `x = seed` and all arithmetic wrapping modulo 2^64, each
//!    output is
//!    `x += 0x9E3779B97F4A7C15; z = x; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
//!    z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31)`.
//!    Its first four outputs are the state `s[0..4]` of the generator.
//! 2. **Generator (xoshiro256\*\*, Blackman and Vigna).** Each output is
//!    `r = rotl(s[1] * 5, 7) * 9`, then `t = s[1] << 17; s[2] ^= s[0]; s[3] ^= s[1];
//!    s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45)`.
//! 3. **Unbiased bounded integers (Lemire's method with rejection).** A uniform integer in
//!    `0..n`: `m = r * n` as a 128-bit product of a fresh output `r`; `low = m mod 2^64`; if
//!    `low < n`, let `threshold = (2^64 - n) mod n` and, while `low < threshold`, draw a fresh
//!    `r` and recompute `m` and `low`. The result is `m >> 64`.
//! 4. **Shuffle (Fisher-Yates).** Start from the identity `0, 1, ..., D-1`; for `i` from `D-1`
//!    down to `1`, draw `j` uniform in `0..i+1` and swap entries `i` and `j`.
//!
//! `order[t]` is the variable generated at step `t`; [`order_ranks`] is the inverse (the step at
//! which each variable is generated), and [`step_positions`] lists the variables that one step
//! of a policy (see [`crate::policy`]) generates together.

use rayon::prelude::*;

use crate::error::{try_with_capacity, CoreError, CoreResult};
use crate::policy::validate_policy;

/// SplitMix64, used only to expand a 64-bit seed into the xoshiro256** state.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** seeded by SplitMix64, exactly as documented in the module.
#[derive(Debug, Clone)]
pub struct OrderRng {
    s: [u64; 4],
}

impl OrderRng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        OrderRng { s }
    }

    /// The next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform integer in `0..n` (`n >= 1`), unbiased (Lemire's method with rejection).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n >= 1);
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }
}

/// The most variables an order may have, and the most entries all orders of one
/// [`random_orders`] call may have together: `2^32` (on 64-bit targets). Larger sizes are an
/// error before anything is allocated; a size within the bound that does not fit in memory is
/// an error too.
pub const MAX_NUM_VARS: usize = (u32::MAX as usize).saturating_add(1);

/// Checks `num_vars` against [`MAX_NUM_VARS`].
pub fn check_num_vars(num_vars: usize) -> CoreResult<()> {
    if num_vars > MAX_NUM_VARS {
        return Err(CoreError::new(format!(
            "num_vars must lie in 0..={MAX_NUM_VARS} (2^32), got {num_vars}"
        )));
    }
    Ok(())
}

fn shuffle_into(order: &mut [usize], seed: u64) {
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i;
    }
    let mut rng = OrderRng::new(seed);
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
}

/// The random generation order of `num_vars` variables for `seed`: a permutation of
/// `0..num_vars`, the same on every platform and release (see the module docs). An error if
/// `num_vars` exceeds [`MAX_NUM_VARS`] or the order does not fit in memory.
///
/// ```
/// use ardm_core::order::random_order;
/// let order = random_order(5, 0).unwrap();
/// let mut sorted = order.clone();
/// sorted.sort();
/// assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
/// assert_eq!(order, random_order(5, 0).unwrap());
/// assert!(random_order(1 << 40, 0).is_err());
/// ```
pub fn random_order(num_vars: usize, seed: u64) -> CoreResult<Vec<usize>> {
    check_num_vars(num_vars)?;
    let mut order = try_with_capacity(num_vars, "the order")?;
    order.resize(num_vars, 0);
    shuffle_into(&mut order, seed);
    Ok(order)
}

/// One order per seed, row-major `seeds.len() x num_vars`; row `i` equals
/// `random_order(num_vars, seeds[i])`. Rows are shuffled in parallel. An error if `num_vars` or
/// the total `seeds.len() * num_vars` exceeds [`MAX_NUM_VARS`].
///
/// ```
/// use ardm_core::order::{random_order, random_orders};
/// let orders = random_orders(4, &[7, 8]).unwrap();
/// assert_eq!(orders[4..], random_order(4, 8).unwrap()[..]);
/// assert!(random_orders(1 << 31, &[0, 1, 2]).is_err());
/// ```
pub fn random_orders(num_vars: usize, seeds: &[u64]) -> CoreResult<Vec<usize>> {
    check_num_vars(num_vars)?;
    let total = num_vars
        .checked_mul(seeds.len())
        .filter(|&total| total <= MAX_NUM_VARS)
        .ok_or_else(|| {
            CoreError::new(format!(
                "{} orders of {num_vars} variables are too many: at most {MAX_NUM_VARS} (2^32) \
                 entries in all",
                seeds.len()
            ))
        })?;
    let mut orders = try_with_capacity(total, "the orders")?;
    orders.resize(total, 0);
    if num_vars > 0 {
        orders
            .par_chunks_mut(num_vars)
            .zip(seeds.par_iter())
            .for_each(|(row, &seed)| shuffle_into(row, seed));
    }
    Ok(orders)
}

/// Checks that `order` is a permutation of `0..order.len()`.
pub fn validate_order(order: &[usize]) -> CoreResult<()> {
    let n = order.len();
    let mut seen = vec![false; n];
    for (i, &v) in order.iter().enumerate() {
        if v >= n {
            return Err(CoreError::new(format!(
                "order is not a permutation of 0..{n}: order[{i}] = {v} is out of range"
            )));
        }
        if seen[v] {
            return Err(CoreError::new(format!(
                "order is not a permutation of 0..{n}: the value {v} appears twice (again at order[{i}])"
            )));
        }
        seen[v] = true;
    }
    Ok(())
}

/// The inverse permutation: `ranks[order[t]] = t`, the step at which each variable is generated.
///
/// ```
/// use ardm_core::order::order_ranks;
/// assert_eq!(order_ranks(&[2, 0, 1]).unwrap(), vec![1, 2, 0]);
/// ```
pub fn order_ranks(order: &[usize]) -> CoreResult<Vec<usize>> {
    validate_order(order)?;
    let mut ranks = vec![0; order.len()];
    for (t, &v) in order.iter().enumerate() {
        ranks[v] = t;
    }
    Ok(ranks)
}

/// The variables generated together by call `step` of `policy`:
/// `order[policy[step] .. policy[step + 1]]` (up to the end of `order` for the last step).
///
/// ```
/// use ardm_core::order::step_positions;
/// assert_eq!(step_positions(&[4, 2, 0, 1, 3], &[0, 2], 1).unwrap(), &[0, 1, 3]);
/// ```
pub fn step_positions<'a>(
    order: &'a [usize],
    policy: &[usize],
    step: usize,
) -> CoreResult<&'a [usize]> {
    validate_order(order)?;
    if order.is_empty() {
        return Err(CoreError::new("order is empty: no variables to generate"));
    }
    validate_policy(policy, order.len())?;
    if step >= policy.len() {
        return Err(CoreError::new(format!(
            "step {step} is out of range for a policy of {} steps",
            policy.len()
        )));
    }
    let start = policy[step];
    let end = policy.get(step + 1).copied().unwrap_or(order.len());
    Ok(&order[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splitmix_matches_reference_vector() {
        // Reference outputs of SplitMix64 from seed 1234567 (Vigna's splitmix64.c).
        let mut x = 1234567u64;
        let expected = [
            6457827717110365317u64,
            3203168211198807973,
            9817491932198370423,
            4593380528125082431,
            16408922859458223821,
        ];
        for e in expected {
            assert_eq!(splitmix64(&mut x), e);
        }
    }

    #[test]
    fn pinned_orders() {
        // Format vectors: these must never change (mirrored in tests/test_order.py).
        assert_eq!(random_order(1, 0).unwrap(), vec![0]);
        assert_eq!(random_order(10, 0).unwrap(), PINNED_10_0.to_vec());
        assert_eq!(random_order(10, 1).unwrap(), PINNED_10_1.to_vec());
        assert_eq!(&random_order(1000, 42).unwrap()[..8], &PINNED_1000_42[..]);
        assert_eq!(
            &random_order(3072, u64::MAX).unwrap()[..8],
            &PINNED_3072_MAX[..]
        );
        assert!(random_order(0, 5).unwrap().is_empty());
    }

    const PINNED_10_0: [usize; 10] = [7, 8, 3, 1, 5, 4, 2, 0, 9, 6];
    const PINNED_10_1: [usize; 10] = [3, 6, 1, 5, 0, 9, 2, 8, 4, 7];
    const PINNED_1000_42: [usize; 8] = [904, 125, 916, 256, 881, 584, 665, 223];
    const PINNED_3072_MAX: [usize; 8] = [1227, 1505, 2075, 336, 1922, 103, 1490, 969];

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = OrderRng::new(9);
        let mut counts = [0usize; 7];
        for _ in 0..7000 {
            counts[rng.below(7) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 850 && c < 1150), "{counts:?}");
        assert_eq!(rng.below(1), 0);
        assert!(rng.below(u64::MAX) < u64::MAX);
    }

    #[test]
    fn batched_orders_match_single() {
        let seeds = [0u64, 1, 2, 77, u64::MAX];
        let orders = random_orders(33, &seeds).unwrap();
        for (row, &seed) in orders.chunks(33).zip(&seeds) {
            assert_eq!(row, random_order(33, seed).unwrap().as_slice());
        }
        assert!(random_orders(0, &seeds).unwrap().is_empty());
    }

    #[test]
    fn ranks_and_positions() {
        let order = random_order(50, 3).unwrap();
        let ranks = order_ranks(&order).unwrap();
        for (t, &v) in order.iter().enumerate() {
            assert_eq!(ranks[v], t);
        }
        let policy = [0, 10, 11, 30];
        let mut all = Vec::new();
        for step in 0..policy.len() {
            all.extend_from_slice(step_positions(&order, &policy, step).unwrap());
        }
        assert_eq!(all, order);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(order_ranks(&[0, 2]).unwrap_err().0.contains("out of range"));
        assert!(order_ranks(&[1, 1]).unwrap_err().0.contains("twice"));
        assert!(order_ranks(&[]).unwrap().is_empty());
        assert!(step_positions(&[], &[0], 0).is_err());
        assert!(step_positions(&[1, 0], &[0], 1)
            .unwrap_err()
            .0
            .contains("out of range"));
        assert!(step_positions(&[1, 0], &[1], 0)
            .unwrap_err()
            .0
            .contains("start at 0"));
        assert!(step_positions(&[1, 0], &[0, 2], 0).is_err());
        assert!(step_positions(&[1, 1], &[0], 0).is_err());
    }

    proptest! {
        #[test]
        fn random_order_is_a_permutation(n in 0usize..300, seed in any::<u64>()) {
            let order = random_order(n, seed).unwrap();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            prop_assert_eq!(order, random_order(n, seed).unwrap());
        }

        // Sizes beyond the bound are errors before any allocation, whatever the seed; a
        // product of rows and variables that overflows usize is one of them.
        #[test]
        fn absurd_sizes_are_errors(
            n in prop_oneof![MAX_NUM_VARS + 1..=usize::MAX, Just(usize::MAX)],
            rows in 0usize..5,
            seed in any::<u64>(),
        ) {
            let err = random_order(n, seed).unwrap_err();
            prop_assert!(err.0.contains("2^32"), "{}", err);
            prop_assert!(random_orders(n, &vec![seed; rows]).is_err());
        }

        #[test]
        fn orders_of_many_rows_are_bounded_in_total(
            n in 1usize..=MAX_NUM_VARS,
            rows in 1usize..64,
        ) {
            let seeds = vec![0u64; rows];
            let within = n.checked_mul(rows).is_some_and(|t| t <= MAX_NUM_VARS);
            if within && n * rows <= 4096 {
                prop_assert_eq!(random_orders(n, &seeds).unwrap().len(), n * rows);
            } else if !within {
                let err = random_orders(n, &seeds).unwrap_err();
                prop_assert!(err.0.contains("too many"), "{}", err);
            }
        }

        // Ranks and positions of arbitrary (mostly invalid) inputs are results, never panics.
        #[test]
        fn arbitrary_ranks_and_positions_never_panic(
            order in proptest::collection::vec(0usize..12, 0..12),
            policy in proptest::collection::vec(0usize..14, 0..5),
            step in prop_oneof![0usize..6, Just(usize::MAX)],
        ) {
            if let Ok(ranks) = order_ranks(&order) {
                prop_assert_eq!(ranks.len(), order.len());
            }
            if let Ok(positions) = step_positions(&order, &policy, step) {
                prop_assert!(!positions.is_empty());
            }
        }
    }

    #[test]
    fn the_bound_itself_is_allowed() {
        assert!(check_num_vars(MAX_NUM_VARS).is_ok());
        assert!(check_num_vars(MAX_NUM_VARS + 1).is_err());
        // Rows of zero variables are fine in any number; no allocation.
        assert!(random_orders(0, &[1; 1000]).unwrap().is_empty());
        assert!(random_orders(MAX_NUM_VARS, &[]).unwrap().is_empty());
    }
}
