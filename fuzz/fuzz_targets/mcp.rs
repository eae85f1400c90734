//! Bodies posted to an MCP route → what the message asks, or the reason it
//! is refused; never a panic. A message read as a call is read the same
//! way every time, and names a target only for the methods that reach one.
#![no_main]

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use portcullis::mcp::read_message;

fuzz_target!(|data: &[u8]| {
    let headers = HeaderMap::new();
    let Ok(read) = read_message(&headers, data) else {
        return;
    };
    let again = read_message(&headers, data).expect("read once, read again");
    assert_eq!(read.call, again.call);
    if read.call.target.is_some() {
        let method = read.call.method.as_deref().unwrap_or("");
        assert!(
            matches!(
                method,
                "tools/call"
                    | "prompts/get"
                    | "resources/read"
                    | "resources/subscribe"
                    | "resources/unsubscribe"
            ),
            "{method}"
        );
    }
});
