//! Expression evaluation over one JSON document, with SQL-style three-valued logic.
//!
//! Every expression evaluates to a [`Val`], which may be [`Val::Undefined`] (missing property,
//! type mismatch, division by zero, …). Evaluation never fails: anything that cannot be computed
//! is undefined, and a document matches a condition only if it evaluates to `true`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::ast::{ArithOp, CmpOp, Expr, Function, Literal, Path};

/// The value of an expression. Strings borrow from the document or the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Val<'a> {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    /// A JSON object or array: defined, but not comparable.
    Composite,
}

impl<'a> Val<'a> {
    fn from_json(value: &'a Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => n.as_f64().map_or(Self::Undefined, Self::Num),
            Value::String(s) => Self::Str(s),
            Value::Array(_) | Value::Object(_) => Self::Composite,
        }
    }

    fn from_literal(literal: &'a Literal) -> Self {
        match literal {
            Literal::Undefined => Self::Undefined,
            Literal::Null => Self::Null,
            Literal::Bool(b) => Self::Bool(*b),
            Literal::Num(n) => Self::Num(*n),
            Literal::Str(s) => Self::Str(s),
        }
    }

    /// The truth value in three-valued logic: `None` is "unknown" (anything but a Boolean).
    fn truth(self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn from_truth(truth: Option<bool>) -> Self {
        truth.map_or(Self::Undefined, Self::Bool)
    }
}

/// Whether `expr` evaluates to Boolean `true` for `doc`.
pub(crate) fn is_true(expr: &Expr, doc: &Value) -> bool {
    eval(expr, doc) == Val::Bool(true)
}

/// Finds the value at `path` in `doc`, together with the document's spelling of the last segment.
///
/// Each segment matches a property exactly if possible, otherwise ASCII case-insensitively.
pub(crate) fn resolve<'v>(doc: &'v Value, path: &Path) -> Option<(&'v str, &'v Value)> {
    let mut found = None;
    let mut current = doc;
    for segment in &path.segments {
        let Value::Object(map) = current else {
            return None;
        };
        let (name, value) = lookup(map, segment)?;
        found = Some((name, value));
        current = value;
    }
    found
}

fn lookup<'v>(map: &'v Map<String, Value>, name: &str) -> Option<(&'v str, &'v Value)> {
    map.get_key_value(name)
        .or_else(|| map.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)))
        .map(|(key, value)| (key.as_str(), value))
}

/// Evaluates `expr` against `doc`.
pub(crate) fn eval<'a>(expr: &'a Expr, doc: &'a Value) -> Val<'a> {
    match expr {
        Expr::Literal(literal) => Val::from_literal(literal),
        Expr::Path(path) => resolve(doc, path).map_or(Val::Undefined, |(_, v)| Val::from_json(v)),
        Expr::Neg(inner) => match eval(inner, doc) {
            Val::Num(n) => Val::Num(-n),
            _ => Val::Undefined,
        },
        Expr::Not(inner) => Val::from_truth(eval(inner, doc).truth().map(|b| !b)),
        Expr::And(operands) => {
            // false dominates, then unknown, then true.
            let mut result = Some(true);
            for operand in operands {
                match eval(operand, doc).truth() {
                    Some(false) => return Val::Bool(false),
                    None => result = None,
                    Some(true) => {}
                }
            }
            Val::from_truth(result)
        }
        Expr::Or(operands) => {
            // true dominates, then unknown, then false.
            let mut result = Some(false);
            for operand in operands {
                match eval(operand, doc).truth() {
                    Some(true) => return Val::Bool(true),
                    None => result = None,
                    Some(false) => {}
                }
            }
            Val::from_truth(result)
        }
        Expr::Compare(op, left, right) => {
            Val::from_truth(compare(*op, eval(left, doc), eval(right, doc)))
        }
        Expr::Arith { first, rest } => {
            let Val::Num(mut acc) = eval(first, doc) else {
                return Val::Undefined;
            };
            for (op, operand) in rest {
                let Val::Num(n) = eval(operand, doc) else {
                    return Val::Undefined;
                };
                acc = arith(*op, acc, n);
                if !acc.is_finite() {
                    return Val::Undefined; // overflow, division by zero
                }
            }
            Val::Num(acc)
        }
        Expr::In {
            expr,
            list,
            negated,
        } => match eval(expr, doc) {
            Val::Undefined | Val::Composite => Val::Undefined,
            value => {
                let found = list
                    .iter()
                    .any(|item| compare(CmpOp::Eq, value, Val::from_literal(item)) == Some(true));
                Val::Bool(found != *negated)
            }
        },
        Expr::Call(function, args) => call(*function, args, doc),
    }
}

/// Compares two values; `None` (undefined) unless both are primitives of the same type.
/// Numbers and strings are ordered (strings by code point, case-sensitively); Booleans and
/// `null` only support `=` and `!=`.
fn compare(op: CmpOp, left: Val<'_>, right: Val<'_>) -> Option<bool> {
    let equality = matches!(op, CmpOp::Eq | CmpOp::Ne);
    let ordering = match (left, right) {
        (Val::Num(a), Val::Num(b)) => a.partial_cmp(&b)?,
        (Val::Str(a), Val::Str(b)) => a.cmp(b),
        (Val::Bool(a), Val::Bool(b)) if equality => a.cmp(&b),
        (Val::Null, Val::Null) if equality => Ordering::Equal,
        _ => return None,
    };
    Some(match op {
        CmpOp::Eq => ordering.is_eq(),
        CmpOp::Ne => ordering.is_ne(),
        CmpOp::Lt => ordering.is_lt(),
        CmpOp::Le => ordering.is_le(),
        CmpOp::Gt => ordering.is_gt(),
        CmpOp::Ge => ordering.is_ge(),
    })
}

fn arith(op: ArithOp, a: f64, b: f64) -> f64 {
    match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div => a / b,
        ArithOp::Rem => a % b,
    }
}

fn call<'a>(function: Function, args: &'a [Expr], doc: &'a Value) -> Val<'a> {
    let mut values = args.iter().map(|arg| eval(arg, doc));
    let (first, second) = (values.next(), values.next());
    match (function, first, second) {
        (Function::IsDefined, Some(value), _) => Val::Bool(value != Val::Undefined),
        (Function::StartsWith, Some(Val::Str(s)), Some(Val::Str(prefix))) => {
            Val::Bool(s.starts_with(prefix))
        }
        (Function::EndsWith, Some(Val::Str(s)), Some(Val::Str(suffix))) => {
            Val::Bool(s.ends_with(suffix))
        }
        _ => Val::Undefined,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::parser::parse_condition;

    /// Evaluates each `condition => result` line of `table` against a small twin.
    fn check(table: &str) {
        let doc = json!({
            "deviceId": "d1",
            "status": "enabled",
            "tags": {"n": 5, "s": "Abc", "flag": true, "nothing": null, "list": [1, 2], "obj": {}},
        });
        for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (condition, expected) = line.split_once(" => ").unwrap();
            let expr = parse_condition(condition).unwrap();
            let actual = match eval(&expr, &doc) {
                Val::Undefined => "undefined".to_owned(),
                Val::Null => "null".to_owned(),
                Val::Bool(b) => b.to_string(),
                Val::Num(n) => n.to_string(),
                Val::Str(s) => format!("'{s}'"),
                Val::Composite => "composite".to_owned(),
            };
            assert_eq!(actual, expected, "{condition}");
        }
    }

    #[test]
    fn paths_are_case_insensitive_with_exact_match_first() {
        let doc = json!({"a": {"B": 1, "b": 2}, "Cc": 3});
        let resolved = |text| match parse_condition(text).unwrap() {
            Expr::Path(path) => resolve(&doc, &path).map(|(name, v)| format!("{name}={v}")),
            other => panic!("not a path: {other:?}"),
        };
        assert_eq!(resolved("a.b").as_deref(), Some("b=2"));
        assert_eq!(resolved("A.B").as_deref(), Some("B=1"));
        assert_eq!(resolved("cc").as_deref(), Some("Cc=3"));
        assert_eq!(resolved("cc.x"), None);
        check("deviceid => 'd1'\n TAGS.OBJ => composite\n tags.nothing => null");
    }

    #[test]
    fn comparisons_between_same_types() {
        check(
            "tags.n = 5 => true
            tags.n <> 5 => false
            tags.n >= 5.0 AND tags.n < 6 => true
            tags.s = 'Abc' => true
            tags.s = 'abc' => false
            tags.s < 'B' AND tags.s > 'A' AND tags.s >= 'Abc' => true
            tags.flag = true => true
            tags.flag != false => true
            tags.nothing = null => true
            tags.nothing != null => false",
        );
    }

    #[test]
    fn comparisons_across_types_or_with_undefined_are_undefined() {
        check(
            "tags.n = '5' => undefined
            tags.s != 5 => undefined
            tags.flag < true => undefined
            tags.nothing <= null => undefined
            tags.s = null => undefined
            tags.list = tags.list => undefined
            tags.obj != 1 => undefined
            tags.missing = 1 => undefined
            tags.missing != 1 => undefined
            undefined = undefined => undefined",
        );
    }

    #[test]
    fn three_valued_logic() {
        check(
            "NOT (tags.missing = 1) => undefined
            NOT (tags.n = 1) => true
            false AND tags.missing = 1 => false
            tags.missing = 1 AND false => false
            true AND tags.missing = 1 => undefined
            true OR tags.missing = 1 => true
            tags.missing = 1 OR true => true
            false OR tags.missing = 1 => undefined
            false OR false => false
            true AND true AND true => true
            NOT 'text' => undefined
            true AND 1 => undefined",
        );
    }

    #[test]
    fn arithmetic() {
        check(
            "1 + 2 * 3 - 4 / 2 => 5
            (1 + 2) * 3 => 9
            10 - 2 - 3 => 5
            7 % 4 => 3
            -tags.n + 0x10 => 11
            - -3 => 3
            1 / 0 => undefined
            1 % 0 => undefined
            1e308 * 10 => undefined
            tags.s + 1 => undefined
            -tags.s => undefined
            tags.n * 2 = 10 => true",
        );
    }

    #[test]
    fn in_and_nin() {
        check(
            "tags.n IN [1, 5] => true
            tags.n IN ['5', -5] => false
            tags.n NIN [1, 2] => true
            tags.s nin ['Abc'] => false
            tags.nothing IN [null] => true
            tags.n IN [] => false
            tags.missing IN [1] => undefined
            tags.missing NIN [1] => undefined
            tags.list IN [1] => undefined",
        );
    }

    #[test]
    fn functions() {
        check(
            "IS_DEFINED(tags.nothing) => true
            is_defined(tags.missing) => false
            IS_DEFINED(tags.obj) => true
            NOT IS_DEFINED(tags.missing) => true
            STARTSWITH(deviceId, 'd') => true
            starts_with(deviceId, 'D') => false
            EndsWith(status, 'bled') => true
            ENDS_WITH(tags.n, '5') => undefined
            STARTSWITH(tags.missing, '') => undefined",
        );
    }
}
