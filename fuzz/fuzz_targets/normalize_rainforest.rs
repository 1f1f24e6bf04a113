//! Rainforest: any body through parse + normalize (JSON media). Never panics; the result passes
//! `check_normalized`; the same body always gives the same answer.
#![no_main]

use common::event::Provider;
use common::providers::{Media, ProviderSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let settings = ProviderSettings::default();
    let first = Provider::Rainforest.normalize(body, Media::Json, None, &settings);
    fuzz_support::check_normalized(Provider::Rainforest, &first);
    assert_eq!(first, Provider::Rainforest.normalize(body, Media::Json, None, &settings));
});
