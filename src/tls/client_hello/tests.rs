use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/client_hello/",
            $name,
            ".bin"
        ))
    };
}

struct Fixture {
    name: &'static str,
    bytes: &'static [u8],
    server_name: Option<&'static str>,
    alpn: Vec<Vec<u8>>,
}

fn alpn(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|n| n.as_bytes().to_vec()).collect()
}

/// The captured hellos and what each client was told to send (see the README beside them).
fn fixtures() -> Vec<Fixture> {
    let mut padded = alpn(&["h2", "http/1.1"]);
    padded.extend(
        (1..=20).map(|i| format!("portico-test-protocol-{i:02}-padding-padding").into_bytes()),
    );
    vec![
        Fixture {
            name: "curl_openssl3",
            bytes: fixture!("curl_openssl3"),
            server_name: Some("x.example.test"),
            alpn: alpn(&["h2", "http/1.1"]),
        },
        Fixture {
            name: "openssl_tls12_sni",
            bytes: fixture!("openssl_tls12_sni"),
            server_name: Some("site1.example.test"),
            alpn: vec![],
        },
        Fixture {
            name: "openssl_no_sni",
            bytes: fixture!("openssl_no_sni"),
            server_name: None,
            alpn: vec![],
        },
        Fixture {
            name: "openssl_fragmented",
            bytes: fixture!("openssl_fragmented"),
            server_name: Some("frag.example.test"),
            alpn: padded,
        },
        Fixture {
            name: "chromium_pq",
            bytes: fixture!("chromium_pq"),
            server_name: Some("pq.example.test"),
            alpn: alpn(&["h2", "http/1.1"]),
        },
    ]
}

fn must_parse(bytes: &[u8]) -> Hello {
    match parse(bytes) {
        Ok(Some(hello)) => hello,
        other => panic!("expected a hello, got {other:?}"),
    }
}

/// Concatenates the fragments of a run of records: the handshake message they carry.
fn handshake_message(mut records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [_, _, _, hi, lo, tail @ ..] = records {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        out.extend_from_slice(&tail[..len]);
        records = &tail[len..];
    }
    out
}

/// Wraps a handshake message in records whose fragments have the lengths `sizes` gives.
fn records(message: &[u8], mut sizes: impl FnMut() -> usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let n = sizes().clamp(1, MAX_RECORD_LEN).min(rest.len());
        let (fragment, tail) = rest.split_at(n);
        out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&u16::try_from(n).expect("clamped").to_be_bytes());
        out.extend_from_slice(fragment);
        rest = tail;
    }
    out
}

fn hello_message(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("test body fits");
    let mut out = vec![HANDSHAKE_TYPE_CLIENT_HELLO];
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

fn vec16(data: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(data.len())
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(data);
    out
}

/// A minimal ClientHello body with the given extensions (none: no extensions block).
fn body_with(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    if let Some(extensions) = extensions {
        let mut block = Vec::new();
        for (ext_type, data) in extensions {
            block.extend_from_slice(&ext_type.to_be_bytes());
            block.extend_from_slice(&vec16(data));
        }
        body.extend_from_slice(&vec16(&block));
    }
    body
}

fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    records(&hello_message(&body_with(Some(extensions))), || usize::MAX)
}

fn sni(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (name_type, name) in entries {
        list.push(*name_type);
        list.extend_from_slice(&vec16(name));
    }
    vec16(&list)
}

/// A deterministic xorshift64 generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).expect("usize fits u64"))
            .expect("below n")
    }

    fn byte(&mut self) -> u8 {
        self.next().to_be_bytes()[0]
    }
}

#[test]
fn fixtures_parse_to_expected_sni_and_alpn() {
    for f in fixtures() {
        let hello = must_parse(f.bytes);
        assert_eq!(hello.server_name.as_deref(), f.server_name, "{}", f.name);
        assert_eq!(hello.alpn, f.alpn, "{}", f.name);
        assert!(!hello.signature_schemes.is_empty(), "{}", f.name);
    }
}

#[test]
fn tls13_clients_offer_tls13_and_tls12_only_client_does_not() {
    for name in ["curl_openssl3", "chromium_pq", "openssl_no_sni"] {
        let f = fixtures()
            .into_iter()
            .find(|f| f.name == name)
            .expect("fixture");
        assert!(
            must_parse(f.bytes).supported_versions.contains(&0x0304),
            "{name}"
        );
    }
    let hello = must_parse(fixture!("openssl_tls12_sni"));
    assert!(hello.supported_versions.is_empty());
}

#[test]
fn chromium_hello_is_post_quantum_and_large() {
    let bytes = fixture!("chromium_pq");
    assert!(bytes.len() > 1200);
    let message = handshake_message(bytes);
    let mut r = Reader::new(&message[HANDSHAKE_HEADER_LEN..]);
    r.take(2 + 32, "").expect("version and random");
    r.vec8("").expect("session id");
    r.vec16("").expect("suites");
    r.vec8("").expect("compression");
    let mut exts = Reader::new(r.vec16("").expect("extensions"));
    let mut groups = Vec::new();
    while !exts.is_empty() {
        let ext_type = exts.u16("").expect("type");
        let data = exts.vec16("").expect("data");
        if ext_type == 51 {
            let mut shares = Reader::new(Reader::new(data).vec16("").expect("shares"));
            while !shares.is_empty() {
                let group = shares.u16("").expect("group");
                groups.push((group, shares.vec16("").expect("key").len()));
            }
        }
    }
    // X25519MLKEM768: a 1184-byte ML-KEM-768 key followed by a 32-byte X25519 key.
    assert!(groups.contains(&(0x11ec, 1216)), "{groups:?}");
}

#[test]
fn openssl_fragmented_fixture_really_spans_records() {
    let bytes = fixture!("openssl_fragmented");
    let message = handshake_message(bytes);
    assert!(bytes.len() - message.len() >= 3 * RECORD_HEADER_LEN);
}

#[test]
fn every_prefix_of_every_fixture_needs_more() {
    for f in fixtures() {
        for end in 0..f.bytes.len() {
            assert_eq!(parse(&f.bytes[..end]), Ok(None), "{} [..{end}]", f.name);
        }
    }
}

#[test]
fn feeding_byte_by_byte_matches_parse() {
    for f in fixtures() {
        let mut parser = HelloParser::new();
        for end in 0..f.bytes.len() {
            assert_eq!(
                parser.feed(&f.bytes[..end]),
                Ok(None),
                "{} [..{end}]",
                f.name
            );
        }
        assert_eq!(parser.feed(f.bytes), parse(f.bytes), "{}", f.name);
    }
}

#[test]
fn refragmented_hellos_parse_the_same() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for f in fixtures() {
        let expected = must_parse(f.bytes);
        let message = handshake_message(f.bytes);
        for max in [1, 2, 3, 4, 5, 7, 64, 511, 4096, MAX_RECORD_LEN] {
            let split = records(&message, || max);
            assert_eq!(must_parse(&split), expected, "{} max {max}", f.name);
            let random = records(&message, || 1 + rng.below(max));
            assert_eq!(must_parse(&random), expected, "{} random max {max}", f.name);
        }
    }
}

#[test]
fn every_prefix_of_one_byte_records_needs_more() {
    for f in fixtures() {
        let split = records(&handshake_message(f.bytes), || 1);
        let mut parser = HelloParser::new();
        for end in 0..split.len() {
            assert_eq!(parser.feed(&split[..end]), Ok(None), "{} [..{end}]", f.name);
        }
        assert_eq!(
            parser.feed(&split),
            Ok(Some(must_parse(f.bytes))),
            "{}",
            f.name
        );
    }
    // The incremental parser is what keeps this linear; spot-check plain parse too.
    let split = records(&handshake_message(fixture!("chromium_pq")), || 1);
    for end in (0..split.len()).step_by(97) {
        assert_eq!(parse(&split[..end]), Ok(None), "[..{end}]");
    }
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    let mut bytes = fixture!("curl_openssl3").to_vec();
    bytes.extend_from_slice(b"\x14\x03\x03\x00\x01\x01garbage");
    assert_eq!(must_parse(&bytes), must_parse(fixture!("curl_openssl3")));
}

#[test]
fn plain_http_is_not_tls() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: x.example.test\r\n\r\n"[..],
        b"G",
        b"\x80\x2e\x01",
    ] {
        assert_eq!(parse(input), Err(HelloError::NotTls), "{input:?}");
    }
}

#[test]
fn application_data_record_is_not_tls() {
    assert_eq!(parse(b"\x17\x03\x03\x00\x05hello"), Err(HelloError::NotTls));
}

#[test]
fn other_record_inside_a_fragmented_hello_is_malformed() {
    let message = handshake_message(fixture!("curl_openssl3"));
    let mut bytes = records(&message[..100], || 100);
    bytes.extend_from_slice(b"\x17\x03\x03\x00\x01x");
    assert!(matches!(parse(&bytes), Err(HelloError::Malformed(_))));
    // The verdict comes as soon as the stray content type arrives.
    assert!(matches!(
        parse(&bytes[..106]),
        Err(HelloError::Malformed(_))
    ));
}

#[test]
fn server_hello_is_not_a_client_hello() {
    assert_eq!(
        parse(b"\x16\x03\x03\x00\x04\x02"),
        Err(HelloError::NotClientHello)
    );
    assert_eq!(
        parse(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"),
        Err(HelloError::NotClientHello)
    );
}

#[test]
fn bad_record_headers_are_malformed() {
    let cases: [&[u8]; 4] = [
        b"\x16\x02",                 // not a 3.x record version
        b"\x16\x03\x01\x00\x00",     // empty handshake record
        b"\x16\x03\x01\x40\x01",     // 2^14 + 1
        b"\x16\x03\x01\xff\xff\x01", // far over 2^14
    ];
    for input in cases {
        assert!(
            matches!(parse(input), Err(HelloError::Malformed(_))),
            "{input:?}"
        );
    }
    assert_eq!(parse(b"\x16\x03\x01\x40\x00\x01"), Ok(None));
}

#[test]
fn oversized_hello_is_too_large_from_its_header() {
    assert_eq!(
        parse(b"\x16\x03\x01\x40\x00\x01\x01\x00\x00"),
        Err(HelloError::TooLarge)
    );
    assert_eq!(
        parse(b"\x16\x03\x01\x40\x00\x01\xff\xff\xff"),
        Err(HelloError::TooLarge)
    );
    // Exactly the limit is still accepted as far as the header goes.
    assert_eq!(parse(b"\x16\x03\x01\x40\x00\x01\x00\xff\xfc"), Ok(None));
}

#[test]
fn truncated_bodies_are_malformed() {
    let message = handshake_message(fixture!("curl_openssl3"));
    let body = &message[HANDSHAKE_HEADER_LEN..];
    for cut in 1..=60 {
        let bytes = records(&hello_message(&body[..body.len() - cut]), || usize::MAX);
        assert!(
            matches!(parse(&bytes), Err(HelloError::Malformed(_))),
            "cut {cut}"
        );
    }
    for keep in 0..40 {
        let bytes = records(&hello_message(&body[..keep]), || usize::MAX);
        assert!(
            matches!(parse(&bytes), Err(HelloError::Malformed(_))),
            "keep {keep}"
        );
    }
}

#[test]
fn overlong_inner_lengths_are_malformed() {
    let bytes = hello_with(&[(EXT_SERVER_NAME, sni(&[(0, b"a.example.test")]))]);
    assert_eq!(
        must_parse(&bytes).server_name.as_deref(),
        Some("a.example.test")
    );
    // The host_name length is the last two bytes before the name itself.
    let at = bytes.len() - b"a.example.test".len() - 2;
    for delta in [1u8, 2, 0xff] {
        let mut bad = bytes.clone();
        bad[at + 1] = bad[at + 1].wrapping_add(delta);
        assert!(
            matches!(parse(&bad), Err(HelloError::Malformed(_))),
            "+{delta}"
        );
    }
}

#[test]
fn hello_without_extensions_is_fine() {
    let bytes = records(&hello_message(&body_with(None)), || usize::MAX);
    let hello = must_parse(&bytes);
    assert_eq!(hello.server_name, None);
    assert!(hello.alpn.is_empty() && hello.supported_versions.is_empty());
}

#[test]
fn bad_server_names_are_malformed() {
    let cases = [
        ("empty host_name", sni(&[(0, b"")])),
        ("empty list", vec16(&[])),
        ("empty extension", vec![]),
        ("non-ascii", sni(&[(0, "bücher.example".as_bytes())])),
        ("control byte", sni(&[(0, b"a\0.example")])),
        ("space", sni(&[(0, b"a b.example")])),
        (
            "two host_names",
            sni(&[(0, b"a.example"), (0, b"b.example")]),
        ),
    ];
    for (what, data) in cases {
        let bytes = hello_with(&[(EXT_SERVER_NAME, data)]);
        assert!(
            matches!(parse(&bytes), Err(HelloError::Malformed(_))),
            "{what}"
        );
    }
}

#[test]
fn unknown_server_name_types_are_skipped() {
    let bytes = hello_with(&[(EXT_SERVER_NAME, sni(&[(7, b"x"), (0, b"a.example")]))]);
    assert_eq!(must_parse(&bytes).server_name.as_deref(), Some("a.example"));
    let bytes = hello_with(&[(EXT_SERVER_NAME, sni(&[(7, b"x")]))]);
    assert_eq!(must_parse(&bytes).server_name, None);
}

#[test]
fn duplicate_extensions_are_malformed() {
    let name = sni(&[(0, b"a.example")]);
    let bytes = hello_with(&[(EXT_SERVER_NAME, name.clone()), (EXT_SERVER_NAME, name)]);
    assert_eq!(
        parse(&bytes),
        Err(HelloError::Malformed("duplicate extension"))
    );
    let bytes = hello_with(&[
        (0xfafa, vec![]),
        (EXT_ALPN, vec16(b"\x02h2")),
        (0xfafa, vec![]),
    ]);
    assert_eq!(
        parse(&bytes),
        Err(HelloError::Malformed("duplicate extension"))
    );
}

#[test]
fn bad_alpn_and_version_lists_are_malformed() {
    let cases = [
        (EXT_ALPN, vec16(b"")),
        (EXT_ALPN, vec16(b"\x00")),
        (EXT_ALPN, vec16(b"\x03h2")),
        (EXT_ALPN, [vec16(b"\x02h2"), vec![0]].concat()),
        (EXT_SIGNATURE_ALGORITHMS, vec16(b"\x04")),
        (EXT_SIGNATURE_ALGORITHMS, vec16(b"")),
        (EXT_SUPPORTED_VERSIONS, vec![0]),
        (EXT_SUPPORTED_VERSIONS, vec![3, 3, 4, 3]),
    ];
    for (ext_type, data) in cases {
        let bytes = hello_with(&[(ext_type, data.clone())]);
        assert!(
            matches!(parse(&bytes), Err(HelloError::Malformed(_))),
            "{ext_type} {data:?}"
        );
    }
    let bytes = hello_with(&[
        (EXT_SIGNATURE_ALGORITHMS, vec16(b"\x08\x04\x04\x03")),
        (EXT_SUPPORTED_VERSIONS, vec![4, 3, 4, 3, 3]),
    ]);
    let hello = must_parse(&bytes);
    assert_eq!(hello.signature_schemes, [0x0804, 0x0403]);
    assert_eq!(hello.supported_versions, [0x0304, 0x0303]);
}

#[test]
fn bytes_after_the_extensions_are_malformed() {
    let mut body = body_with(Some(&[]));
    body.push(0);
    let bytes = records(&hello_message(&body), || usize::MAX);
    assert!(matches!(parse(&bytes), Err(HelloError::Malformed(_))));
}

#[test]
fn a_finished_parser_keeps_its_answer() {
    let bytes = fixture!("curl_openssl3");
    let mut parser = HelloParser::new();
    let first = parser.feed(bytes);
    assert!(matches!(first, Ok(Some(_))));
    assert_eq!(parser.feed(b""), first);
    let mut parser = HelloParser::new();
    assert_eq!(parser.feed(b"GET"), Err(HelloError::NotTls));
    assert_eq!(parser.feed(bytes), Err(HelloError::NotTls));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..2000 {
        let mut bytes: Vec<u8> = (0..rng.below(600)).map(|_| rng.byte()).collect();
        let _ = parse(&bytes);
        // Also with a plausible header, so the parser gets past the first byte.
        bytes.splice(0..0, [0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc]);
        let _ = parse(&bytes);
    }
}

/// Mutates captured hellos many times: no input may panic, and feeding the mutant in
/// random pieces must give exactly what parsing it whole gives.
#[test]
fn fuzz_loop_over_mutated_fixtures() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> = fixtures()
        .iter()
        .flat_map(|f| {
            let message = handshake_message(f.bytes);
            [
                f.bytes.to_vec(),
                records(&message, || 3),
                records(&message, || 200),
            ]
        })
        .collect();
    let interesting = [0u8, 1, 2, 3, 0x16, 0x40, 0x7f, 0x80, 0xfe, 0xff];
    for _ in 0..10_000 {
        let mut bytes = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(7) {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
                1 if !bytes.is_empty() => bytes[at] = rng.byte(),
                2 if !bytes.is_empty() => bytes[at] = interesting[rng.below(interesting.len())],
                3 => bytes.truncate(at),
                4 => {
                    let extra: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.byte()).collect();
                    bytes.splice(at..at, extra);
                }
                5 => {
                    let end = (at + 1 + rng.below(16)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ if bytes.len() >= 2 => {
                    let at = rng.below(bytes.len() - 1);
                    let value: u16 = [0, 1, 0xff, 0x100, 0x3fff, 0x4000, 0xffff][rng.below(7)];
                    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
                }
                _ => {}
            }
        }
        let whole = parse(&bytes);
        let mut parser = HelloParser::new();
        let mut end = 0;
        let pieces = loop {
            end = (end + 1 + rng.below(300)).min(bytes.len());
            let got = parser.feed(&bytes[..end]);
            if got != Ok(None) || end == bytes.len() {
                break got;
            }
        };
        assert_eq!(pieces, whole, "{bytes:02x?}");
    }
}

#[test]
fn errors_say_what_went_wrong() {
    let text = HelloError::Malformed("duplicate extension").to_string();
    assert_eq!(text, "malformed ClientHello: duplicate extension");
    assert!(HelloError::TooLarge.to_string().contains("65536"));
}
