//! Bodies posted to a model API route → the model, stream and output cap
//! the gateway decides and budgets on, or a refusal; never a panic. A body
//! the gateway asks for its usage reads back the same, with the usage
//! asked for and nothing else changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::call::Operation;
use portcullis::model::request;

fuzz_target!(|data: &[u8]| {
    let _ = request::prompt_estimate(data);
    let Ok(read) = request::read(data) else {
        return;
    };
    if read.needs_usage(Operation::Chat) {
        let asked = request::read(&read.with_usage(data)).expect("a rewritten body reads");
        assert_eq!(asked.model, read.model);
        assert_eq!(asked.output_cap, read.output_cap);
        assert_eq!(asked.include_usage, Some(true));
        assert!(!asked.needs_usage(Operation::Chat));
    }
});
