//! Tests of the fast path.
use super::*;
use crate::parse::parse_event_slow;
use crate::synth::{Synth, SynthConfig};

const EXAMPLE: &str = r#"{"event_id":"r-1","type":"survey_response","occurred_at":"2026-11-23T10:00:00Z","brand":"acme","segment":"smb","survey":"nps","score":9}"#;

/// The fast path takes `s` and agrees with the slow path.
fn fast(s: &str) -> Event<'_> {
    let e = parse_fast(s.as_bytes()).unwrap_or_else(|| panic!("fast path refused {s}"));
    assert_eq!(parse_event_slow(s.as_bytes()), Ok(e.clone()), "{s}");
    e
}

/// The fast path leaves `s` to the slow path.
fn slow(s: &str) {
    assert_eq!(parse_fast(s.as_bytes()), None, "fast path took {s}");
}

/// Like [`slow`], for input the slow path accepts (so only the fast path's shape rule refuses).
fn slow_but_valid(s: &str) {
    slow(s);
    assert!(parse_event_slow(s.as_bytes()).is_ok(), "{s}");
}

/// Like [`slow`], for input the slow path rejects.
fn slow_and_invalid(s: &str) {
    slow(s);
    assert!(parse_event_slow(s.as_bytes()).is_err(), "{s}");
}

fn nps(score: &str) -> String {
    EXAMPLE.replace("\"score\":9", &format!("\"score\":{score}"))
}

#[test]
fn common_events_take_the_fast_path() {
    let e = fast(EXAMPLE);
    assert!(matches!(e.event_id, Cow::Borrowed("r-1")));
    assert!(matches!(e.brand, Cow::Borrowed("acme")));
    assert_eq!(e.occurred_at_ms, 1_795_428_000_000);
    fast(&format!(" \n\t{}\r\n ", EXAMPLE.replace(",", " ,\n ").replace("\":", "\"\t: ")));
    fast(&EXAMPLE.replace(r#","segment":"smb""#, ""));
    fast(&EXAMPLE.replace("\"score\":9", "\"score\":\"09\",\"schema\":1,\"response_id\":\"r\""));
    fast(&EXAMPLE.replace("\"nps\",\"score\":9", "\"csat\",\"score\":7,\"scale_max\":7"));
    fast(&EXAMPLE.replace("\"nps\",\"score\":9", "\"ces\",\"score\":\"1\""));
    fast(
        r#"{"event_id":"é😀","type":"customer_lifecycle","occurred_at":0,"brand":"b","action":"churn","customer_id":"c"}"#,
    );
    fast(
        r#"{"type":"customer_base","event_id":"e","occurred_at":253402300799999,"brand":"b","active_customers":0}"#,
    );
    // Fields that do not belong to the type are ignored, as by the slow path.
    fast(&EXAMPLE.replace(
        "\"score\":9",
        "\"score\":9,\"scale_max\":\"x\",\"action\":3,\"active_customers\":\"n\"",
    ));
    // Timestamps with offsets and fractions go through the same chrono call.
    fast(&EXAMPLE.replace("10:00:00Z", "12:00:00.123456789+02:00"));
}

#[test]
fn synthetic_events_take_the_fast_path() {
    let mut synth = Synth::new(SynthConfig { invalid_ratio: 0.1, ..SynthConfig::default() });
    let mut fast_hits = 0;
    for i in 0..5_000 {
        let message = synth.next_message(1_795_000_000_000 + i);
        let bytes = message.payload.as_bytes();
        match parse_event_slow(bytes) {
            Ok(e) => {
                assert_eq!(parse_fast(bytes), Some(e), "{}", message.payload);
                fast_hits += 1;
            }
            Err(_) => assert_eq!(parse_fast(bytes), None, "{}", message.payload),
        }
    }
    assert!(fast_hits > 4_000, "{fast_hits}");
}

#[test]
fn unknown_fields_with_simple_values_take_the_fast_path() {
    // Fields producers add, as the schema allows: strings and integers, repeated or not.
    fast(&nps("9,\"source\":\"qualtrics\",\"locale\":\"de-DE\",\"attempt\":2"));
    fast(&nps("9,\"note\":\"ü\",\"note\":\"\",\"\":0"));
    fast(&EXAMPLE.replace("{", "{\"x\" : \"y\" ,"));
    // ... still with every check on the known ones.
    slow_and_invalid(&nps("11,\"source\":\"qualtrics\""));
    slow_and_invalid(&nps("9,\"source\":\"qualtrics\",\"score\":9"));
    slow_and_invalid(&nps("9,\"source\":\"a\tb\""));
    slow_and_invalid(&nps("9,\"so\turce\":1"));
    slow_and_invalid(&nps("9,\"source\":01"));
    slow_and_invalid(&nps("9,\"source\""));
}

#[test]
fn shape_the_fast_path_leaves_alone() {
    // Unknown keys with values other than plain strings and integers.
    slow_but_valid(&nps("9,\"note\":null"));
    slow_but_valid(&nps("9,\"note\":true"));
    slow_but_valid(&nps("9,\"note\":{\"a\":1}"));
    slow_but_valid(&nps("9,\"note\":[1]"));
    slow_but_valid(&nps("9,\"note\":-1"));
    slow_but_valid(&nps("9,\"note\":1.5"));
    slow_but_valid(&nps("9,\"note\":\"a\\nb\""));
    slow_but_valid(&nps("9,\"n\\u006fte\":1"));
    // Escapes in keys or values.
    slow_but_valid(&EXAMPLE.replace("\"brand\"", "\"\\u0062rand\""));
    slow_but_valid(&EXAMPLE.replace("\"r-1\"", "\"r\\u002d1\""));
    slow_but_valid(&nps("\"\\u0039\""));
    // null, booleans, nested values.
    slow_but_valid(&EXAMPLE.replace("\"smb\"", "null"));
    slow_but_valid(&EXAMPLE.replace("\"score\":9", "\"score\":9,\"action\":true"));
    slow_but_valid(&EXAMPLE.replace("\"score\":9", "\"score\":9,\"action\":[1]"));
    slow_but_valid(&EXAMPLE.replace("\"score\":9", "\"score\":9,\"action\":{}"));
    // Integers longer than the fast path reads.
    slow_and_invalid(
        r#"{"type":"customer_base","event_id":"e","occurred_at":1,"brand":"b","active_customers":18446744073709551615}"#,
    );
    slow_but_valid(&EXAMPLE.replace("\"score\":9", "\"score\":9,\"scale_max\":1234567890123456"));
}

#[test]
fn invalid_input_the_fast_path_leaves_alone() {
    // Not an object, broken structure, trailing garbage.
    for bad in ["", " ", "{", "}", "{}", "[]", "1", "\"x\"", "null", "\u{feff}{}"] {
        slow_and_invalid(bad);
    }
    slow_and_invalid(&EXAMPLE.replace("}", ",}"));
    slow_and_invalid(&EXAMPLE.replace("\"score\":9", "\"score\" 9"));
    slow_and_invalid(&EXAMPLE.replace("\"score\":9", "\"score\":9 \"x\":1"));
    slow_and_invalid(&format!("{EXAMPLE} x"));
    slow_and_invalid(&format!("{EXAMPLE}{EXAMPLE}"));
    slow_and_invalid(&format!("{EXAMPLE}\u{c}"));
    slow_and_invalid(&EXAMPLE[..EXAMPLE.len() - 1]);
    slow_and_invalid(&EXAMPLE[..EXAMPLE.len() - 10]);
    slow_and_invalid(&nps("9}"));
    // Numbers that are not plain integers.
    for bad in ["09", "9.0", "9e0", "9E0", "9.", "-1", "-0", "\"-0\"", "9x", "+9", ".9"] {
        slow_and_invalid(&nps(bad));
    }
    // A control character in a string.
    slow_and_invalid(&EXAMPLE.replace("r-1", "r\t1"));
    // Duplicate keys.
    slow_and_invalid(&nps("9,\"score\":9"));
    slow_and_invalid(&nps("9,\"brand\":\"acme\""));
    // Invalid UTF-8.
    let mut bytes = EXAMPLE.replace("r-1", "r\u{e9}1").into_bytes();
    let at = bytes.iter().position(|&b| b == 0xc3).unwrap();
    bytes[at + 1] = b'x';
    assert_eq!(parse_fast(&bytes), None);
    assert!(parse_event_slow(&bytes).is_err());
    // Too large, even if well-formed.
    let big = nps(&format!("9,\"response_id\":\"{}\"", "r".repeat(MAX_EVENT_BYTES)));
    assert_eq!(parse_fast(big.as_bytes()), None);
}

#[test]
fn invalid_fields_the_fast_path_leaves_alone() {
    let lifecycle = r#"{"event_id":"e","type":"customer_lifecycle","occurred_at":1,"brand":"b","action":"churn","customer_id":"c"}"#;
    let base = r#"{"event_id":"e","type":"customer_base","occurred_at":1,"brand":"b","active_customers":5}"#;
    fast(lifecycle);
    fast(base);
    for bad in [
        // schema
        EXAMPLE.replace("{", "{\"schema\":2,"),
        EXAMPLE.replace("{", "{\"schema\":\"1\","),
        EXAMPLE.replace("{", "{\"schema\":0,"),
        // type
        EXAMPLE.replace("survey_response", "survey_reply"),
        EXAMPLE.replace("\"survey_response\"", "1"),
        EXAMPLE.replace(r#""type":"survey_response","#, ""),
        // event_id
        EXAMPLE.replace("\"r-1\"", "\"\""),
        EXAMPLE.replace("\"r-1\"", &format!("\"{}\"", "r".repeat(129))),
        EXAMPLE.replace("\"r-1\"", "7"),
        EXAMPLE.replace(r#""event_id":"r-1","#, ""),
        // occurred_at
        EXAMPLE.replace("\"2026-11-23T10:00:00Z\"", "253402300800000"),
        EXAMPLE.replace("10:00:00Z", "10:00:00"),
        EXAMPLE.replace("2026-11-23T10:00:00Z", "9999-12-31T23:59:59-01:00"),
        EXAMPLE.replace("2026-11-23T10:00:00Z", "1969-12-31T23:59:59Z"),
        EXAMPLE.replace("2026-11-23T10:00:00Z", "1795000000000"),
        EXAMPLE.replace(r#""occurred_at":"2026-11-23T10:00:00Z","#, ""),
        // brand, segment
        EXAMPLE.replace("\"acme\"", "\"ac me\""),
        EXAMPLE.replace("\"acme\"", "\"acmé\""),
        EXAMPLE.replace("\"acme\"", "\"__overflow__\""),
        EXAMPLE.replace("\"acme\"", &format!("\"{}\"", "a".repeat(65))),
        EXAMPLE.replace("\"smb\"", "\"\""),
        EXAMPLE.replace("\"smb\"", "5"),
        EXAMPLE.replace(r#""brand":"acme","#, ""),
        // customer_id, checked on every type
        nps("9,\"customer_id\":\"\""),
        // survey, score, scale_max, response_id
        EXAMPLE.replace("\"nps\"", "\"NPS\""),
        EXAMPLE.replace(r#""survey":"nps","#, ""),
        EXAMPLE.replace(r#","score":9"#, ""),
        nps("11"),
        nps("\"11\""),
        nps("\"\""),
        nps("\"9 \""),
        nps("\"99999999999999999999999\""),
        nps("256"),
        EXAMPLE.replace("\"nps\",\"score\":9", "\"ces\",\"score\":0"),
        EXAMPLE.replace("\"nps\",\"score\":9", "\"ces\",\"score\":8"),
        EXAMPLE.replace("\"nps\",\"score\":9", "\"csat\",\"score\":6"),
        EXAMPLE.replace("\"nps\",\"score\":9", "\"csat\",\"score\":0"),
        EXAMPLE.replace("\"nps\",\"score\":9", "\"csat\",\"score\":3,\"scale_max\":6"),
        EXAMPLE.replace("\"nps\",\"score\":9", "\"csat\",\"score\":3,\"scale_max\":\"5\""),
        EXAMPLE.replace("\"nps\",\"score\":9", "\"csat\",\"score\":8,\"scale_max\":7"),
        nps("9,\"response_id\":\"\""),
        nps("9,\"response_id\":1"),
        // lifecycle
        lifecycle.replace(r#","customer_id":"c""#, ""),
        lifecycle.replace("\"c\"", "1"),
        lifecycle.replace("churn", "CHURN"),
        lifecycle.replace(r#","action":"churn""#, ""),
        // customer_base
        base.replace("5}", "\"5\"}"),
        base.replace(r#","active_customers":5"#, ""),
    ] {
        slow_and_invalid(&bad);
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    /// Values of every kind, right, wrong and odd.
    fn odd_value() -> BoxedStrategy<String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            "-?[0-9]{1,22}",
            "0[0-9]{1,3}",
            "[0-9]{1,3}\\.[0-9]{0,3}",
            "[0-9]{1,3}[eE][+-]?[0-9]{1,2}",
            "[0-9]{13,17}",
            "25340230079999[0-9]",
            "\"[a-zA-Z0-9_ :.+/-]{0,10}\"",
            "\"[0-9]{0,4}\"",
            "\"[0-9]{20,30}\"",
            "\"(\\\\u[0-9a-fA-F]{4}|\\\\[nt\"\\\\/]|[a-zé😀\t])*\"",
            timestamp(),
            prop_oneof![
                Just("nps"),
                Just("csat"),
                Just("ces"),
                Just("survey_response"),
                Just("customer_lifecycle"),
                Just("customer_base"),
                Just("churn"),
                Just("signup"),
                Just("__overflow__"),
                Just(""),
            ]
            .prop_map(|s| format!("\"{s}\"")),
            "\\[[0-9,]{0,5}\\]",
            Just("{}".to_string()),
            "\\{\"[a-z]{1,3}\":[0-9]\\}",
            "[\\[\\]{}\",:0-9a-z ]{0,20}",
        ]
        .boxed()
    }

    /// RFC 3339-ish timestamps: mostly right, sometimes out of range or oddly spelled.
    fn timestamp() -> BoxedStrategy<String> {
        (
            prop_oneof![
                4 => (1970u32..=2100).prop_map(|y| format!("{y:04}")),
                1 => "[0-9]{4,5}",
            ],
            prop_oneof![4 => (1u32..=12).prop_map(|m| format!("{m:02}")), 1 => "[0-9]{1,2}"],
            prop_oneof![4 => (1u32..=28).prop_map(|d| format!("{d:02}")), 1 => "[0-3][0-9]"],
            prop_oneof![8 => Just("T"), 1 => Just("t"), 1 => Just(" ")],
            prop_oneof![4 => (0u32..=23).prop_map(|h| format!("{h:02}")), 1 => "[0-9]{2}"],
            "[0-6][0-9]",
            prop_oneof![4 => (0u32..=59).prop_map(|s| format!("{s:02}")), 1 => Just("60".to_string()), 1 => "[0-9]{2}"],
            prop_oneof![3 => Just(String::new()), 1 => "\\.[0-9]{0,12}"],
            prop_oneof![
                4 => Just("Z".to_string()),
                1 => Just("z".to_string()),
                1 => Just(String::new()),
                2 => "[+-][0-2][0-9]:[0-6][0-9]",
                1 => "[+-][0-9]{4}",
            ],
        )
            .prop_map(|(y, mo, d, t, h, mi, s, frac, off)| {
                format!("\"{y}-{mo}-{d}{t}{h}:{mi}:{s}{frac}{off}\"")
            })
            .boxed()
    }

    /// `(key, value)` with a right value most of the time, else an odd one, or no field.
    fn field(
        name: &'static str,
        good: BoxedStrategy<String>,
    ) -> BoxedStrategy<Option<(String, String)>> {
        prop_oneof![
            24 => good.prop_map(Some),
            2 => odd_value().prop_map(Some),
            1 => Just(None),
        ]
        .prop_map(move |v| v.map(|v| (name.to_string(), v)))
        .boxed()
    }

    fn pick(values: &'static [&'static str]) -> BoxedStrategy<String> {
        proptest::sample::select(values).prop_map(str::to_string).boxed()
    }

    fn good_fields(clean: bool) -> BoxedStrategy<Vec<(String, String)>> {
        let good = |values: &'static [&'static str]| pick(values);
        let time = prop_oneof![
            2 => (0i64..=253_402_300_799_999).prop_map(|n| n.to_string()),
            1 => (1_700_000_000_000i64..1_900_000_000_000).prop_map(|n| n.to_string()),
            1 => timestamp(),
        ]
        .boxed();
        let id = "\"[a-zA-Z0-9 é_-]{1,10}\"".boxed();
        let label = "\"[a-zA-Z0-9_.:-]{1,8}\"".boxed();
        let fields = vec![
            field("schema", good(&["1"])),
            field(
                "type",
                good(&["\"survey_response\"", "\"customer_lifecycle\"", "\"customer_base\""]),
            ),
            field("event_id", id.clone()),
            field("occurred_at", time),
            field("brand", label.clone()),
            field("segment", label),
            field("customer_id", id.clone()),
            field("survey", good(&["\"nps\"", "\"csat\"", "\"ces\""])),
            field(
                "score",
                prop_oneof![3 => (0u32..=11).prop_map(|n| n.to_string()), 1 => "\"0?[0-9]{1,2}\""]
                    .boxed(),
            ),
            field("scale_max", good(&["5", "7", "10"])),
            field("response_id", id.clone()),
            field("comment", prop_oneof![3 => id, 1 => Just("\"\"".to_string()), 1 => "\"[a\\\\n]{0,4}\"".boxed()].boxed()),
            field(
                "action",
                good(&[
                    "\"churn\"",
                    "\"signup\"",
                    "\"renewal\"",
                    "\"purchase\"",
                    "\"reactivation\"",
                ]),
            ),
            field(
                "active_customers",
                (0u64..=999_999_999_999_999).prop_map(|n| n.to_string()).boxed(),
            ),
        ];
        if clean {
            // Only the shape the fast path takes, with fields of the producer's own.
            let unknown =
                "[a-z_]{0,12}".prop_filter("an unknown key", |k| Field::named(k).is_none());
            let extra = proptest::collection::vec((unknown, odd_value()), 0..3);
            return (fields, extra)
                .prop_map(|(fields, extra)| {
                    let fields = fields.into_iter().flatten().chain(extra);
                    fields.filter(|(_, v)| is_plain(v)).collect()
                })
                .prop_shuffle()
                .boxed();
        }
        (
            fields,
            proptest::option::weighted(0.2, (0usize..14, odd_value())),
            proptest::option::weighted(0.2, ("[a-z_]{1,12}|\\\\u0074ype|type", odd_value())),
        )
            .prop_map(|(fields, dup, extra)| {
                let mut fields: Vec<_> = fields.into_iter().flatten().collect();
                if let Some((at, v)) = dup {
                    if let Some((k, _)) = fields.get(at % fields.len().max(1)).cloned() {
                        fields.push((k, v));
                    }
                }
                if let Some(extra) = extra {
                    fields.push(extra);
                }
                fields
            })
            .prop_shuffle()
            .boxed()
    }

    /// A string without escapes or control characters, or an integer of at most 15 digits.
    fn is_plain(v: &str) -> bool {
        let string = v.len() >= 2
            && v.starts_with('"')
            && v.ends_with('"')
            && !v[1..v.len() - 1].bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        let integer = (1..=15).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_digit())
            && (v == "0" || !v.starts_with('0'));
        string || integer
    }

    fn ws() -> BoxedStrategy<String> {
        prop_oneof![40 => Just(String::new()), 6 => "[ \t\n\r]{1,3}", 1 => Just("\u{c}".to_string())].boxed()
    }

    fn render(fields: &[(String, String)], ws: &[String]) -> String {
        let mut w = ws.iter().cycle();
        let mut out = format!("{}{{", w.next().unwrap());
        for (n, (k, v)) in fields.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{}\"{k}\"{}:{}{v}{}",
                w.next().unwrap(),
                w.next().unwrap(),
                w.next().unwrap(),
                w.next().unwrap()
            ));
        }
        out.push('}');
        out.push_str(w.next().unwrap());
        out
    }

    #[derive(Clone, Debug)]
    enum Mutation {
        None,
        Truncate(usize),
        Append(String),
        Byte(usize, u8),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            20 => Just(Mutation::None),
            1 => any::<usize>().prop_map(Mutation::Truncate),
            1 => "[ x,}{\"0-9]{1,3}".prop_map(Mutation::Append),
            1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Byte(at, b)),
        ]
    }

    fn apply(text: String, m: &Mutation) -> Vec<u8> {
        let mut bytes = text.into_bytes();
        match m {
            Mutation::None => {}
            Mutation::Truncate(at) => bytes.truncate(at % (bytes.len() + 1)),
            Mutation::Append(s) => bytes.extend_from_slice(s.as_bytes()),
            Mutation::Byte(at, b) => {
                let at = at % bytes.len();
                bytes[at] = *b;
            }
        }
        bytes
    }

    /// The differential test is only as good as the share of its inputs the fast path takes.
    #[test]
    fn differential_inputs_often_take_the_fast_path() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let inputs = (good_fields(false), proptest::collection::vec(ws(), 1..64), mutation());
        let (mut fast_hits, mut slow_ok) = (0, 0);
        for _ in 0..2_000 {
            let (fields, ws, m) = inputs.new_tree(&mut runner).unwrap().current();
            let bytes = apply(render(&fields, &ws), &m);
            fast_hits += usize::from(parse_fast(&bytes).is_some());
            slow_ok += usize::from(parse_event_slow(&bytes).is_ok());
        }
        eprintln!("{fast_hits} fast of {slow_ok} valid");
        assert!(fast_hits >= 100 && slow_ok > fast_hits, "{fast_hits} fast of {slow_ok} valid");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The word-at-a-time string scan finds what a byte-at-a-time one finds, UTF-8 checked.
        #[test]
        fn string_end_matches_a_plain_scan(
            body in proptest::collection::vec(
                prop_oneof![
                    6 => any::<u8>(),
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                    2 => 0x7fu8..=0xff,
                    4 => Just(b'a'),
                ],
                0..40,
            ),
        ) {
            let mut b = vec![b'"'];
            b.extend_from_slice(&body);
            let naive = body
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .filter(|&at| body[at] == b'"' && std::str::from_utf8(&body[..at]).is_ok())
                .map(|at| at + 1);
            prop_assert_eq!(string_end(&b, 0), naive);
        }

        /// The hand-read timestamp is the reference path's, whenever the hand reader takes it.
        #[test]
        fn rfc3339_by_hand_agrees_with_the_reference(ts in timestamp()) {
            if let Some(ms) = rfc3339_ms(ts.as_bytes()) {
                prop_assert_eq!(occurred_at(&ts), Ok(ms), "{}", ts);
            }
        }

        /// Whatever the fast path returns, the slow path returns too.
        #[test]
        fn fast_path_agrees_with_slow_path(
            fields in good_fields(false),
            ws in proptest::collection::vec(ws(), 1..64),
            m in mutation(),
        ) {
            let bytes = apply(render(&fields, &ws), &m);
            if let Some(e) = parse_fast(&bytes) {
                prop_assert_eq!(parse_event_slow(&bytes), Ok(e), "{}", String::from_utf8_lossy(&bytes));
            }
        }

        /// Events of the common shape that the slow path accepts are the fast path's.
        #[test]
        fn fast_path_takes_every_valid_plain_event(
            fields in good_fields(true),
            ws in proptest::collection::vec(prop_oneof![4 => Just(String::new()), 1 => "[ \t\n\r]{1,3}"], 1..64),
        ) {
            let text = render(&fields, &ws);
            let bytes = text.as_bytes();
            match parse_event_slow(bytes) {
                Ok(e) => prop_assert_eq!(parse_fast(bytes), Some(e), "{}", text),
                Err(_) => prop_assert_eq!(parse_fast(bytes), None, "{}", text),
            }
        }
    }
}

#[test]
fn the_fast_path_knows_every_schema_field_and_no_other_key() {
    for (slot, field) in Field::ALL.into_iter().enumerate() {
        assert_eq!(field as usize, slot, "{field:?}");
        assert_eq!(Field::named(field.name()), Some(field));
        let key = format!("{}\":1", field.name());
        assert_eq!(key_slot(key.as_bytes()), Some((slot, field.name().len() + 1)), "{key}");
    }
    for other in ["typ\"", "types\"", "scor\"", "actions\"", "brand_\"", "x\"", "segment"] {
        assert_eq!(key_slot(other.as_bytes()), None, "{other}");
    }
}

#[test]
fn common_timestamps_are_read_by_hand_as_the_reference_reads_them() {
    for ts in [
        "1970-01-01T00:00:00Z",
        "1970-01-01T01:00:00+01:00",
        "2026-11-23T10:00:00Z",
        "2026-11-23T12:00:00+02:00",
        "2026-11-23T05:30:00-04:30",
        "2026-11-23T10:00:00.25Z",
        "2026-11-23T10:00:00.999999999-00:00",
        "2024-02-29T23:59:59.123+05:30",
        "2000-02-29T00:00:00Z",
        "9999-12-31T23:59:59.999Z",
    ] {
        let quoted = format!("\"{ts}\"");
        let by_hand = rfc3339_ms(quoted.as_bytes());
        assert!(by_hand.is_some(), "{ts}");
        assert_eq!(occurred_at(&quoted).ok(), by_hand, "{ts}");
    }
    // Left to the reference path, which accepts or rejects them.
    for ts in [
        "2026-11-23t10:00:00Z",
        "2026-11-23 10:00:00Z",
        "2026-11-23T10:00:00z",
        "2026-11-23T23:59:60Z",
        "2026-11-23T10:00:00.1234567890Z",
        "2026-11-23T10:00:00",
        "2026-11-23T10:00:00+0200",
        "2026-11-23T10:00:00+24:00",
        "2026-02-29T10:00:00Z",
        "1900-02-29T10:00:00Z",
        "2026-11-31T10:00:00Z",
        "2026-13-01T10:00:00Z",
        "1969-12-31T23:59:59Z",
        "9999-12-31T23:59:59-01:00",
        "2026-11-23T10:00:00.Z",
        "+2026-11-23T10:00:00Z",
    ] {
        assert_eq!(rfc3339_ms(format!("\"{ts}\"").as_bytes()), None, "{ts}");
    }
}
