//! The examples of `query.md` §5 (one test each), plus end-to-end checks of projection, TOP,
//! GROUP BY and aggregates, run through the public API over documents shaped like the hub's.

use azure_iot_query::{Collection, Condition, ItemType, Query};
use serde_json::{Value, json};

fn twin(id: &str, region: &str, frequency: i64, connectivity: Option<&str>) -> Value {
    let status = if frequency >= 60 {
        "Success"
    } else {
        "Pending"
    };
    let mut reported = json!({
        "telemetryConfig": {"sendFrequencyInSecs": frequency, "status": status},
        "$metadata": {"$lastUpdated": "2024-01-01T00:00:00Z"},
        "$version": 3,
    });
    if let Some(c) = connectivity {
        reported["connectivity"] = json!(c);
    }
    json!({
        "deviceId": id,
        "etag": "AAAAAAAAAAE=",
        "version": 4,
        "status": if id == "d3" { "disabled" } else { "enabled" },
        "connectionState": if id == "d1" { "Connected" } else { "Disconnected" },
        "lastActivityTime": format!("2024-01-0{}T00:00:00Z", &id[1..]),
        "capabilities": {"iotEdge": id == "d2"},
        "tags": {"location": {"region": region}},
        "properties": {
            "desired": {"telemetryConfig": {"sendFrequencyInSecs": frequency}, "$version": 1},
            "reported": reported,
        },
    })
}

fn twins() -> Vec<Value> {
    vec![
        twin("d1", "US", 60, Some("wired")),
        twin("d2", "US", 30, Some("wifi")),
        twin("d3", "EU", 120, Some("cellular")),
        twin("d4", "US", 90, None),
    ]
}

fn modules() -> Vec<Value> {
    let module = |device: &str, module: &str, status: &str| {
        json!({
            "deviceId": device, "moduleId": module, "status": "enabled", "connectionState": "Disconnected",
            "tags": {}, "properties": {"desired": {"$version": 1}, "reported": {"status": status, "$version": 1}},
        })
    };
    vec![
        module("device1", "m1", "scanning"),
        module("device1", "m2", "idle"),
        module("device2", "m1", "scanning"),
        module("device3", "m1", "scanning"),
    ]
}

fn job_rows() -> Vec<Value> {
    let row = |device: &str, job: &str, job_type: &str, status: &str| {
        json!({
            "deviceId": device, "jobId": job, "jobType": job_type, "status": status,
            "startTimeUtc": "2024-05-01T00:00:00Z", "endTimeUtc": "2024-05-01T00:01:00Z",
            "createdDateTimeUtc": "2024-05-01T00:00:00Z", "lastUpdatedDateTimeUtc": "2024-05-01T00:01:00Z",
            "outcome": {"deviceMethodResponse": null},
        })
    };
    vec![
        row("myDeviceId", "myJobId", "scheduleUpdateTwin", "completed"),
        row("myDeviceId", "other", "scheduleDeviceMethod", "completed"),
        row("myDeviceId", "third", "scheduleUpdateTwin", "running"),
        row("otherDevice", "myJobId", "scheduleUpdateTwin", "completed"),
    ]
}

fn run(text: &str, documents: &[Value]) -> Vec<Value> {
    let query = Query::parse(text).unwrap_or_else(|err| panic!("`{text}`: {err}"));
    query.execute(documents)
}

/// `"deviceId/moduleId/jobId"`-style identities of the result rows (missing parts skipped).
fn ids(rows: &[Value]) -> Vec<String> {
    let id = |row: &Value| {
        let parts = ["deviceId", "moduleId", "jobId"].map(|k| row[k].as_str().unwrap_or(""));
        parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    };
    rows.iter().map(id).collect()
}

/// A test that runs a `SELECT *` query over `$documents` and checks the identities of the rows.
macro_rules! select_test {
    ($name:ident, $documents:ident: $query:literal => [$($id:literal),*]) => {
        #[test]
        fn $name() {
            assert_eq!(ids(&run($query, &$documents())), [$($id),*] as [&str; _]);
        }
    };
}

// ---- query.md §5 ------------------------------------------------------------------------------

#[test]
fn select_all_devices() {
    let query = Query::parse("SELECT * FROM devices").unwrap();
    assert_eq!(
        (query.collection(), query.item_type()),
        (Collection::Devices, ItemType::Twin)
    );
    assert_eq!(query.item_type().as_str(), "twin");
    assert_eq!(query.execute(&twins()), twins());
}

#[test]
fn count_all_devices() {
    let query = Query::parse("SELECT COUNT() AS totalNumberOfDevices FROM devices").unwrap();
    assert_eq!(query.item_type(), ItemType::Raw);
    assert_eq!(
        query.execute(&twins()),
        [json!({"totalNumberOfDevices": 4})]
    );
}

select_test!(tag_filter, twins: "SELECT * FROM devices WHERE tags.location.region = 'US'" => ["d1", "d2", "d4"]);

select_test!(and_with_numeric_comparison, twins:
    "SELECT * FROM devices WHERE tags.location.region = 'US' \
     AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60" => ["d1", "d4"]);

select_test!(in_list, twins:
    "SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired', 'wifi']" => ["d1", "d2"]);

select_test!(lowercase_is_defined, twins:
    "SELECT * FROM devices WHERE is_defined(properties.reported.connectivity)" => ["d1", "d2", "d3"]);

#[test]
fn grouped_counts() {
    let rows = run(
        "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices \
         FROM devices GROUP BY properties.reported.telemetryConfig.status",
        &twins(),
    );
    let expected = [
        json!({"status": "Success", "numberOfDevices": 3}),
        json!({"status": "Pending", "numberOfDevices": 1}),
    ];
    assert_eq!(rows, expected);
}

#[test]
fn projection_uses_canonical_names() {
    let query = Query::parse(
        "SELECT DeviceId, LastActivityTime FROM devices \
         WHERE status = 'enabled' AND connectionState = 'Disconnected'",
    )
    .unwrap();
    assert_eq!(query.item_type(), ItemType::Raw);
    let expected = [
        json!({"deviceId": "d2", "lastActivityTime": "2024-01-02T00:00:00Z"}),
        json!({"deviceId": "d4", "lastActivityTime": "2024-01-04T00:00:00Z"}),
    ];
    assert_eq!(query.execute(&twins()), expected);
}

#[test]
fn module_twins() {
    let text = "SELECT * FROM devices.modules WHERE properties.reported.status = 'scanning' \
                AND deviceId IN ['device1', 'device2']";
    let query = Query::parse(text).unwrap();
    assert_eq!(
        (query.collection(), query.item_type()),
        (Collection::Modules, ItemType::Twin)
    );
    assert_eq!(
        ids(&query.execute(&modules())),
        ["device1/m1", "device2/m1"]
    );
}

#[test]
fn job_rows_by_device_type_and_status() {
    let query = Query::parse(
        "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId' \
         AND devices.jobs.jobType = 'scheduleUpdateTwin' AND devices.jobs.status = 'completed'",
    )
    .unwrap();
    assert_eq!(query.collection(), Collection::Jobs);
    assert_eq!(query.item_type().as_str(), "deviceJob");
    assert_eq!(query.execute(&job_rows()), [job_rows()[0].clone()]);
}

select_test!(job_rows_of_one_job, job_rows:
    "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'myJobId'" => ["myDeviceId/myJobId", "otherDevice/myJobId"]);

select_test!(nested_boolean, twins: "SELECT * FROM devices WHERE capabilities.iotEdge = true" => ["d2"]);

#[test]
fn job_query_conditions() {
    let count = |text| {
        let condition = Condition::parse(text).unwrap();
        twins().iter().filter(|d| condition.matches(d)).count()
    };
    assert_eq!(count("deviceId IN ['d1','d2']"), 2);
    assert_eq!(count("IS_DEFINED(deviceId)"), 4);
}

// ---- semantics ---------------------------------------------------------------------------------

select_test!(not_excludes_documents_without_the_property, twins:
    "SELECT * FROM devices WHERE NOT (properties.reported.connectivity = 'wired')" => ["d2", "d3"]);

select_test!(not_is_defined, twins:
    "SELECT * FROM devices WHERE NOT IS_DEFINED(properties.reported.connectivity)" => ["d4"]);

select_test!(keywords_functions_and_names_are_case_insensitive, twins:
    "sElEcT * fRoM DEVICES wHeRe TAGS.Location.REGION = 'EU' aNd StartsWith(DEVICEID, 'd')" => ["d3"]);

select_test!(dollar_segments_and_collection_prefix, twins:
    "SELECT * FROM devices WHERE properties.desired.$version = 1 AND devices.status = 'disabled'" => ["d3"]);

select_test!(created_time_spelling_on_jobs, job_rows:
    "SELECT * FROM devices.jobs WHERE devices.jobs.createdTimeUtc > '2016-09-01' AND status = 'running'"
    => ["myDeviceId/third"]);

#[test]
fn projection_omits_undefined_and_uses_last_segment() {
    let text =
        "SELECT deviceId, properties.reported.connectivity, tags.location.region AS r FROM devices";
    let rows = run(text, &twins());
    assert_eq!(
        rows[0],
        json!({"deviceId": "d1", "connectivity": "wired", "r": "US"})
    );
    assert_eq!(rows[3], json!({"deviceId": "d4", "r": "US"}));
}

#[test]
fn top_limits_rows() {
    assert_eq!(
        ids(&run("SELECT TOP 2 * FROM devices", &twins())),
        ["d1", "d2"]
    );
    let rows = run(
        "SELECT TOP 1 deviceId FROM devices WHERE status = 'disabled'",
        &twins(),
    );
    assert_eq!(rows, [json!({"deviceId": "d3"})]);
    assert!(run("SELECT TOP 0 * FROM devices", &twins()).is_empty());
    let text =
        "SELECT TOP 1 tags.location.region, COUNT() FROM devices GROUP BY tags.location.region";
    assert_eq!(run(text, &twins()), [json!({"region": "US", "$2": 3})]);
    assert_eq!(
        Query::parse("SELECT TOP 7 * FROM devices").unwrap().top(),
        Some(7)
    );
}

#[test]
fn group_by_undefined_key_omits_the_key_column() {
    let text = "SELECT properties.reported.connectivity, COUNT() AS n FROM devices \
                WHERE tags.location.region = 'US' GROUP BY properties.reported.connectivity";
    let expected = [
        json!({"connectivity": "wired", "n": 1}),
        json!({"connectivity": "wifi", "n": 1}),
        json!({"n": 1}),
    ];
    assert_eq!(run(text, &twins()), expected);
    // GROUP BY without aggregates lists the distinct values.
    let text = "SELECT tags.location.region FROM devices GROUP BY tags.location.region";
    assert_eq!(
        run(text, &twins()),
        [json!({"region": "US"}), json!({"region": "EU"})]
    );
    // Groups with no matching documents do not exist.
    let text = "SELECT status, COUNT() FROM devices WHERE false GROUP BY status";
    assert!(run(text, &twins()).is_empty());
}

#[test]
fn aggregates_with_positional_names() {
    let text = "SELECT COUNT(), SUM(properties.desired.telemetryConfig.sendFrequencyInSecs), \
                AVG(properties.desired.telemetryConfig.sendFrequencyInSecs), MIN(lastActivityTime), \
                MAX(properties.desired.telemetryConfig.sendFrequencyInSecs) AS highest FROM devices";
    let expected =
        json!({"$1": 4, "$2": 300, "$3": 75, "$4": "2024-01-01T00:00:00Z", "highest": 120});
    assert_eq!(run(text, &twins()), [expected]);
    let text = "SELECT AVG(version) AS a, SUM(tags.location.region) AS s FROM devices";
    assert_eq!(
        run(text, &twins()),
        [json!({"a": 4})],
        "SUM of no numbers is omitted"
    );
    let docs = [json!({"v": 1}), json!({"v": 2})];
    assert_eq!(
        run("SELECT AVG(v) AS a FROM devices", &docs),
        [json!({"a": 1.5})]
    );
    let mixed = [
        json!({"v": "b"}),
        json!({"v": 10}),
        json!({"v": "a"}),
        json!({"v": true}),
    ];
    let text = "SELECT MIN(v) AS lo, MAX(v) AS hi FROM devices";
    assert_eq!(
        run(text, &mixed),
        [json!({"lo": 10, "hi": "b"})],
        "numbers order before strings"
    );
}

#[test]
fn aggregates_over_no_documents() {
    let rows = run(
        "SELECT COUNT() AS n, SUM(x) AS s, AVG(x), MIN(x), MAX(x) FROM devices",
        &[],
    );
    assert_eq!(rows, [json!({"n": 0})]);
    assert!(rows[0]["n"].is_u64(), "COUNT is a JSON integer");
    let rows = run(
        "SELECT COUNT() FROM devices WHERE tags.missing = 1",
        &twins(),
    );
    assert_eq!(rows, [json!({"$1": 0})]);
}

#[test]
fn parse_errors_are_reported() {
    let err = Query::parse("SELECT * FROM devices WHERE FOO(x)").unwrap_err();
    assert_eq!(
        (err.message(), err.offset()),
        ("unknown function `FOO`", 28)
    );
    assert!("SELECT * FROM devices.foo".parse::<Query>().is_err());
    assert!("deviceId IN ['d1'".parse::<Condition>().is_err());
}

#[test]
fn deeply_nested_input_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}x = 1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(Condition::parse(&deep).is_err(), "over the length limit");
    assert!(Query::parse(&format!("SELECT * FROM devices WHERE {deep}")).is_err());
    // Within the length limit, the nesting limit applies.
    let deep = format!("{}x = 1{}", "(".repeat(4000), ")".repeat(4000));
    let err = Condition::parse(&deep).unwrap_err();
    assert!(err.message().contains("nested too deeply"), "{err}");
    let at_limit = format!("{}true{}", "NOT (".repeat(32), ")".repeat(32));
    assert!(
        Condition::parse(&at_limit).unwrap().matches(&json!({})),
        "evaluates at full depth"
    );
    let nots = format!("{}true", "NOT ".repeat(2000));
    assert!(
        Condition::parse(&nots)
            .unwrap_err()
            .message()
            .contains("nested too deeply")
    );
}
