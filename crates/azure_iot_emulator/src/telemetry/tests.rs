use super::*;
use crate::telemetry::partition::{DEFAULT_PARTITIONS, partition_of};

const T0: &str = "2026-01-01T00:00:00.0000000Z";

fn now_text() -> String {
    azure_iot_core::datetime::format_timestamp(time::OffsetDateTime::now_utc())
}

async fn append_typed(
    log: &TelemetryLog,
    device: &str,
    enqueued_time: String,
    properties: Vec<(String, PropertyValue)>,
    body: &'static [u8],
) -> u64 {
    let (reply, answer) = oneshot::channel();
    log.append_event(
        NewEvent {
            device_id: device.into(),
            module_id: None,
            auth_method: "sas".into(),
            enqueued_time,
            system: SystemProperties::default(),
            properties,
            body: Bytes::from_static(body),
            source: MessageSource::Telemetry,
        },
        reply,
    )
    .await;
    answer.await.unwrap().unwrap()
}

#[tokio::test]
async fn appends_are_ordered_durable_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = TelemetryLog::open(Some(dir.path())).unwrap();
    let message = Message::builder("hello")
        .message_id("m1")
        .property("k", "v")
        .build()
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..50 {
        let log = log.clone();
        let message = message.clone();
        pending.push(tokio::spawn(async move {
            log.append(format!("d{i}"), None, "sas", now_text(), message)
                .await
                .unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
    drop(log);
    // A new writer over the same file sees everything.
    let log = TelemetryLog::open(Some(dir.path())).unwrap();
    assert_eq!(*log.watch().borrow(), 50);
    let events = log.read(48, 10, None, None).await.unwrap();
    assert_eq!(
        log.read(0, 100, Some("d7".into()), None)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_eq!(e.sequence_number, 49);
    assert_eq!(e.message.body().as_ref(), b"hello");
    assert_eq!(e.message.property("k"), Some("v"));
    assert_eq!(
        e.properties,
        vec![("k".to_owned(), PropertyValue::String("v".into()))]
    );
    let s = e.message.system_properties();
    assert_eq!(s.message_id.as_deref(), Some("m1"));
    assert_eq!(s.connection_auth_method.as_deref(), Some("sas"));
    assert_eq!(s.sequence_number, Some(49));
    assert!(s.connection_device_id.is_some());
}

#[tokio::test]
async fn partitions_have_their_own_sequence_numbers_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = TelemetryLog::open(Some(dir.path())).unwrap();
    assert_eq!(log.partition_count(), DEFAULT_PARTITIONS);
    let devices: Vec<String> = (0..12).map(|i| format!("dev-{i}")).collect();
    for round in 0..5 {
        for d in &devices {
            let m = Message::new(format!("{d}-{round}")).unwrap();
            log.append(d.clone(), None, "sas", now_text(), m)
                .await
                .unwrap();
        }
    }
    let mut total = 0;
    for p in 0..DEFAULT_PARTITIONS {
        let events = log
            .read_partition(p, EventPosition::Earliest, 1000)
            .await
            .unwrap();
        total += events.len();
        // Every event of a partition is from a device hashed there, numbered 0, 1, 2 ... with
        // increasing offsets and enqueued times that never go back.
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.partition, p);
            assert_eq!(partition_of(&e.device_id, DEFAULT_PARTITIONS), p);
            assert_eq!(e.partition_sequence_number, i as i64);
        }
        for pair in events.windows(2) {
            let a: i64 = pair[0].offset.parse().unwrap();
            let b: i64 = pair[1].offset.parse().unwrap();
            assert!(b > a);
            assert!(
                pair[1].message.system_properties().enqueued_time
                    >= pair[0].message.system_properties().enqueued_time
            );
            assert!(pair[1].sequence_number > pair[0].sequence_number);
        }
        if let Some(first) = events.first() {
            assert_eq!(first.offset, "0");
        }
        let info = log.partition_info(p).await.unwrap();
        assert_eq!(info.begin_sequence_number, 0);
        assert_eq!(info.last_enqueued_sequence_number, events.len() as i64 - 1);
        assert_eq!(info.is_empty, events.is_empty());
        if let Some(last) = events.last() {
            assert_eq!(info.last_enqueued_offset, last.offset);
            // Positions: after a sequence number, at an offset, from the latest.
            let after = log
                .read_partition(
                    p,
                    EventPosition::SequenceNumber {
                        number: 1,
                        inclusive: false,
                    },
                    1000,
                )
                .await
                .unwrap();
            assert_eq!(after.len(), events.len() - 2);
            let at = log
                .read_partition(
                    p,
                    EventPosition::Offset {
                        offset: last.offset.parse().unwrap(),
                        inclusive: true,
                    },
                    10,
                )
                .await
                .unwrap();
            assert_eq!(at, vec![last.clone()]);
            assert!(
                log.read_partition(p, EventPosition::Latest, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    }
    assert_eq!(total, 60);
    assert!(
        log.read_partition(4, EventPosition::Earliest, 1)
            .await
            .is_err()
    );
    // Numbers continue after a restart, in the same partitions.
    drop(log);
    let log = TelemetryLog::open(Some(dir.path())).unwrap();
    let p = partition_of("dev-3", DEFAULT_PARTITIONS);
    let before = log.partition_info(p).await.unwrap();
    log.append(
        "dev-3".into(),
        None,
        "sas",
        now_text(),
        Message::new("x").unwrap(),
    )
    .await
    .unwrap();
    let after = log.partition_info(p).await.unwrap();
    assert_eq!(
        after.last_enqueued_sequence_number,
        before.last_enqueued_sequence_number + 1
    );
}

#[tokio::test]
async fn partition_count_is_configurable_and_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let options = TelemetryOptions {
        partitions: Some(2),
        ..Default::default()
    };
    let log = TelemetryLog::open_with(Some(dir.path()), options).unwrap();
    assert_eq!(log.partition_count(), 2);
    drop(log);
    // Unset: the existing count. Another count: refused, naming both.
    assert_eq!(
        TelemetryLog::open(Some(dir.path()))
            .unwrap()
            .partition_count(),
        2
    );
    let wrong = TelemetryOptions {
        partitions: Some(8),
        ..Default::default()
    };
    let error = TelemetryLog::open_with(Some(dir.path()), wrong)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("has 2 partitions") && error.contains("--partitions 2"),
        "{error}"
    );
    let zero = TelemetryOptions {
        partitions: Some(0),
        ..Default::default()
    };
    assert!(TelemetryLog::open_with(None, zero).is_err());
}

#[tokio::test]
async fn typed_properties_round_trip() {
    let log = TelemetryLog::open(None).unwrap();
    let properties = vec![
        ("null".to_owned(), PropertyValue::Null),
        ("bool".to_owned(), PropertyValue::Bool(true)),
        ("ubyte".to_owned(), PropertyValue::Ubyte(255)),
        ("ushort".to_owned(), PropertyValue::Ushort(65535)),
        ("uint".to_owned(), PropertyValue::Uint(u32::MAX)),
        ("ulong".to_owned(), PropertyValue::Ulong(u64::MAX)),
        ("byte".to_owned(), PropertyValue::Byte(-128)),
        ("short".to_owned(), PropertyValue::Short(-32768)),
        ("int".to_owned(), PropertyValue::Int(42)),
        ("long".to_owned(), PropertyValue::Long(i64::MIN)),
        ("float".to_owned(), PropertyValue::Float(1.5)),
        ("double".to_owned(), PropertyValue::Double(-0.1)),
        ("inf".to_owned(), PropertyValue::Double(f64::INFINITY)),
        ("char".to_owned(), PropertyValue::Char('é')),
        (
            "ts".to_owned(),
            PropertyValue::Timestamp(properties::timestamp_from_ms(1_767_225_600_123).unwrap()),
        ),
        (
            "uuid".to_owned(),
            PropertyValue::Uuid(uuid::Uuid::from_bytes(*b"0123456789abcdef")),
        ),
        (
            "bin".to_owned(),
            PropertyValue::Binary(vec![0, 1, 254, 255]),
        ),
        ("str".to_owned(), PropertyValue::String("a=b&c".into())),
        ("sym".to_owned(), PropertyValue::Symbol("x-opt".into())),
    ];
    append_typed(&log, "typed", now_text(), properties.clone(), b"{}").await;
    append_typed(
        &log,
        "typed",
        now_text(),
        vec![("nan".into(), PropertyValue::Double(f64::NAN))],
        b"",
    )
    .await;
    let events = log.read(0, 10, None, None).await.unwrap();
    assert_eq!(events[0].properties, properties);
    // Text for string-only consumers.
    let m = &events[0].message;
    assert_eq!(m.property("int"), Some("42"));
    assert_eq!(m.property("long"), Some("-9223372036854775808"));
    assert_eq!(m.property("null"), Some(""));
    assert_eq!(m.property("bool"), Some("true"));
    assert_eq!(m.property("ts"), Some("2026-01-01T00:00:00.1230000Z"));
    assert_eq!(
        m.property("uuid"),
        Some("30313233-3435-3637-3839-616263646566")
    );
    assert_eq!(m.property("bin"), Some("AAH+/w=="));
    match &events[1].properties[0].1 {
        PropertyValue::Double(v) => assert!(v.is_nan()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stored_property_json_is_checked() {
    use properties::decode_properties;
    assert_eq!(
        decode_properties(r#"[{"n":"a","t":"int","v":5}]"#).unwrap(),
        vec![("a".to_owned(), PropertyValue::Int(5))]
    );
    for bad in [
        r#"[{"n":"a","t":"int","v":3000000000}]"#,
        r#"[{"n":"a","t":"ubyte","v":-1}]"#,
        r#"[{"n":"a","t":"char","v":"ab"}]"#,
        r#"[{"n":"a","t":"uuid","v":"+0313233-3435-3637-3839-616263646566"}]"#,
        r#"[{"n":"a","t":"decimal128","v":"1"}]"#,
        r#"[{"t":"int","v":1}]"#,
        r#"{"n":"a"}"#,
    ] {
        assert!(decode_properties(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn system_properties_survive_the_log() {
    let log = TelemetryLog::open(None).unwrap();
    let created = azure_iot_core::datetime::parse_timestamp(T0).unwrap();
    let message = Message::builder("b")
        .message_id("mid")
        .correlation_id("cid")
        .content_type("application/json")
        .content_encoding("utf-8")
        .creation_time_utc(created)
        .component_name("thermostat")
        .build()
        .unwrap();
    log.append(
        "d".into(),
        Some("m".into()),
        "sas",
        now_text(),
        message.clone(),
    )
    .await
    .unwrap();
    let e = log.read(0, 1, None, None).await.unwrap().remove(0);
    let s = e.message.system_properties();
    let sent = message.system_properties();
    assert_eq!(s.message_id, sent.message_id);
    assert_eq!(s.correlation_id, sent.correlation_id);
    assert_eq!(s.content_type, sent.content_type);
    assert_eq!(s.content_encoding, sent.content_encoding);
    assert_eq!(s.creation_time_utc, Some(created));
    assert_eq!(s.component_name.as_deref(), Some("thermostat"));
    assert_eq!(s.connection_module_id.as_deref(), Some("m"));
    assert_eq!(e.module_id.as_deref(), Some("m"));
}

#[tokio::test]
async fn retention_by_age_deletes_old_messages() {
    let dir = tempfile::tempdir().unwrap();
    let log = TelemetryLog::open(Some(dir.path())).unwrap();
    // Older than the default day: deleted by the commit that follows them.
    for _ in 0..3 {
        append_typed(
            &log,
            "old",
            "2020-01-01T00:00:00.0000000Z".into(),
            vec![],
            b"x",
        )
        .await;
    }
    let seq = append_typed(&log, "new", now_text(), vec![], b"y").await;
    // Retention runs right after the commit is answered; a read after the next commit sees it.
    append_typed(&log, "new", now_text(), vec![], b"z").await;
    let left = log.read(0, 100, None, None).await.unwrap();
    assert!(left.iter().all(|e| e.device_id == "new"), "{left:?}");
    assert_eq!(left[0].sequence_number, seq);
    // The old device's partition keeps counting after its rows are gone.
    let p = partition_of("old", DEFAULT_PARTITIONS);
    let info = log.partition_info(p).await.unwrap();
    if p != partition_of("new", DEFAULT_PARTITIONS) {
        assert!(info.is_empty);
        assert_eq!(info.begin_sequence_number, 3);
    }
    assert!(info.last_enqueued_sequence_number >= 2);
}

#[test]
fn retention_by_age_and_size_at_a_given_time() {
    let mut conn = Connection::open_in_memory().unwrap();
    let count = schema::prepare(&mut conn, Some(1)).unwrap();
    let (notify, _latest) = tokio::sync::watch::channel(0);
    let retention = Retention {
        max_age: Duration::from_secs(60),
        max_bytes: 100_000,
    };
    let mut writer = writer::Writer::new(conn, count, retention, notify).unwrap();
    let start = 1_767_225_600_000_i64; // 2026-01-01T00:00:00Z
    let mut group = Vec::new();
    let mut answers = Vec::new();
    for i in 0..100 {
        let (reply, answer) = oneshot::channel();
        let t = properties::timestamp_from_ms(start + i * 1000).unwrap();
        let event = NewEvent {
            device_id: "d".into(),
            module_id: None,
            auth_method: "sas".into(),
            enqueued_time: azure_iot_core::datetime::format_timestamp(t),
            system: SystemProperties::default(),
            properties: vec![],
            body: Bytes::from(vec![b'x'; 900]),
            source: MessageSource::Telemetry,
        };
        group.push(writer::Append {
            row: row_from_event(event),
            reply,
        });
        answers.push(answer);
    }
    writer.commit_group(group).unwrap();
    // Each row counts 1000 bytes (body, ids, time, empty property JSON, overhead): the log is
    // exactly at its size limit, not over it.
    assert_eq!(writer.stored_bytes(), 100_000);
    // At the last message's time, the first 39 are older than a minute.
    let now = start + 99_000;
    assert_eq!(writer.enforce_retention(now).unwrap(), 39);
    assert_eq!(writer.stored_bytes(), 61_000);
    assert_eq!(writer.enforce_retention(now).unwrap(), 0);
    // Later: everything is older than a minute.
    assert!(writer.enforce_retention(now + 120_000).unwrap() > 0);
    assert_eq!(writer.stored_bytes(), 0);
    // Nothing to do on an empty log.
    assert_eq!(writer.enforce_retention(now + 240_000).unwrap(), 0);
}

#[tokio::test]
async fn retention_by_size_bounds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = TelemetryOptions {
        partitions: Some(2),
        retention: Retention {
            max_age: DEFAULT_RETENTION_AGE,
            max_bytes: 20_000,
        },
        ..Default::default()
    };
    let log = TelemetryLog::open_with(Some(dir.path()), options).unwrap();
    let body = Bytes::from(vec![b'b'; 1000]);
    let mut last = 0;
    for i in 0..200 {
        let m = Message::new(body.clone()).unwrap();
        last = log
            .append(format!("d{}", i % 3), None, "sas", now_text(), m)
            .await
            .unwrap();
    }
    let left = log.read(0, 1000, None, None).await.unwrap();
    let bytes: usize = left.iter().map(|e| e.message.body().len()).sum();
    assert!(bytes <= 20_000, "{bytes} bytes left");
    assert!(left.len() >= 10, "only {} left", left.len());
    // The newest are kept, in order, ending with the last append.
    assert_eq!(left.last().unwrap().sequence_number, last);
    assert!(
        left.windows(2)
            .all(|w| w[1].sequence_number == w[0].sequence_number + 1)
    );
    drop(log);
    // The size on reopening is recomputed: still bounded after more appends.
    let log = TelemetryLog::open_with(Some(dir.path()), options).unwrap();
    for _ in 0..50 {
        let m = Message::new(body.clone()).unwrap();
        log.append("d0".into(), None, "sas", now_text(), m)
            .await
            .unwrap();
    }
    let left = log.read(0, 1000, None, None).await.unwrap();
    assert!(left.len() <= 20, "{} left", left.len());
}

#[tokio::test]
async fn a_version_1_log_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The v1 schema and rows exactly as v1 wrote them.
        let conn = Connection::open(dir.path().join(TELEMETRY_DB_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE telemetry (
                seq           INTEGER PRIMARY KEY AUTOINCREMENT,
                device_id     TEXT NOT NULL,
                module_id     TEXT,
                auth_method   TEXT NOT NULL,
                enqueued_time TEXT NOT NULL,
                properties    TEXT NOT NULL,
                body          BLOB NOT NULL
            );",
        )
        .unwrap();
        let rows = [
            ("a", None, "%24.mid=m1&%24.ct=application%2Fjson&k=v", "one"),
            ("b", Some("mod"), "x=1&y", "two"),
            ("a", None, "", "three"),
        ];
        for (device, module, bag, body) in rows {
            conn.execute(
                "INSERT INTO telemetry (device_id, module_id, auth_method, enqueued_time,
                     properties, body) VALUES (?1, ?2, 'sas', ?3, ?4, ?5)",
                rusqlite::params![device, module, now_text(), bag, body.as_bytes()],
            )
            .unwrap();
        }
        conn.execute("DELETE FROM telemetry WHERE seq = 3", [])
            .unwrap();
        conn.execute(
            "INSERT INTO telemetry (device_id, auth_method, enqueued_time, properties, body)
             VALUES ('a', 'sas', ?1, '', X'ff00')",
            [now_text()],
        )
        .unwrap();
    }
    let log = TelemetryLog::open(Some(dir.path())).unwrap();
    // Sequence numbers are kept and continue.
    assert_eq!(*log.watch().borrow(), 4);
    let events = log.read(0, 10, None, None).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.sequence_number).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    let first = &events[0];
    assert_eq!(first.message.body().as_ref(), b"one");
    assert_eq!(
        first.message.system_properties().message_id.as_deref(),
        Some("m1")
    );
    assert_eq!(
        first.message.system_properties().content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        first.properties,
        vec![("k".to_owned(), PropertyValue::String("v".into()))]
    );
    assert_eq!(events[1].module_id.as_deref(), Some("mod"));
    assert_eq!(events[1].message.property("x"), Some("1"));
    assert_eq!(events[2].message.body().as_ref(), &[0xff, 0x00]);
    // Partitions were assigned in order.
    let pa = partition_of("a", DEFAULT_PARTITIONS);
    assert_eq!(events[0].partition, pa);
    assert_eq!(events[0].partition_sequence_number, 0);
    assert_eq!(events[2].partition_sequence_number, 1);
    let next = log
        .append(
            "a".into(),
            None,
            "sas",
            now_text(),
            Message::new("new").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(next, 5);
    drop(log);
    // Opening again is a no-op; the file says version 2.
    let log = TelemetryLog::open(Some(dir.path())).unwrap();
    assert_eq!(log.read(0, 10, None, None).await.unwrap().len(), 4);
    let conn = Connection::open(dir.path().join(TELEMETRY_DB_FILE)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION);
}

#[test]
fn a_newer_log_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join(TELEMETRY_DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 3).unwrap();
    drop(conn);
    let error = TelemetryLog::open(Some(dir.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("schema version 3"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_beside_a_busy_writer() {
    for dir in [Some(tempfile::tempdir().unwrap()), None] {
        let log = TelemetryLog::open(dir.as_ref().map(|d| d.path())).unwrap();
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                for i in 0..2000 {
                    let (reply, answer) = oneshot::channel();
                    let m = Message::new(format!("m{i}")).unwrap();
                    log.append_with(format!("d{}", i % 7), None, "sas", now_text(), m, reply)
                        .await;
                    pending.push(answer);
                }
                for p in pending {
                    p.await.unwrap().unwrap();
                }
            })
        };
        // Reads while the writer is committing: each sees a prefix of the log, in order.
        let mut reads = 0;
        loop {
            let events = log.read(0, 1000, None, None).await.unwrap();
            assert!(
                events
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.sequence_number == i as u64 + 1)
            );
            reads += 1;
            if writer.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        assert!(reads >= 1);
        assert_eq!(log.read(1990, 100, None, None).await.unwrap().len(), 10);
    }
}

#[test]
fn a_large_trim_is_spread_over_passes() {
    let mut conn = Connection::open_in_memory().unwrap();
    let count = schema::prepare(&mut conn, Some(4)).unwrap();
    let (notify, _latest) = tokio::sync::watch::channel(0);
    let retention = Retention {
        max_age: DEFAULT_RETENTION_AGE,
        max_bytes: 1_000_000,
    };
    let mut writer = writer::Writer::new(conn, count, retention, notify).unwrap();
    let now = writer::now_ms();
    let time =
        azure_iot_core::datetime::format_timestamp(properties::timestamp_from_ms(now).unwrap());
    // 6000 rows of 1000 counted bytes each (body 900 + ids, time, empty JSON, overhead).
    let group: Vec<_> = (0..6000)
        .map(|_| {
            let (reply, _) = oneshot::channel();
            writer::Append {
                row: row_from_event(NewEvent {
                    device_id: "d".into(),
                    module_id: None,
                    auth_method: "sas".into(),
                    enqueued_time: time.clone(),
                    system: SystemProperties::default(),
                    properties: vec![],
                    body: Bytes::from(vec![b'x'; 900]),
                    source: MessageSource::Telemetry,
                }),
                reply,
            }
        })
        .collect();
    writer.commit_group(group).unwrap();
    assert_eq!(writer.stored_bytes(), 6_000_000);
    // One pass deletes at most 8 × 512 rows; the next one reaches 90 % of the limit.
    assert_eq!(writer.enforce_retention(now).unwrap(), 4096);
    assert_eq!(writer.enforce_retention(now).unwrap(), 1004);
    assert_eq!(writer.stored_bytes(), 900_000);
    assert_eq!(writer.enforce_retention(now).unwrap(), 0);
}

#[tokio::test]
async fn appends_wait_for_room_when_the_queue_is_full() {
    let log = TelemetryLog::open(None).unwrap();
    let all = (MAX_QUEUED_BYTES / QUEUE_UNIT) as u32;
    // Take all the room, as a writer that fell far behind would.
    let held = log.queued.clone().acquire_many_owned(all).await.unwrap();
    let append = tokio::spawn({
        let log = log.clone();
        async move {
            log.append(
                "d1".into(),
                None,
                "sas",
                now_text(),
                Message::new("x").unwrap(),
            )
            .await
        }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!append.is_finished(), "the append waits for room");
    drop(held);
    assert!(append.await.unwrap().is_ok());
    // Committed appends give their room back (just after their answers are sent).
    let restored = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while log.queued.available_permits() != all as usize {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(restored.is_ok(), "the room came back");
}
