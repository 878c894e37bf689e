//! Parsing is total: any input yields `Ok` or `Err`, never a panic.

use azure_iot_query::{Condition, Query};
use proptest::prelude::*;
use serde_json::json;

/// Fragments of queries, including broken ones (lone quotes, backslashes, unclosed calls).
const TOKENS: &str = "SELECT TOP * FROM devices devices.modules devices.jobs WHERE GROUP BY AND OR NOT IN \
    NIN AS COUNT() SUM( MAX( IS_DEFINED( STARTSWITH( ( ) [ ] , . = != <> < >= + - / % 's' \"d\" \
    '\\u00e9' ' \\ 1 0x1F 1.5e3 true null undefined tags deviceId $version é";

fn query_ish() -> impl Strategy<Value = String> {
    let token = prop::sample::select(TOKENS.split_whitespace().collect::<Vec<_>>());
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.join(" "))
}

/// Well-formed conditions over a few paths and literals of every type.
fn condition() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        "tags.n",
        "tags.s",
        "tags.b",
        "tags.nil",
        "tags.obj",
        "tags.missing",
        "0",
        "2.5",
        "'a'",
        "true",
        "null",
        "undefined",
    ])
    .prop_map(str::to_owned);
    leaf.prop_recursive(4, 32, 2, |inner| {
        let ops = ["=", "<>", "<", ">=", "+", "-", "*", "/", "%", "AND", "OR"];
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(ops.to_vec()),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("(NOT ({a}))")),
            inner.clone().prop_map(|a| format!("-({a})")),
            inner
                .clone()
                .prop_map(|a| format!("({a} IN [1, 'a', null])")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("STARTSWITH({a}, {b})")),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        let _ = Query::parse(&text);
        let _ = Condition::parse(&text);
    }

    #[test]
    fn query_ish_strings_never_panic(text in query_ish()) {
        let docs = [json!({"deviceId": "d", "tags": {"x": 1}}), json!(null), json!([])];
        for text in [format!("SELECT {text}"), format!("SELECT * FROM devices WHERE {text}")] {
            if let Ok(query) = Query::parse(&text) {
                let _ = query.execute(&docs);
            }
        }
        if let Ok(condition) = Condition::parse(&text) {
            let _ = condition.matches(&docs[0]);
        }
    }

    #[test]
    fn a_condition_and_its_negation_never_both_match(text in condition()) {
        let doc = json!({"tags": {"n": 2, "s": "a", "b": true, "nil": null, "obj": {"k": [1]}}});
        let condition = Condition::parse(&text).unwrap();
        let negation = Condition::parse(&format!("NOT ({text})")).unwrap();
        prop_assert!(!(condition.matches(&doc) && negation.matches(&doc)));
    }

    #[test]
    fn errors_quote_only_short_excerpts(name in "[a-z]{100,300}") {
        let err = Query::parse(&format!("SELECT * FROM {name}")).unwrap_err();
        prop_assert!(err.to_string().len() < 100);
        let err = Condition::parse(&format!("{name}(1)")).unwrap_err();
        prop_assert!(err.to_string().len() < 100);
    }
}
