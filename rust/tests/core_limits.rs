//! Absurd sizes and bad arguments through the public API of the core: each is an error whose
//! message names the bound, found before anything is allocated, never a panic or an abort.

use ardm_core::ans::{check_num_streams, AnsBatch, AnsCoder, MAX_STREAMS};
use ardm_core::order::{random_order, random_orders, MAX_NUM_VARS};
use ardm_core::policy::{naive_policy, validate_policy};
use ardm_core::quantize::{quantize_logits, MAX_SYMBOLS};
use proptest::prelude::*;

#[test]
fn the_issue_cases_are_errors() {
    let err = random_order(1 << 40, 0).unwrap_err();
    assert!(
        err.0.contains("num_vars must lie in 0..=4294967296"),
        "{err}"
    );
    assert!(random_orders(1 << 61, &[0]).is_err());
    // 4 rows of 2^31 variables: each row is allowed, their total is not.
    let err = random_orders(1 << 31, &[0; 4]).unwrap_err();
    assert!(err.0.contains("too many"), "{err}");
    let err = naive_policy(1 << 40, 1 << 40).unwrap_err();
    assert!(
        err.0.contains("num_steps must lie in 1..=4294967296"),
        "{err}"
    );
    let err = AnsBatch::try_new(1 << 34).unwrap_err();
    assert!(
        err.0.contains("num_streams must lie in 0..=16777216"),
        "{err}"
    );
    let err = AnsBatch::try_new(1 << 16)
        .unwrap()
        .pop(&[], 1 << 40, 256)
        .unwrap_err();
    assert!(err.0.contains("more than 2^64"), "{err}");
}

#[test]
fn bounds_are_inclusive() {
    assert!(check_num_streams(MAX_STREAMS).is_ok());
    assert!(check_num_streams(MAX_STREAMS + 1).is_err());
    assert!(AnsBatch::with_initial_states(&[]).unwrap().is_empty());
    assert_eq!(naive_policy(MAX_NUM_VARS, 3).unwrap().len(), 3);
    assert!(naive_policy(MAX_NUM_VARS + 1, 3).is_err());
    assert!(quantize_logits(&[0.0; 2], 2).is_ok());
    assert!(quantize_logits(&[], MAX_SYMBOLS + 1).is_err());
    assert!(quantize_logits(&[], 0).is_err());
    assert!(AnsCoder::new().pop(&[], 0).is_err());
    assert!(AnsCoder::new().pop(&[], 2).unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn naive_policy_is_valid_or_an_error(
        num_steps in prop_oneof![
            0usize..5000,
            MAX_NUM_VARS - 3..=MAX_NUM_VARS + 3,
            Just(usize::MAX),
        ],
        budget in prop_oneof![0usize..5000, Just(usize::MAX)],
    ) {
        if budget.min(num_steps) > 1 << 16 && num_steps <= MAX_NUM_VARS {
            return Ok(()); // valid, but a policy of gigabytes
        }
        match naive_policy(num_steps, budget) {
            Ok(policy) => {
                prop_assert!((1..=MAX_NUM_VARS).contains(&num_steps) && budget >= 1);
                prop_assert_eq!(policy.len(), budget.min(num_steps));
                prop_assert!(validate_policy(&policy, num_steps).is_ok());
            }
            Err(_) => prop_assert!(num_steps == 0 || num_steps > MAX_NUM_VARS || budget == 0),
        }
    }
}
