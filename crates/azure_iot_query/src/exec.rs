//! Statement execution: filter, then return documents, project, or group and aggregate; then TOP.
//!
//! Grouping keeps references to each group's documents and computes the aggregates per group at
//! the end; nothing is copied until the result rows are built.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::ast::{Aggregate, Column, Path, Projected, Shape, Statement};
use crate::eval::{is_true, resolve};

/// Largest magnitude up to which every integer is exactly representable as `f64` (2^53).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A group's key as found in its first document: the spelling of the key's last segment and the
/// value; `None` for the group of documents where the `GROUP BY` path is undefined.
type GroupKey<'d> = Option<(&'d str, &'d Value)>;

/// Runs `statement` over `documents` (in caller order) and returns the result rows.
pub(crate) fn execute<'d>(
    statement: &Statement,
    documents: impl IntoIterator<Item = &'d Value>,
) -> Vec<Value> {
    let limit = statement.top.unwrap_or(usize::MAX);
    let condition = statement.condition.as_ref();
    let matching = documents
        .into_iter()
        .filter(|doc| condition.is_none_or(|c| is_true(c, doc)));
    match &statement.shape {
        Shape::Documents => matching.take(limit).cloned().collect(),
        Shape::Project(items) => matching.take(limit).map(|d| project(items, d)).collect(),
        Shape::Aggregate { group_by, columns } => {
            let groups = group(group_by.as_ref(), matching);
            let rows = groups.iter().take(limit);
            rows.map(|(key, members)| group_row(columns, *key, members))
                .collect()
        }
    }
}

fn project(items: &[Projected], doc: &Value) -> Value {
    let mut row = Map::new();
    for Projected { path, alias } in items {
        if let Some((name, value)) = resolve(doc, path) {
            row.insert(alias.as_deref().unwrap_or(name).to_owned(), value.clone());
        }
    }
    Value::Object(row)
}

/// Splits `documents` into groups by the value of `group_by`, in order of first appearance.
/// Without `GROUP BY` there is exactly one group, even when there are no documents.
fn group<'d>(
    group_by: Option<&Path>,
    documents: impl Iterator<Item = &'d Value>,
) -> Vec<(GroupKey<'d>, Vec<&'d Value>)> {
    let Some(path) = group_by else {
        return vec![(None, documents.collect())];
    };
    let mut groups: Vec<(GroupKey<'d>, Vec<&'d Value>)> = Vec::new();
    let mut index: HashMap<Option<String>, usize> = HashMap::new();
    for doc in documents {
        let key = resolve(doc, path);
        let slot = *index
            .entry(key.map(|(_, v)| hash_key(v)))
            .or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
        groups[slot].1.push(doc);
    }
    groups
}

/// Hashable identity of a group key. Numbers are compared by value (`1` and `1.0` are one group);
/// other values by their JSON text, which cannot start with `#`.
fn hash_key(value: &Value) -> String {
    match value.as_f64() {
        Some(n) => format!("#{n:?}"),
        None => value.to_string(),
    }
}

fn group_row(columns: &[Column], key: GroupKey<'_>, members: &[&Value]) -> Value {
    let mut row = Map::new();
    for column in columns {
        let cell = match column {
            Column::GroupKey { alias } => {
                key.map(|(name, value)| (alias.as_deref().unwrap_or(name), value.clone()))
            }
            Column::Aggregate { name, aggregate } => {
                aggregate_value(aggregate, members).map(|value| (name.as_str(), value))
            }
        };
        if let Some((name, value)) = cell {
            row.insert(name.to_owned(), value);
        }
    }
    Value::Object(row)
}

/// Computes one aggregate over a group; `None` when there is nothing to aggregate.
fn aggregate_value(aggregate: &Aggregate, members: &[&Value]) -> Option<Value> {
    match aggregate {
        Aggregate::Count => Some(Value::from(members.len())),
        Aggregate::Sum(path) | Aggregate::Avg(path) => {
            let numbers: Vec<f64> = values(members, path).filter_map(Value::as_f64).collect();
            let total: f64 = numbers.iter().sum();
            match aggregate {
                _ if numbers.is_empty() => None,
                Aggregate::Avg(_) => number_value(total / numbers.len() as f64),
                _ => number_value(total),
            }
        }
        Aggregate::Min(path) => extremes(members, path).min_by(Extreme::order)?.into(),
        Aggregate::Max(path) => extremes(members, path).max_by(Extreme::order)?.into(),
    }
}

/// The defined values of `path` in the group's documents.
fn values<'d>(members: &[&'d Value], path: &Path) -> impl Iterator<Item = &'d Value> {
    members
        .iter()
        .filter_map(move |doc| Some(resolve(doc, path)?.1))
}

fn extremes<'d>(members: &[&'d Value], path: &Path) -> impl Iterator<Item = Extreme<'d>> {
    values(members, path).filter_map(Extreme::of)
}

/// Converts a computed number to JSON: integral values that `f64` represents exactly become JSON
/// integers; non-finite values have no JSON form (`None`).
pub(crate) fn number_value(n: f64) -> Option<Value> {
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        Some(Value::from(n as i64))
    } else {
        serde_json::Number::from_f64(n).map(Value::Number)
    }
}

/// A value MIN/MAX consider. Every number orders before every string (as in Cosmos DB).
#[derive(Clone, Copy)]
enum Extreme<'d> {
    Num(f64),
    Str(&'d str),
}

impl<'d> Extreme<'d> {
    fn of(value: &'d Value) -> Option<Self> {
        match value {
            Value::Number(n) => n.as_f64().map(Self::Num),
            Value::String(s) => Some(Self::Str(s)),
            _ => None,
        }
    }

    fn order(a: &Self, b: &Self) -> Ordering {
        match (a, b) {
            (Self::Num(a), Self::Num(b)) => a.total_cmp(b),
            (Self::Str(a), Self::Str(b)) => a.cmp(b),
            (Self::Num(_), Self::Str(_)) => Ordering::Less,
            (Self::Str(_), Self::Num(_)) => Ordering::Greater,
        }
    }
}

impl From<Extreme<'_>> for Option<Value> {
    fn from(extreme: Extreme<'_>) -> Self {
        match extreme {
            Extreme::Num(n) => number_value(n),
            Extreme::Str(s) => Some(Value::from(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_are_integers_when_integral() {
        assert_eq!(number_value(3.0), Some(json!(3)));
        assert_eq!(number_value(-0.0), Some(json!(0)));
        assert_eq!(number_value(2.5), Some(json!(2.5)));
        assert_eq!(number_value(1e300), Some(json!(1e300)));
        assert_eq!(number_value(f64::INFINITY), None);
    }

    #[test]
    fn group_keys_compare_numbers_by_value() {
        assert_eq!(hash_key(&json!(1)), hash_key(&json!(1.0)));
        assert_ne!(hash_key(&json!(1)), hash_key(&json!("1")));
        assert_ne!(hash_key(&json!(null)), hash_key(&json!("null")));
    }
}
