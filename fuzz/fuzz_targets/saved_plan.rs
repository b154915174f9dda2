//! A saved plan (`stead plan --out`): any bytes read as a plan, as
//! `stead apply PLAN` reads it, and written back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::plan::Plan;

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = serde_json::from_slice::<Plan>(data) else {
        return;
    };
    let bytes = serde_json::to_vec(&plan).expect("a plan serializes");
    let again: Plan = serde_json::from_slice(&bytes).expect("a written plan reads back");
    assert_eq!(plan, again);
});
