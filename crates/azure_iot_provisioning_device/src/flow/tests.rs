use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// Answers from a script; records what was asked and when.
struct Scripted {
    replies: VecDeque<Reply>,
    /// Requests: `None` for register, `Some(op)` for a poll; with the time asked.
    asked: Vec<(Option<String>, Instant)>,
}

impl Scripted {
    fn new(replies: Vec<Reply>) -> Self {
        Self {
            replies: replies.into(),
            asked: Vec::new(),
        }
    }

    /// What was asked, with the time since `start`.
    fn timeline(&self, start: Instant) -> Vec<(Option<String>, Duration)> {
        self.asked
            .iter()
            .map(|(op, at)| (op.clone(), *at - start))
            .collect()
    }

    fn next(&mut self) -> Result<Reply> {
        // An empty script repeats "still assigning" forever.
        Ok(self.replies.pop_front().unwrap_or_else(assigning))
    }
}

impl Exchange for Scripted {
    async fn register(&mut self, _body: &[u8]) -> Result<Reply> {
        self.asked.push((None, Instant::now()));
        self.next()
    }

    async fn poll(&mut self, operation_id: &str) -> Result<Reply> {
        self.asked
            .push((Some(operation_id.to_owned()), Instant::now()));
        self.next()
    }
}

fn reply(status: u16, body: &str, retry_after: Option<u32>) -> Reply {
    Reply {
        status,
        body: body.as_bytes().to_vec(),
        retry_after,
    }
}

fn assigning() -> Reply {
    reply(
        202,
        r#"{"operationId":"op1","status":"assigning"}"#,
        Some(1),
    )
}

const ASSIGNED: &str = r#"{"operationId":"op1","status":"assigned","registrationState":{
    "registrationId":"dev1","assignedHub":"hub.example","deviceId":"dev1","status":"assigned",
    "substatus":"initialAssignment","etag":"e1","createdDateTimeUtc":"2026-12-03T10:00:00Z",
    "payload":{"a":1}}}"#;

#[tokio::test(start_paused = true)]
async fn polls_after_retry_after_until_assigned() {
    let mut script = Scripted::new(vec![
        reply(
            202,
            r#"{"operationId":"op1","status":"assigning"}"#,
            Some(3),
        ),
        reply(202, r#"{"operationId":"op1","status":"assigning"}"#, None),
        reply(200, ASSIGNED, None),
    ]);
    let start = Instant::now();
    let assignment = run(&mut script, b"{}").await.unwrap();
    assert_eq!(assignment.operation_id, "op1");
    let result = assignment.state;
    assert_eq!(result.assigned_hub.as_deref(), Some("hub.example"));
    assert_eq!(result.payload, Some(serde_json::json!({"a": 1})));
    let asked = script.timeline(start);
    assert_eq!(
        asked,
        vec![
            (None, Duration::ZERO),
            (Some("op1".into()), Duration::from_secs(3)),
            // No retry-after: the 2 s default.
            (Some("op1".into()), Duration::from_secs(5)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn throttled_requests_are_sent_again_after_retry_after() {
    let mut script = Scripted::new(vec![
        reply(429, r#"{"errorCode":429001,"message":"slow"}"#, Some(4)),
        reply(503, "", Some(1)),
        reply(200, ASSIGNED, None),
    ]);
    let start = Instant::now();
    run(&mut script, b"{}").await.unwrap();
    let asked = script.timeline(start);
    assert_eq!(
        asked,
        vec![
            (None, Duration::ZERO),
            (None, Duration::from_secs(4)),
            (None, Duration::from_secs(5)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_registration_that_never_finishes_is_stopped_by_the_caller_timeout() {
    let mut script = Scripted::new(vec![]);
    let start = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), run(&mut script, b"{}")).await;
    assert!(outcome.is_err(), "still assigning: the timeout ends it");
    assert_eq!(Instant::now() - start, Duration::from_secs(30));
    // The register, then one poll a second (the 1 s retry-after) up to the deadline.
    assert!(
        (30..=31).contains(&script.asked.len()),
        "{}",
        script.asked.len()
    );
    assert!(
        script.asked[1..]
            .iter()
            .all(|(op, _)| op.as_deref() == Some("op1"))
    );
}

#[test]
fn refusals_are_typed_with_dps_codes() {
    let unauthorised = judge(&reply(
        401,
        r#"{"errorCode":401002,"trackingId":"t","message":"Unauthorized"}"#,
        None,
    ))
    .unwrap_err();
    assert!(matches!(
        unauthorised,
        Error::Unauthorized {
            error_code: Some(401002),
            ..
        }
    ));
    let not_found = judge(&reply(404, r#"{"errorCode":404201,"message":"x"}"#, None)).unwrap_err();
    assert_eq!(not_found.error_code(), Some(404201));
    assert!(matches!(not_found, Error::NotFound { .. }));
    let bad = judge(&reply(400, "not json\u{1b}[31m", None)).unwrap_err();
    match bad {
        Error::Service {
            status: 400,
            error_code: None,
            message,
        } => assert!(!message.contains('\u{1b}')),
        other => panic!("{other:?}"),
    }
}

#[test]
fn final_statuses_are_typed() {
    let disabled = judge(&reply(
        200,
        r#"{"operationId":"o","status":"disabled","registrationState":{"registrationId":"d",
            "status":"disabled","errorCode":401003,"errorMessage":"the enrollment is disabled"}}"#,
        None,
    ))
    .unwrap_err();
    match disabled {
        Error::Disabled {
            error_code,
            message,
        } => {
            assert_eq!(error_code, Some(401003));
            assert_eq!(message, "the enrollment is disabled");
        }
        other => panic!("{other:?}"),
    }
    let failed = judge(&reply(
        200,
        r#"{"operationId":"o","status":"failed","registrationState":{"registrationId":"d",
            "status":"failed","errorCode":400208,"errorMessage":"no hub"}}"#,
        None,
    ))
    .unwrap_err();
    assert_eq!(failed.error_code(), Some(400208));
    assert!(matches!(failed, Error::Failed { .. }));
}

#[test]
fn malformed_answers_are_protocol_errors() {
    for body in [
        "not json",
        r#"{"operationId":"o","status":"assigned"}"#,
        r#"{"operationId":"","status":"assigning"}"#,
        r#"{"operationId":"o","status":"assigned","registrationState":{"registrationId":"d","status":"assigned"}}"#,
    ] {
        assert!(
            matches!(judge(&reply(200, body, None)), Err(Error::Protocol(_))),
            "{body}"
        );
    }
}

#[test]
fn retry_hints_are_whole_seconds_and_capped() {
    assert_eq!(parse_retry_after(" 3 "), Some(3));
    assert_eq!(parse_retry_after("2.5"), None);
    assert_eq!(
        judge(&reply(429, "", Some(100_000))).unwrap(),
        Step::Retry {
            wait: MAX_RETRY_AFTER
        }
    );
}
