//! Abstract syntax tree produced by the parser and consumed by the evaluator.
//!
//! `AND`, `OR` and arithmetic chains are n-ary nodes, so the tree depth is bounded by the parser's
//! nesting limit (parentheses, `NOT`, unary minus, function calls) rather than by the query length.

use std::fmt;

use crate::Collection;

/// A parsed `SELECT` statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    pub(crate) top: Option<usize>,
    pub(crate) collection: Collection,
    pub(crate) condition: Option<Expr>,
    pub(crate) shape: Shape,
}

/// What the statement produces per result row, resolved and validated from the select list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// `SELECT *`: the matching documents themselves.
    Documents,
    /// `SELECT a, b AS c`: one projected object per matching document.
    Project(Vec<Projected>),
    /// Aggregates and/or `GROUP BY`: one row per group (a single group without `GROUP BY`).
    Aggregate {
        group_by: Option<Path>,
        columns: Vec<Column>,
    },
}

/// One projected path of [`Shape::Project`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Projected {
    pub(crate) path: Path,
    /// Output key; `None` means the document's spelling of the last path segment.
    pub(crate) alias: Option<String>,
}

/// One output column of [`Shape::Aggregate`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Column {
    /// The group's value of the `GROUP BY` path; without alias, keyed by the document's spelling.
    GroupKey { alias: Option<String> },
    /// An aggregate, keyed by its alias or its position (`$1`, `$2`, …).
    Aggregate { name: String, aggregate: Aggregate },
}

/// An aggregate function of the select list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Aggregate {
    Count,
    Sum(Path),
    Avg(Path),
    Min(Path),
    Max(Path),
}

impl Aggregate {
    /// Applies `f` to the aggregated path, if any.
    pub(crate) fn map_path(self, f: impl FnOnce(Path) -> Path) -> Self {
        match self {
            Self::Count => Self::Count,
            Self::Sum(p) => Self::Sum(f(p)),
            Self::Avg(p) => Self::Avg(f(p)),
            Self::Min(p) => Self::Min(f(p)),
            Self::Max(p) => Self::Max(f(p)),
        }
    }
}

/// A dotted property path such as `properties.reported.temp`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Path {
    /// Never empty.
    pub(crate) segments: Vec<String>,
    /// Byte offset of the first segment in the query text.
    pub(crate) offset: usize,
}

impl Path {
    /// Whether both paths name the same property (segments compared case-insensitively).
    pub(crate) fn same_as(&self, other: &Path) -> bool {
        self.to_string().eq_ignore_ascii_case(&other.to_string())
    }

    /// Rewrites a path written relative to the collection (`devices.jobs.jobId`) to one relative
    /// to the document (`jobId`). On `devices.jobs`, `createdTimeUtc` (a spelling used in the docs)
    /// is read as the job row's `createdDateTimeUtc`.
    pub(crate) fn relative_to(mut self, collection: Collection) -> Self {
        let prefix = format!("{}.", collection.as_str());
        let text = self.to_string();
        if text
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(&prefix))
        {
            self.segments.drain(..prefix.matches('.').count());
        }
        if collection == Collection::Jobs
            && let [name] = &mut self.segments[..]
            && name.eq_ignore_ascii_case("createdTimeUtc")
        {
            *name = "createdDateTimeUtc".to_owned();
        }
        self
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

/// A scalar constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Built-in scalar functions usable in conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    IsDefined,
    StartsWith,
    EndsWith,
}

impl Function {
    /// Looks a function up by name, case-insensitively.
    pub(crate) fn by_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "IS_DEFINED" => Some(Self::IsDefined),
            "STARTSWITH" | "STARTS_WITH" => Some(Self::StartsWith),
            "ENDSWITH" | "ENDS_WITH" => Some(Self::EndsWith),
            _ => None,
        }
    }

    pub(crate) fn arity(self) -> usize {
        match self {
            Self::IsDefined => 1,
            Self::StartsWith | Self::EndsWith => 2,
        }
    }
}

/// An expression of a `WHERE` clause or bare condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Literal(Literal),
    Path(Path),
    /// Unary minus.
    Neg(Box<Expr>),
    Not(Box<Expr>),
    /// Two or more operands.
    And(Vec<Expr>),
    /// Two or more operands.
    Or(Vec<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// Left-associative chain `first op1 e1 op2 e2 …` of one precedence level.
    Arith {
        first: Box<Expr>,
        rest: Vec<(ArithOp, Expr)>,
    },
    /// `expr IN [..]`, or `expr NIN [..]` when `negated`.
    In {
        expr: Box<Expr>,
        list: Vec<Literal>,
        negated: bool,
    },
    Call(Function, Vec<Expr>),
}
