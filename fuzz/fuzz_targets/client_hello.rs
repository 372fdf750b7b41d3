//! Fuzzes the ClientHello parser, which reads bytes straight from unauthenticated peers.
//!
//! Besides "never panics", it checks the incremental parser against the one-shot one: the
//! input is also fed in pieces (the first byte of the input chooses the piece size), and
//! both ways must give the same answer. Seed the corpus with the captured hellos:
//! `cp tests/fixtures/client_hello/*.bin fuzz/corpus/client_hello/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::tls::client_hello::{parse, HelloParser};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);

    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut parser = HelloParser::new();
    let mut end = 0;
    let pieces = loop {
        end = (end + step).min(data.len());
        let got = parser.feed(&data[..end]);
        if got != Ok(None) || end == data.len() {
            break got;
        }
    };
    assert_eq!(pieces, whole);
});
