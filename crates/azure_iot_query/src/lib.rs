//! The IoT Hub query language: `SELECT … FROM devices …` and bare `WHERE` conditions, parsed and
//! evaluated over JSON documents (device twins, module twins, per-device job rows).
//!
//! Used by the emulator for `POST /devices/query` ([`Query`]) and for the `queryCondition` of jobs
//! ([`Condition`]). The crate does no I/O: callers pass the documents in the order they want the
//! results (the emulator sorts by `deviceId`, then `moduleId`).
//!
//! # Pipeline
//!
//! 1. **Lexing** (`lexer`): text → tokens with byte offsets. Keywords are ordinary identifiers to
//!    the lexer; the parser compares them ASCII case-insensitively (`select` = `SELECT`).
//! 2. **Parsing** (`parser`): recursive descent → AST (`ast`). Input is limited to
//!    [`MAX_QUERY_CHARS`] characters and nesting (parentheses, `NOT`, unary minus, function calls)
//!    to [`MAX_NESTING_DEPTH`] levels; `AND`/`OR` and arithmetic chains are flat n-ary nodes, so the
//!    tree is never deeper than the nesting limit allows and neither parsing, evaluation nor drop
//!    can overflow the stack. The select list is validated here (aggregates vs. `GROUP BY`), so
//!    execution cannot fail.
//! 3. **Evaluation** (`eval`): an expression yields a JSON primitive or *undefined* (missing
//!    property, type mismatch, division by zero). Logic is three-valued: `false AND undefined` is
//!    `false`, `true OR undefined` is `true`, `NOT undefined` is undefined. Comparisons are defined
//!    only between two numbers, two strings (ordinal, case-sensitive), two Booleans or two nulls
//!    (the last two for `=`/`!=` only); anything else is undefined. A document matches only if the
//!    condition is Boolean `true`.
//! 4. **Execution** (`exec`): filter, then return whole documents, project paths, or group and
//!    aggregate; finally apply `TOP`.
//!
//! Property *names* in paths match exactly if possible, otherwise ASCII case-insensitively, and
//! projected columns use the document's spelling (`SELECT DeviceId` yields `"deviceId"`). Paths may
//! be prefixed with the collection name (`devices.jobs.jobId`, `devices.deviceId`).
//!
//! # Choices where the service is undocumented
//!
//! - An unaliased aggregate is named by its 1-based position in the select list: `"$1"`, `"$2"`, ….
//! - `GROUP BY`: documents whose group path is undefined form one group whose key column is
//!   omitted; groups are ordered by first appearance; `1` and `1.0` are the same key.
//! - `SUM`/`AVG` consider numbers only. `MIN`/`MAX` consider numbers and strings, with every
//!   number ordered before every string (Cosmos DB ordering), so ISO-8601 timestamps work.
//!   With nothing to aggregate, the column is omitted; `COUNT()` of nothing is `0`.
//! - Aggregate results that are integral (and exactly representable) are JSON integers.
//! - `IN`/`NIN` are `true`/`false` for any primitive left operand (a list element of another type
//!   simply does not match) and undefined for an undefined, object or array operand.
//! - `devices.jobs` accepts projections and aggregates (the hub documents only `SELECT *`), and
//!   reads `createdTimeUtc` as `createdDateTimeUtc`.
//!
//! # Example
//!
//! ```
//! use azure_iot_query::{ItemType, Query};
//! use serde_json::json;
//!
//! let twins = [
//!     json!({"deviceId": "d1", "tags": {"region": "US"}}),
//!     json!({"deviceId": "d2", "tags": {"region": "EU"}}),
//! ];
//! let query = Query::parse("select DeviceId from devices where tags.region = 'US'")?;
//! assert_eq!(query.item_type(), ItemType::Raw);
//! assert_eq!(query.execute(&twins), vec![json!({"deviceId": "d1"})]);
//! # Ok::<(), azure_iot_query::QueryError>(())
//! ```

mod ast;
mod error;
mod eval;
mod exec;
mod lexer;
mod parser;

use std::str::FromStr;

use serde_json::Value;

pub use error::QueryError;

/// Longest accepted query or condition text, in characters (the hub's documented limit).
pub const MAX_QUERY_CHARS: usize = 8192;

/// Deepest accepted nesting of parentheses, `NOT`, unary minus and function calls.
pub const MAX_NESTING_DEPTH: usize = 64;

/// The collection a query reads (its `FROM` clause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    /// `devices`: one twin per device.
    Devices,
    /// `devices.modules`: one twin per module.
    Modules,
    /// `devices.jobs`: one row per (device, job).
    Jobs,
}

impl Collection {
    /// The collection name as written in queries: `devices`, `devices.modules`, `devices.jobs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Devices => "devices",
            Self::Modules => "devices.modules",
            Self::Jobs => "devices.jobs",
        }
    }
}

/// The kind of items a query returns (the `x-ms-item-type` response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemType {
    /// Device or module twins (`SELECT *` from `devices` or `devices.modules`).
    Twin,
    /// Per-device job rows (`SELECT *` from `devices.jobs`).
    DeviceJob,
    /// Projections and aggregates.
    Raw,
}

impl ItemType {
    /// The header value: `twin`, `deviceJob` or `raw`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Twin => "twin",
            Self::DeviceJob => "deviceJob",
            Self::Raw => "raw",
        }
    }
}

/// A parsed `SELECT` statement, ready to run over any number of document sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    statement: ast::Statement,
}

impl Query {
    /// Parses query text such as `SELECT * FROM devices WHERE tags.region = 'US'`.
    ///
    /// # Errors
    /// Returns a [`QueryError`] locating the first problem: syntax, unknown collection or
    /// function, select list not matching `GROUP BY`, text or nesting over the limits.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        parser::parse_statement(text).map(|statement| Self { statement })
    }

    /// The collection named in `FROM`.
    pub fn collection(&self) -> Collection {
        self.statement.collection
    }

    /// The kind of items [`execute`](Self::execute) returns.
    pub fn item_type(&self) -> ItemType {
        match (&self.statement.shape, self.statement.collection) {
            (ast::Shape::Documents, Collection::Jobs) => ItemType::DeviceJob,
            (ast::Shape::Documents, _) => ItemType::Twin,
            _ => ItemType::Raw,
        }
    }

    /// The `TOP n` limit, if any.
    pub fn top(&self) -> Option<usize> {
        self.statement.top
    }

    /// Whether `document` satisfies the `WHERE` clause (always true without one).
    pub fn matches(&self, document: &Value) -> bool {
        self.statement
            .condition
            .as_ref()
            .is_none_or(|c| eval::is_true(c, document))
    }

    /// Runs the query over `documents` and returns all result rows (after `TOP`), in document
    /// order, or in order of first appearance for groups. Never fails.
    pub fn execute<'a>(&self, documents: impl IntoIterator<Item = &'a Value>) -> Vec<Value> {
        exec::execute(&self.statement, documents)
    }
}

impl FromStr for Query {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Self, QueryError> {
        Self::parse(text)
    }
}

/// A bare condition (the part after `WHERE`), such as a job's `queryCondition`
/// `deviceId IN ['d1', 'd2']`. Paths are relative to a device twin (a `devices.` prefix is accepted).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    expr: ast::Expr,
}

impl Condition {
    /// Parses condition text.
    ///
    /// # Errors
    /// Returns a [`QueryError`] locating the first syntax error, unknown function, or limit exceeded.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        parser::parse_condition(text).map(|expr| Self { expr })
    }

    /// Whether the condition evaluates to Boolean `true` for `document`.
    pub fn matches(&self, document: &Value) -> bool {
        eval::is_true(&self.expr, document)
    }
}

impl FromStr for Condition {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Self, QueryError> {
        Self::parse(text)
    }
}
