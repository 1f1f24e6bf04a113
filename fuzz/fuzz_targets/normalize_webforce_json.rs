//! WebforceHQ: any body through parse + normalize as a JSON postback. Never panics; the
//! result passes `check_normalized`; the same body always gives the same answer.
#![no_main]

use common::event::Provider;
use common::providers::{Media, ProviderSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let settings = ProviderSettings::default();
    let first = Provider::Webforce.normalize(body, Media::Json, None, &settings);
    fuzz_support::check_normalized(Provider::Webforce, &first);
    assert_eq!(first, Provider::Webforce.normalize(body, Media::Json, None, &settings));
});
