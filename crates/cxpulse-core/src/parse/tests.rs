//! Tests of `parse`.

use super::*;
use RejectReason::*;

const EXAMPLE: &str = r#"{"event_id":"r-1","type":"survey_response","occurred_at":"2026-11-23T10:00:00Z","brand":"acme","segment":"smb","survey":"nps","score":9}"#;

/// 2026-11-23T10:00:00Z
const EXAMPLE_MS: i64 = 1_795_428_000_000;

fn parse(s: &str) -> Result<Event<'_>, Rejection> {
    parse_event(s.as_bytes())
}

fn reason(s: &str) -> RejectReason {
    match parse(s) {
        Ok(e) => panic!("accepted {s}: {e:?}"),
        Err(r) => r.reason,
    }
}

/// A survey_response with `extra` spliced in as further fields (before the others, so a
/// repeated known key is a duplicate).
fn survey(extra: &str) -> String {
    format!(
        r#"{{{extra}{}"event_id":"e","occurred_at":1795000000000,"brand":"b","type":"survey_response"}}"#,
        if extra.is_empty() { "" } else { "," }
    )
}

fn nps(score: &str) -> String {
    survey(&format!(r#""survey":"nps","score":{score}"#))
}

fn lifecycle(extra: &str) -> String {
    format!(
        r#"{{"event_id":"e","type":"customer_lifecycle","occurred_at":1,"brand":"b","action":"churn"{extra}}}"#
    )
}

fn base(count: &str) -> String {
    format!(
        r#"{{"event_id":"e","type":"customer_base","occurred_at":1,"brand":"b","active_customers":{count}}}"#
    )
}

fn with_occurred_at(value: &str) -> String {
    format!(
        r#"{{"event_id":"e","type":"customer_base","occurred_at":{value},"brand":"b","active_customers":1}}"#
    )
}

fn survey_of(s: &str) -> Survey {
    match parse(s) {
        Ok(Event { payload: Payload::Survey { survey, .. }, .. }) => survey,
        other => panic!("{s}: {other:?}"),
    }
}

#[test]
fn design_example() {
    let e = parse(EXAMPLE).unwrap();
    assert_eq!(
        e,
        Event {
            event_id: Cow::Borrowed("r-1"),
            occurred_at_ms: EXAMPLE_MS,
            brand: Cow::Borrowed("acme"),
            segment: Cow::Borrowed("smb"),
            payload: Payload::Survey {
                survey: Survey::Nps { score: 9 },
                response_id: None,
                customer_id: None,
                comment: None
            },
        }
    );
    // Plain strings are borrowed from the payload, not copied.
    assert!(matches!(e.event_id, Cow::Borrowed(_)));
    assert!(matches!(e.brand, Cow::Borrowed(_)));
    assert!(matches!(e.segment, Cow::Borrowed(_)));
}

#[test]
fn every_reason_parse_can_produce() {
    let cases = [
        (TooLarge, " ".repeat(MAX_EVENT_BYTES + 1)),
        (InvalidJson, "{".to_string()),
        (MissingField, survey(r#""survey":"nps""#)),
        (InvalidField, nps("9.5")),
        (ScoreOutOfRange, nps("11")),
        (UnknownType, EXAMPLE.replace("survey_response", "survey_reply")),
        (UnknownSchema, survey(r#""schema":2,"survey":"nps","score":9"#)),
    ];
    for (want, input) in cases {
        let r = parse(&input).unwrap_err();
        assert_eq!(r.reason, want, "{input}: {r}");
        assert!(!r.detail.is_empty());
    }
}

#[test]
fn details_name_the_field_and_the_problem() {
    let r = parse(&nps("11")).unwrap_err();
    assert_eq!(r.detail, "field `score`: 11 is outside 0..=10 for nps");
    assert_eq!(r.to_string(), "score_out_of_range: field `score`: 11 is outside 0..=10 for nps");
    assert_eq!(parse(&survey(r#""score":1"#)).unwrap_err().detail, "field `survey` is missing");
    assert_eq!(
        parse(&survey(r#""survey":null,"score":1"#)).unwrap_err().detail,
        "field `survey` is null"
    );
    // A huge value is quoted only in part.
    let r = parse(&nps(&format!("\"{}\"", "9".repeat(500)))).unwrap_err();
    assert_eq!(r.reason, ScoreOutOfRange);
    assert!(r.detail.len() < 120, "{}", r.detail);
}

#[test]
fn size_limit_is_inclusive_and_checked_first() {
    let mut exact = EXAMPLE.trim_end_matches('}').to_string() + r#","pad":""#;
    let pad = MAX_EVENT_BYTES - exact.len() - 2;
    exact.push_str(&"x".repeat(pad));
    exact.push_str("\"}");
    assert_eq!(exact.len(), MAX_EVENT_BYTES);
    assert!(parse(&exact).is_ok());

    let over = exact.replacen("\"pad\":\"", "\"pad\":\"x", 1);
    assert_eq!(over.len(), MAX_EVENT_BYTES + 1);
    assert_eq!(reason(&over), TooLarge);
    // Size beats every other problem, even bytes that are not UTF-8.
    assert_eq!(parse_event(&vec![0xff; MAX_EVENT_BYTES + 1]).unwrap_err().reason, TooLarge);
}

#[test]
fn malformed_json() {
    for input in [
        "",
        "   ",
        "{",
        "nul",
        "[]",
        "[1,2]",
        "\"event\"",
        "42",
        "null",
        "true",
        r#"{"event_id":"e",}"#,
        r#"{"event_id" "e"}"#,
        r#"{'event_id':'e'}"#,
        r#"{"a":NaN}"#,
        r#"{"a":01}"#,
        r#"{"a":"tab	inside"}"#,
        r#"{"a":"bad \x escape"}"#,
        "\u{feff}{}",
    ] {
        assert_eq!(reason(input), InvalidJson, "{input:?}");
    }
    // Trailing garbage after a complete, valid event.
    assert_eq!(reason(&format!("{EXAMPLE} x")), InvalidJson);
    assert_eq!(reason(&format!("{EXAMPLE}{EXAMPLE}")), InvalidJson);
    // Trailing whitespace is not garbage.
    assert!(parse(&format!("\n {EXAMPLE} \n")).is_ok());
}

#[test]
fn invalid_utf8_is_invalid_json() {
    assert_eq!(parse_event(b"\xff").unwrap_err().reason, InvalidJson);
    let mut bytes = EXAMPLE.replace("\"score\":9", "\"note\":\"XX\",\"score\":9").into_bytes();
    let at = bytes.windows(2).position(|w| w == b"XX").unwrap();
    bytes[at] = 0xc3; // a lead byte without its continuation
    bytes[at + 1] = b'(';
    assert_eq!(parse_event(&bytes).unwrap_err().reason, InvalidJson);
    // Well-formed UTF-8 in an unknown field is fine.
    assert!(parse(&EXAMPLE.replace("\"score\":9", "\"note\":\"très bien 👍\",\"score\":9")).is_ok());
}

#[test]
fn duplicate_known_fields_are_invalid_json() {
    assert_eq!(reason(&survey(r#""survey":"nps","score":9,"score":9"#)), InvalidJson);
    assert_eq!(reason(&survey(r#""survey":"nps","score":9,"brand":"b""#)), InvalidJson);
    // Even when one of them is null, and when the key is spelled with an escape.
    assert_eq!(
        reason(&survey(r#""survey":"nps","score":9,"segment":null,"segment":"s""#)),
        InvalidJson
    );
    assert_eq!(reason(&survey(r#""survey":"nps","score":9,"\u0062rand":"b""#)), InvalidJson);
    let r = parse(&survey(r#""survey":"nps","score":9,"score":10"#)).unwrap_err();
    assert!(r.detail.contains("duplicate field `score`"), "{}", r.detail);
    // Repeated unknown keys are nobody's business.
    assert!(parse(&survey(r#""survey":"nps","score":9,"x":1,"x":2"#)).is_ok());
}

#[test]
fn escaped_keys_are_matched_after_decoding() {
    let input = survey(r#""\u0073urvey":"nps","sc\u006fre":3"#);
    let e = parse(&input).unwrap();
    let nps3 = Survey::Nps { score: 3 };
    let expected =
        Payload::Survey { survey: nps3, response_id: None, customer_id: None, comment: None };
    assert_eq!(e.payload, expected);
}

#[test]
fn deep_nesting_is_invalid_json() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(reason(&survey(&format!(r#""survey":"nps","score":9,"x":{deep}"#))), InvalidJson);
    let open = "[".repeat(10_000);
    assert_eq!(reason(&survey(&format!(r#""survey":"nps","score":9,"x":{open}"#))), InvalidJson);
    let objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    assert_eq!(reason(&survey(&format!(r#""survey":"nps","score":9,"x":{objects}"#))), InvalidJson);
    // In a known field too: too deep is malformed, not merely the wrong type.
    assert_eq!(reason(&nps(&deep)), InvalidJson);
    assert_eq!(reason(&nps("[[1]]")), InvalidField);
    // Brackets inside strings are text.
    let text = format!("\"{}\\\"{}\"", "[".repeat(500), "{".repeat(500));
    assert!(parse(&survey(&format!(r#""survey":"nps","score":9,"x":[{text}]"#))).is_ok());
}

#[test]
fn nesting_limit_matches_serde_json() {
    for depth in 120..135 {
        let value = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for input in [
            survey(&format!(r#""survey":"nps","score":9,"x":{value}"#)),
            survey(&format!(r#""survey":"nps","score":9,"x":{{"y":{value}}}"#)),
            nps(&value),
        ] {
            let serde_ok = serde_json::from_str::<serde_json::Value>(&input).is_ok();
            let reason = parse(&input).err().map(|r| r.reason);
            let ours_ok = reason != Some(InvalidJson);
            assert_eq!(ours_ok, serde_ok, "depth {depth}: {reason:?}");
        }
    }
}

#[test]
fn schema() {
    assert!(parse(&survey(r#""schema":1,"survey":"nps","score":9"#)).is_ok());
    for v in ["0", "2", "-1", "99999999999999999999999"] {
        assert_eq!(
            reason(&survey(&format!(r#""schema":{v},"survey":"nps","score":9"#))),
            UnknownSchema,
            "{v}"
        );
    }
    for v in [r#""1""#, "1.0", "1e0", "true", "null", "[1]", "{}"] {
        assert_eq!(
            reason(&survey(&format!(r#""schema":{v},"survey":"nps","score":9"#))),
            InvalidField,
            "{v}"
        );
    }
    // Schema is judged before anything else in the object.
    assert_eq!(reason(r#"{"schema":2}"#), UnknownSchema);
    assert_eq!(reason(r#"{"schema":2,"type":"nope"}"#), UnknownSchema);
}

#[test]
fn event_type() {
    assert_eq!(reason(r#"{"event_id":"e"}"#), MissingField);
    assert_eq!(reason(r#"{"type":null}"#), MissingField);
    assert_eq!(reason(r#"{"type":7}"#), InvalidField);
    assert_eq!(reason(r#"{"type":["survey_response"]}"#), InvalidField);
    assert_eq!(reason(r#"{"type":"Survey_Response"}"#), UnknownType);
    assert_eq!(reason(r#"{"type":""}"#), UnknownType);
    // Type is judged before the common fields.
    assert_eq!(reason(r#"{"type":"other","brand":"!"}"#), UnknownType);
    assert!(parse(&EXAMPLE.replace("survey_response", r"survey\u005fresponse")).is_ok());
}

#[test]
fn event_id() {
    assert_eq!(reason(&EXAMPLE.replace(r#""event_id":"r-1","#, "")), MissingField);
    assert_eq!(reason(&EXAMPLE.replace(r#""r-1""#, "null")), MissingField);
    assert_eq!(reason(&EXAMPLE.replace(r#""r-1""#, r#""""#)), InvalidField);
    assert_eq!(reason(&EXAMPLE.replace(r#""r-1""#, "17")), InvalidField);
    let max = "x".repeat(128);
    assert_eq!(parse(&EXAMPLE.replace("r-1", &max)).unwrap().event_id, max);
    assert_eq!(reason(&EXAMPLE.replace("r-1", &"x".repeat(129))), InvalidField);
    // The length is of the decoded UTF-8 bytes: 64 two-byte characters fit, 65 do not.
    assert!(parse(&EXAMPLE.replace("r-1", &"é".repeat(64))).is_ok());
    assert_eq!(reason(&EXAMPLE.replace("r-1", &"é".repeat(65))), InvalidField);
}

#[test]
fn escaped_strings_are_decoded() {
    let input = EXAMPLE.replace("r-1", r#"r\u002d1 \"q\" \\ \n \ud83d\ude00"#);
    let e = parse(&input).unwrap();
    assert_eq!(e.event_id, "r-1 \"q\" \\ \n \u{1f600}");
    assert!(matches!(e.event_id, Cow::Owned(_)));
    // Label values are checked after decoding.
    assert_eq!(parse(&EXAMPLE.replace("acme", r"ac\u006de")).unwrap().brand, "acme");
    assert_eq!(reason(&EXAMPLE.replace("acme", r"ac\u0020me")), InvalidField);
    // An escape that decodes to no character cannot be text.
    assert_eq!(reason(&EXAMPLE.replace("r-1", r"\ud800")), InvalidJson);
    // ...but nobody decodes unknown fields.
    assert!(parse(&EXAMPLE.replace("\"score\"", r#""x":"\ud800","score""#)).is_ok());
}

#[test]
fn occurred_at_rfc3339() {
    let at = |v: &str| parse(&with_occurred_at(v)).map(|e| e.occurred_at_ms);
    assert_eq!(at(r#""2026-11-23T10:00:00Z""#), Ok(EXAMPLE_MS));
    assert_eq!(at(r#""2026-11-23T12:00:00+02:00""#), Ok(EXAMPLE_MS));
    assert_eq!(at(r#""2026-11-23T05:30:00-04:30""#), Ok(EXAMPLE_MS));
    assert_eq!(at(r#""2026-11-23T10:00:00.25Z""#), Ok(EXAMPLE_MS + 250));
    assert_eq!(at(r#""2026-11-23T10:00:00.123456789+00:00""#), Ok(EXAMPLE_MS + 123));
    assert_eq!(at(r#""1970-01-01T00:00:00Z""#), Ok(0));
    // Year 9999 is a time (the engine will call it too far in the future); 10000 is not.
    assert_eq!(at(r#""9999-12-31T23:59:59.999Z""#), Ok(MAX_OCCURRED_AT_MS));
    for bad in [
        r#""10000-01-01T00:00:00Z""#,
        r#""9999-12-31T23:59:59-01:00""#, // year 10000 in UTC
        r#""1969-12-31T23:59:59Z""#,
        r#""2026-11-23T10:00:00""#, // no offset
        r#""2026-11-23""#,
        r#""2026-13-01T00:00:00Z""#,
        r#""2026-11-23T10:00:00Z ""#,
        r#""1795000000000""#,
        r#""""#,
        "true",
    ] {
        assert_eq!(at(bad).unwrap_err().reason, InvalidField, "{bad}");
    }
    assert_eq!(at("null").unwrap_err().reason, MissingField);
}

#[test]
fn occurred_at_epoch_millis() {
    let at = |v: &str| parse(&with_occurred_at(v)).map(|e| e.occurred_at_ms);
    assert_eq!(at("1795000000000"), Ok(1_795_000_000_000));
    assert_eq!(at("0"), Ok(0));
    assert_eq!(at("-0"), Ok(0));
    assert_eq!(at("253402300799999"), Ok(MAX_OCCURRED_AT_MS));
    for bad in [
        "253402300800000",
        "-1",
        "1795000000000.0",
        "1.795e12",
        "9223372036854775807",
        "9223372036854775808",
        "99999999999999999999999999",
        "-99999999999999999999999999",
    ] {
        assert_eq!(at(bad).unwrap_err().reason, InvalidField, "{bad}");
    }
}

#[test]
fn brand_and_segment() {
    assert_eq!(reason(&EXAMPLE.replace(r#""brand":"acme","#, "")), MissingField);
    assert_eq!(reason(&EXAMPLE.replace(r#""acme""#, "null")), MissingField);
    for bad in [r#""""#, r#""ac me""#, r#""acmé""#, r#""a/b""#, "1", r#"["acme"]"#] {
        assert_eq!(reason(&EXAMPLE.replace(r#""acme""#, bad)), InvalidField, "{bad}");
        assert_eq!(reason(&EXAMPLE.replace(r#""smb""#, bad)), InvalidField, "{bad}");
    }
    let longest = "a".repeat(64);
    assert_eq!(parse(&EXAMPLE.replace("acme", &longest)).unwrap().brand, longest);
    assert_eq!(reason(&EXAMPLE.replace("acme", &"a".repeat(65))), InvalidField);
    assert_eq!(parse(&EXAMPLE.replace("acme", "Acme_1.x:y-z")).unwrap().brand, "Acme_1.x:y-z");

    // No segment, or a null one, is "all".
    let input = EXAMPLE.replace(r#""segment":"smb","#, "");
    let e = parse(&input).unwrap();
    assert_eq!(e.segment, "all");
    assert!(matches!(e.segment, Cow::Borrowed(_)));
    assert_eq!(parse(&EXAMPLE.replace(r#""smb""#, "null")).unwrap().segment, "all");
}

#[test]
fn customer_id() {
    let input = lifecycle(r#","customer_id":"c-9""#);
    let e = parse(&input).unwrap();
    assert_eq!(
        e.payload,
        Payload::Lifecycle { action: Action::Churn, customer_id: Cow::Borrowed("c-9") }
    );
    assert_eq!(reason(&lifecycle("")), MissingField);
    assert_eq!(reason(&lifecycle(r#","customer_id":null"#)), MissingField);
    assert_eq!(reason(&lifecycle(r#","customer_id":"""#)), InvalidField);
    assert_eq!(reason(&lifecycle(r#","customer_id":42"#)), InvalidField);
    // Optional for the other types, but checked when given.
    assert!(parse(&survey(r#""survey":"nps","score":9,"customer_id":"c""#)).is_ok());
    assert!(parse(&survey(r#""survey":"nps","score":9,"customer_id":null"#)).is_ok());
    assert_eq!(reason(&survey(r#""survey":"nps","score":9,"customer_id":42"#)), InvalidField);
    let long = format!(r#""survey":"nps","score":9,"customer_id":"{}""#, "c".repeat(129));
    assert_eq!(reason(&survey(&long)), InvalidField);
}

#[test]
fn survey_kind() {
    assert_eq!(reason(&survey(r#""score":9"#)), MissingField);
    for bad in [r#""NPS""#, r#""csat ""#, r#""""#, "1", "true", r#"["nps"]"#] {
        assert_eq!(reason(&survey(&format!(r#""survey":{bad},"score":1"#))), InvalidField, "{bad}");
    }
}

#[test]
fn score_forms() {
    assert_eq!(survey_of(&nps("9")), Survey::Nps { score: 9 });
    assert_eq!(survey_of(&nps(r#""9""#)), Survey::Nps { score: 9 });
    assert_eq!(survey_of(&nps(r#""09""#)), Survey::Nps { score: 9 });
    assert_eq!(survey_of(&nps(r#""\u0039""#)), Survey::Nps { score: 9 });
    assert_eq!(reason(&survey(r#""survey":"nps""#)), MissingField);
    assert_eq!(reason(&nps("null")), MissingField);
    for bad in [
        "9.5",
        "9.0",
        "1e3",
        "1E1",
        "-1.5",
        r#""9.5""#,
        r#""""#,
        r#"" 9""#,
        r#""9 ""#,
        r#""+9""#,
        r#""-1""#,
        // Zero to JSON, but signed: a sign is never part of a score.
        "-0",
        r#""-0""#,
        r#""0x9""#,
        r#""nine""#,
        r#""NaN""#,
        r#""Infinity""#,
        r#""-Infinity""#,
        "true",
        "false",
        "[9]",
        r#"{"v":9}"#,
    ] {
        assert_eq!(reason(&nps(bad)), InvalidField, "{bad}");
    }
}

#[test]
fn score_out_of_range() {
    for bad in [
        "11",
        r#""11""#,
        "-1",
        "256",
        "18446744073709551616",
        "99999999999999999999999",
        "-99999999999999999999999",
    ] {
        assert_eq!(reason(&nps(bad)), ScoreOutOfRange, "{bad}");
    }
    assert_eq!(reason(&nps(&format!("\"{}\"", "9".repeat(500)))), ScoreOutOfRange);
    assert_eq!(reason(&nps(&"9".repeat(500))), ScoreOutOfRange);
    assert_eq!(survey_of(&nps("0")), Survey::Nps { score: 0 });
    assert_eq!(survey_of(&nps("10")), Survey::Nps { score: 10 });

    let ces = |score: &str| survey(&format!(r#""survey":"ces","score":{score}"#));
    assert_eq!(reason(&ces("0")), ScoreOutOfRange);
    assert_eq!(survey_of(&ces("1")), Survey::Ces { score: 1 });
    assert_eq!(survey_of(&ces("7")), Survey::Ces { score: 7 });
    assert_eq!(reason(&ces("8")), ScoreOutOfRange);
}

#[test]
fn nps_categories() {
    use crate::event::NpsCategory::*;
    for (score, want) in
        [(0, Detractor), (6, Detractor), (7, Passive), (8, Passive), (9, Promoter), (10, Promoter)]
    {
        let Survey::Nps { score } = survey_of(&nps(&score.to_string())) else { panic!() };
        assert_eq!(Survey::nps_category(score), want, "{score}");
    }
}

#[test]
fn signed_zero_is_no_score_on_any_survey() {
    for survey_and_scale in [r#""survey":"csat","scale_max":10"#, r#""survey":"ces""#] {
        for zero in ["-0", r#""-0""#] {
            let input = survey(&format!(r#"{survey_and_scale},"score":{zero}"#));
            assert_eq!(reason(&input), InvalidField, "{input}");
            assert_eq!(parse_event(input.as_bytes()), parse_event_slow(input.as_bytes()));
        }
    }
    let detail = parse(&nps("-0")).unwrap_err().detail;
    assert!(detail.contains("signed"), "{detail}");
}

#[test]
fn csat_scales() {
    let csat =
        |extra: &str, score: u32| survey(&format!(r#""survey":"csat"{extra},"score":{score}"#));
    for (extra, scale, max) in [
        ("", CsatScale::Five, 5),
        (r#","scale_max":null"#, CsatScale::Five, 5),
        (r#","scale_max":5"#, CsatScale::Five, 5),
        (r#","scale_max":7"#, CsatScale::Seven, 7),
        (r#","scale_max":10"#, CsatScale::Ten, 10),
    ] {
        assert_eq!(reason(&csat(extra, 0)), ScoreOutOfRange, "{extra}");
        assert_eq!(reason(&csat(extra, max + 1)), ScoreOutOfRange, "{extra}");
        for score in 1..=max {
            let got = survey_of(&csat(extra, score));
            let want_score = u8::try_from(score).unwrap();
            assert_eq!(got, Survey::Csat { score: want_score, scale }, "{extra} {score}");
            // Top-2 box: the two highest scores of the scale are satisfied.
            assert_eq!(
                Survey::csat_satisfied(want_score, scale),
                score + 1 >= max,
                "{extra} {score}"
            );
        }
    }
    assert!(
        Survey::csat_satisfied(4, CsatScale::Five) && !Survey::csat_satisfied(3, CsatScale::Five)
    );
    assert!(
        Survey::csat_satisfied(6, CsatScale::Seven) && !Survey::csat_satisfied(5, CsatScale::Seven)
    );
    assert!(
        Survey::csat_satisfied(9, CsatScale::Ten) && !Survey::csat_satisfied(8, CsatScale::Ten)
    );
    for bad in ["6", "4", "0", "-5", "7.0", r#""7""#, "true", "99999999999999999999"] {
        assert_eq!(reason(&csat(&format!(r#","scale_max":{bad}"#), 1)), InvalidField, "{bad}");
    }
    // scale_max belongs to csat; other surveys ignore it.
    assert!(parse(&survey(r#""survey":"nps","score":10,"scale_max":"x""#)).is_ok());
}

#[test]
fn response_id() {
    let id = |extra: &str| match parse(&survey(&format!(r#""survey":"ces","score":5{extra}"#))) {
        Ok(Event { payload: Payload::Survey { response_id, .. }, .. }) => {
            Ok(response_id.map(Cow::into_owned))
        }
        Ok(other) => panic!("{other:?}"),
        Err(r) => Err(r.reason),
    };
    assert_eq!(id(r#","response_id":"resp-1""#), Ok(Some("resp-1".to_string())));
    assert_eq!(id(""), Ok(None));
    assert_eq!(id(r#","response_id":null"#), Ok(None));
    assert_eq!(id(r#","response_id":"""#), Err(InvalidField));
    assert_eq!(id(r#","response_id":7"#), Err(InvalidField));
    assert_eq!(id(&format!(r#","response_id":"{}""#, "r".repeat(129))), Err(InvalidField));
}

#[test]
fn lifecycle_actions() {
    for action in Action::ALL {
        let input = lifecycle(r#","customer_id":"c""#).replace("churn", action.as_str());
        match parse(&input).unwrap().payload {
            Payload::Lifecycle { action: got, .. } => assert_eq!(got, action),
            other => panic!("{other:?}"),
        }
    }
    for bad in [r#""CHURN""#, r#""cancel""#, r#""""#, "1", "null"] {
        let input = lifecycle(r#","customer_id":"c""#).replace(r#""churn""#, bad);
        let want = if bad == "null" { MissingField } else { InvalidField };
        assert_eq!(reason(&input), want, "{bad}");
    }
    let no_action = lifecycle(r#","customer_id":"c""#).replace(r#","action":"churn""#, "");
    assert_eq!(reason(&no_action), MissingField);
}

#[test]
fn customer_base() {
    let count = |v: &str| match parse(&base(v)) {
        Ok(Event { payload: Payload::CustomerBase { active_customers }, .. }) => {
            Ok(active_customers)
        }
        Ok(other) => panic!("{other:?}"),
        Err(r) => Err(r.reason),
    };
    assert_eq!(count("0"), Ok(0));
    assert_eq!(count("1250"), Ok(1250));
    assert_eq!(count("999999999999999"), Ok(999_999_999_999_999));
    for bad in [
        "1000000000000000",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "1.5",
        "1e3",
        r#""5""#,
        "true",
        "[]",
    ] {
        assert_eq!(count(bad), Err(InvalidField), "{bad}");
    }
    assert_eq!(count("null"), Err(MissingField));
    let absent = base("1").replace(r#","active_customers":1"#, "");
    assert_eq!(reason(&absent), MissingField);
}

#[test]
fn unknown_and_foreign_fields_are_ignored() {
    let extra = r#""survey":"nps","score":9,"x":{"a":[1,2,{"b":null}],"c":"\ud800"},"n":1e400,"f":-0.5e-9,"t":true,"s":"","action":5,"active_customers":"no""#;
    assert!(parse(&survey(extra)).is_ok());
    let big = format!(r#""survey":"nps","score":9,"blob":"{}""#, "y".repeat(60_000));
    assert!(parse(&survey(&big)).is_ok());
}

#[test]
fn number_helpers() {
    assert_eq!(integer("0"), Some(Integer::NonNegative(0)));
    assert_eq!(integer("-0"), Some(Integer::NonNegative(0)));
    assert_eq!(integer("18446744073709551615"), Some(Integer::NonNegative(u64::MAX)));
    assert_eq!(integer("18446744073709551616"), Some(Integer::TooLarge));
    assert_eq!(integer("-18446744073709551616"), Some(Integer::Negative));
    assert_eq!(integer("-"), None);
    assert_eq!(integer("1.0"), None);
    assert_eq!(integer("\"1\""), None);
    assert_eq!(digits_value(&"9".repeat(500)), None);
    assert!(!nests_deeper_than("\"[[[[\"", 1));
    assert!(nests_deeper_than("[[1]]", 1));
    assert!(!nests_deeper_than("[[1],[2]]", 2));
    assert_eq!(
        excerpt("é".repeat(100).as_str()).to_string().chars().filter(|c| *c == 'é').count(),
        20
    );
}

mod prop {
    use super::super::*;
    use proptest::prelude::*;

    /// Fields with values drawn from a mix of right, wrong and odd JSON.
    fn json_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
            "-?[0-9]{1,30}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{1,4})?",
            "\"[a-z0-9_ :.+-]{0,12}\"",
            "\"(\\\\u[0-9a-fA-F]{4}|\\\\[nt\"\\\\/]|[a-zé😀])*\"",
            Just("\"2026-11-23T10:00:00Z\"".to_string()),
            Just("\"9999-12-31T23:59:59.999-00:01\"".to_string()),
            prop_oneof![
                Just("nps"),
                Just("csat"),
                Just("ces"),
                Just("survey_response"),
                Just("customer_lifecycle"),
                Just("customer_base"),
                Just("churn")
            ]
            .prop_map(|s| format!("\"{s}\"")),
            "[\\[\\]{}\",:0-9a-z ]{0,40}",
        ]
    }

    /// `"name":value` with a right value most of the time, else an arbitrary one or none.
    fn field(name: &'static str, good: &'static [&'static str]) -> BoxedStrategy<Option<String>> {
        prop_oneof![
            6 => proptest::sample::select(good).prop_map(|v| Some(v.to_string())),
            1 => json_value().prop_map(Some),
            1 => Just(None),
        ]
        .prop_map(move |v| v.map(|v| format!("\"{name}\":{v}")))
        .boxed()
    }

    /// Objects close enough to events that a fair share is accepted.
    fn event_like() -> impl Strategy<Value = String> {
        let fields = vec![
            field("schema", &["1"]),
            field("type", &["\"survey_response\"", "\"customer_lifecycle\"", "\"customer_base\""]),
            field("event_id", &["\"e-1\"", "\"\\u0065\""]),
            field(
                "occurred_at",
                &["\"2026-11-23T10:00:00Z\"", "\"2026-11-23T12:00:00.5+02:00\"", "1795000000000"],
            ),
            field("brand", &["\"acme\""]),
            field("segment", &["\"smb\"", "null"]),
            field("customer_id", &["\"c-1\""]),
            field("survey", &["\"nps\"", "\"csat\"", "\"ces\""]),
            field("score", &["0", "1", "5", "7", "9", "10", "\"6\""]),
            field("scale_max", &["5", "7", "10"]),
            field("response_id", &["\"r-1\""]),
            field("comment", &["\"ok\"", "\"\\u00e9\"", "3"]),
            field("action", &["\"churn\"", "\"signup\""]),
            field("active_customers", &["0", "42"]),
            field("other", &["{\"a\":[1,{}]}"]),
        ];
        fields.prop_map(|fields| {
            format!("{{{}}}", fields.into_iter().flatten().collect::<Vec<_>>().join(","))
        })
    }

    fn json_object() -> impl Strategy<Value = String> {
        let key = prop_oneof![Just("schema"), Just("type"), Just("score"), Just("other"),];
        proptest::collection::vec((key, json_value()), 0..6).prop_map(|fields| {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", body.join(","))
        })
    }

    fn check(bytes: &[u8]) {
        if let Ok(e) = parse_event(bytes) {
            assert!(is_label_value(&e.brand) && is_label_value(&e.segment));
            assert!((1..=128).contains(&e.event_id.len()));
            assert!((0..=253_402_300_799_999).contains(&e.occurred_at_ms));
            if let Payload::Survey { survey, .. } = e.payload {
                let ok = match survey {
                    Survey::Nps { score } => score <= 10,
                    Survey::Csat { score, scale } => (1..=scale.max()).contains(&score),
                    Survey::Ces { score } => (1..=7).contains(&score),
                };
                assert!(ok, "{survey:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            check(&bytes);
        }

        #[test]
        fn json_ish_text_never_panics(text in "[\\[\\]{}\":,0-9a-z\\\\ .eE+-]{0,200}") {
            check(text.as_bytes());
        }

        #[test]
        fn json_objects_never_panic(text in json_object()) {
            check(text.as_bytes());
        }

        #[test]
        fn event_like_objects_never_panic(text in event_like()) {
            check(text.as_bytes());
        }
    }
}

#[test]
fn the_overflow_label_is_reserved() {
    let payload = br#"{"event_id":"o","type":"survey_response","occurred_at":1,"brand":"__overflow__","survey":"nps","score":1}"#;
    let rejection = parse_event(payload).unwrap_err();
    assert_eq!(rejection.reason, RejectReason::InvalidField);
    assert!(rejection.detail.contains("reserved"), "{}", rejection.detail);
}

#[test]
fn an_answer_keeps_its_customer_and_its_comment_up_to_4_kib() {
    for body in [
        r#""survey":"nps","score":3,"customer_id":"c-9","comment":"slow delivery""#,
        r#""survey":"nps","score":3,"customer_id":"c-9","comment":"slow \u0064elivery""#,
    ] {
        let input = survey(body);
        let e = parse(&input).unwrap();
        let Payload::Survey { customer_id, comment, .. } = &e.payload else {
            panic!("{:?}", e.payload)
        };
        assert_eq!(customer_id.as_deref(), Some("c-9"));
        assert_eq!(comment.as_deref(), Some("slow delivery"));
        assert_eq!(Ok(&e), parse_event_reference(input.as_bytes()).as_ref());
    }
    let longest = "é".repeat(MAX_COMMENT_BYTES / 2);
    let input = survey(&format!(r#""survey":"nps","score":3,"comment":"{longest}""#));
    assert!(parse(&input).is_ok());
    for (body, detail) in [
        (format!(r#""survey":"nps","score":3,"comment":"{longest}x""#), "at most 4096 bytes"),
        (r#""survey":"nps","score":3,"comment":7"#.to_string(), "expected a string"),
        (r#""survey":"nps","score":3,"customer_id":"""#.to_string(), "customer_id"),
    ] {
        let rejection = parse(&survey(&body)).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::InvalidField, "{body}");
        assert!(rejection.detail.contains(detail), "{body}: {}", rejection.detail);
    }
}
