//! Recursive-descent parser: tokens → [`Statement`] / [`Expr`].
//!
//! Grammar (keywords case-insensitive):
//! ```text
//! query  := SELECT [TOP int] ('*' | item (',' item)*) FROM source [WHERE expr] [GROUP BY path]
//! item   := (path | COUNT '(' ')' | (SUM | AVG | MIN | MAX) '(' path ')') [AS ident]
//! source := devices | devices.modules | devices.jobs
//! expr   := and (OR and)*
//! and    := not (AND not)*
//! not    := NOT not | cmp
//! cmp    := add [('=' | '!=' | '<>' | '<' | '<=' | '>' | '>=') add | (IN | NIN) '[' constants ']']
//! add    := mul (('+' | '-') mul)*
//! mul    := unary (('*' | '/' | '%') unary)*
//! unary  := '-' unary | '(' expr ')' | literal | ident '(' [expr (',' expr)*] ')' | path
//! path   := ident ('.' ident)*
//! ```

use crate::ast::{Aggregate, ArithOp, CmpOp, Column, Expr, Function, Literal, Path};
use crate::ast::{Projected, Shape, Statement};
use crate::error::{QueryError, Result, excerpt};
use crate::lexer::{Token, TokenKind, tokenize};
use crate::{Collection, MAX_NESTING_DEPTH, MAX_QUERY_CHARS};

/// Keywords that cannot start a path (they may follow a dot, as in `tags.group`). The literal
/// words `true`, `false`, `null` and `undefined` are reserved too.
const KEYWORDS: &[&str] = &[
    "select", "top", "from", "where", "group", "by", "and", "or", "not", "in", "nin", "as",
];

const AGGREGATES: &[&str] = &["COUNT", "SUM", "AVG", "MIN", "MAX"];

/// Parses a full `SELECT` statement.
pub(crate) fn parse_statement(text: &str) -> Result<Statement> {
    let mut p = Parser::new(text)?;
    p.expect_keyword("select")?;
    let top = p.optional("top", Parser::top_count)?;
    let items = if p.eat(&TokenKind::Star) {
        None
    } else {
        Some(p.select_list()?)
    };
    p.expect_keyword("from")?;
    p.collection = p.collection()?;
    let condition = p.optional("where", Parser::expr)?;
    let group_by = p.optional("group", |p| {
        p.expect_keyword("by")?;
        p.path().map(|path| path.relative_to(p.collection))
    })?;
    p.expect(TokenKind::Eof)?;
    let shape = build_shape(items, group_by, p.collection)?;
    Ok(Statement {
        top,
        collection: p.collection,
        condition,
        shape,
    })
}

/// Parses a bare condition (the `WHERE` part only), with paths relative to a device twin.
pub(crate) fn parse_condition(text: &str) -> Result<Expr> {
    let mut p = Parser::new(text)?;
    let expr = p.expr()?;
    p.expect(TokenKind::Eof)?;
    Ok(expr)
}

/// A select-list entry before validation against `GROUP BY`.
enum Item {
    Path(Path),
    Aggregate(Aggregate),
}

/// Validates the select list against `GROUP BY` and decides the statement's [`Shape`].
fn build_shape(
    items: Option<Vec<(Item, Option<String>)>>,
    group_by: Option<Path>,
    collection: Collection,
) -> Result<Shape> {
    let Some(items) = items else {
        return match group_by {
            Some(g) => Err(QueryError::new(
                g.offset,
                "GROUP BY cannot be used with SELECT *",
            )),
            None => Ok(Shape::Documents),
        };
    };
    let has_aggregate = items
        .iter()
        .any(|(item, _)| matches!(item, Item::Aggregate(_)));
    if group_by.is_none() && !has_aggregate {
        let paths = items.into_iter().filter_map(|(item, alias)| match item {
            Item::Path(path) => Some(Projected {
                path: path.relative_to(collection),
                alias,
            }),
            Item::Aggregate(_) => None,
        });
        return Ok(Shape::Project(paths.collect()));
    }
    let mut columns = Vec::new();
    for (position, (item, alias)) in items.into_iter().enumerate() {
        columns.push(match item {
            Item::Aggregate(aggregate) => {
                let aggregate = aggregate.map_path(|path| path.relative_to(collection));
                let name = alias.unwrap_or_else(|| format!("${}", position + 1));
                Column::Aggregate { name, aggregate }
            }
            Item::Path(path) => {
                let path = path.relative_to(collection);
                if !group_by.as_ref().is_some_and(|g| g.same_as(&path)) {
                    let problem = match group_by {
                        Some(_) => "is neither the GROUP BY path nor an aggregate",
                        None => "cannot be selected with aggregates unless it is the GROUP BY path",
                    };
                    let msg = format!("`{}` {problem}", excerpt(&path.to_string()));
                    return Err(QueryError::new(path.offset, msg));
                }
                Column::GroupKey { alias }
            }
        });
    }
    Ok(Shape::Aggregate { group_by, columns })
}

struct Parser {
    /// Never empty; the last token is `Eof`.
    tokens: Vec<Token>,
    /// Index of the current token; never past the `Eof` token.
    pos: usize,
    /// Current nesting of parentheses, `NOT`, unary minus and function calls.
    depth: usize,
    /// The `FROM` collection, whose name may prefix paths in conditions.
    collection: Collection,
}

impl Parser {
    fn new(text: &str) -> Result<Self> {
        if let Some((offset, _)) = text.char_indices().nth(MAX_QUERY_CHARS) {
            let msg = format!("query text is longer than {MAX_QUERY_CHARS} characters");
            return Err(QueryError::new(offset, msg));
        }
        let tokens = tokenize(text)?;
        Ok(Self {
            tokens,
            pos: 0,
            depth: 0,
            collection: Collection::Devices,
        })
    }

    // ---- token helpers -------------------------------------------------------------------------

    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        self.pos = (self.pos + 1).min(self.tokens.len() - 1);
        token
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        let hit = &self.peek().kind == kind;
        if hit {
            self.advance();
        }
        hit
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Ident(s) if s.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let hit = self.at_keyword(keyword);
        if hit {
            self.advance();
        }
        hit
    }

    /// Whether the current token is an identifier followed by `(`.
    fn at_call(&self) -> bool {
        let next = self.tokens.get(self.pos + 1).map(|t| &t.kind);
        matches!(self.peek().kind, TokenKind::Ident(_)) && next == Some(&TokenKind::LParen)
    }

    /// An error "expected {expected}, found {current token}" at the current token.
    fn unexpected(&self, expected: &str) -> QueryError {
        let Token { kind, offset } = self.peek();
        QueryError::new(
            *offset,
            format!("expected {expected}, found {}", kind.describe()),
        )
    }

    fn expect(&mut self, kind: TokenKind) -> Result<()> {
        let ok = self.eat(&kind);
        ok.then_some(())
            .ok_or_else(|| self.unexpected(&kind.describe()))
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<()> {
        let ok = self.eat_keyword(keyword);
        ok.then_some(())
            .ok_or_else(|| self.unexpected(&keyword.to_ascii_uppercase()))
    }

    /// Runs `parse` after `keyword` if the current token is that keyword.
    fn optional<T>(
        &mut self,
        keyword: &str,
        parse: fn(&mut Self) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.eat_keyword(keyword) {
            parse(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Runs `parse` one nesting level deeper, failing beyond [`MAX_NESTING_DEPTH`].
    fn nested<T>(
        &mut self,
        offset: usize,
        parse: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        if self.depth == MAX_NESTING_DEPTH {
            let msg = format!("expression is nested too deeply (limit {MAX_NESTING_DEPTH})");
            return Err(QueryError::new(offset, msg));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    // ---- statement parts -----------------------------------------------------------------------

    fn top_count(&mut self) -> Result<usize> {
        match self.peek().kind {
            TokenKind::Num(n) if n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => {
                self.advance();
                Ok(n as usize)
            }
            _ => Err(self.unexpected("a non-negative integer after TOP")),
        }
    }

    fn select_list(&mut self) -> Result<Vec<(Item, Option<String>)>> {
        let mut items = Vec::new();
        loop {
            let item = if self.at_call() {
                self.aggregate()?
            } else {
                Item::Path(self.path()?)
            };
            items.push((item, self.optional("as", Self::alias)?));
            if !self.eat(&TokenKind::Comma) {
                return Ok(items);
            }
        }
    }

    fn alias(&mut self) -> Result<String> {
        let token = self.advance();
        match token.kind {
            TokenKind::Ident(name) if !is_reserved(&name) => Ok(name),
            kind => Err(QueryError::new(token.offset, expected("an alias", &kind))),
        }
    }

    /// Parses `NAME(...)` in the select list; the current token is the name.
    fn aggregate(&mut self) -> Result<Item> {
        let Token {
            kind: TokenKind::Ident(name),
            offset,
        } = self.advance()
        else {
            return Err(self.unexpected("an aggregate"));
        };
        self.advance(); // `(`
        let aggregate = match name.to_ascii_uppercase().as_str() {
            "COUNT" => Aggregate::Count,
            "SUM" => Aggregate::Sum(self.path()?),
            "AVG" => Aggregate::Avg(self.path()?),
            "MIN" => Aggregate::Min(self.path()?),
            "MAX" => Aggregate::Max(self.path()?),
            _ => {
                let name = excerpt(&name);
                let msg = match Function::by_name(&name) {
                    Some(_) => format!("function `{name}` is not allowed in the select list"),
                    None => format!("unknown function `{name}`"),
                };
                return Err(QueryError::new(offset, msg));
            }
        };
        self.expect(TokenKind::RParen)?;
        Ok(Item::Aggregate(aggregate))
    }

    fn collection(&mut self) -> Result<Collection> {
        let path = self.path()?;
        let name = path.to_string();
        match name.to_ascii_lowercase().as_str() {
            "devices" => Ok(Collection::Devices),
            "devices.modules" => Ok(Collection::Modules),
            "devices.jobs" => Ok(Collection::Jobs),
            _ => {
                let msg = format!("unknown collection `{}`", excerpt(&name));
                Err(QueryError::new(path.offset, msg))
            }
        }
    }

    /// Parses `ident ('.' ident)*`, exactly as written (no prefix stripping).
    fn path(&mut self) -> Result<Path> {
        let offset = self.peek().offset;
        let mut segments = match &self.peek().kind {
            TokenKind::Ident(name) if !is_reserved(name) => vec![name.clone()],
            _ => return Err(self.unexpected("a property path")),
        };
        self.advance();
        while self.eat(&TokenKind::Dot) {
            let token = self.advance();
            match token.kind {
                TokenKind::Ident(name) => segments.push(name),
                kind => {
                    let msg = expected("a property name after `.`", &kind);
                    return Err(QueryError::new(token.offset, msg));
                }
            }
        }
        Ok(Path { segments, offset })
    }

    // ---- expressions ---------------------------------------------------------------------------

    fn expr(&mut self) -> Result<Expr> {
        self.junction("or", Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Expr> {
        self.junction("and", Self::not, Expr::And)
    }

    /// Parses `operand (keyword operand)*` into one flat n-ary node.
    fn junction(
        &mut self,
        keyword: &str,
        operand: fn(&mut Self) -> Result<Expr>,
        node: fn(Vec<Expr>) -> Expr,
    ) -> Result<Expr> {
        let mut operands = vec![operand(self)?];
        while self.eat_keyword(keyword) {
            operands.push(operand(self)?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            node(operands)
        })
    }

    fn not(&mut self) -> Result<Expr> {
        let offset = self.peek().offset;
        if !self.eat_keyword("not") {
            return self.comparison();
        }
        self.nested(offset, |p| Ok(Expr::Not(Box::new(p.not()?))))
    }

    fn comparison(&mut self) -> Result<Expr> {
        let left = Box::new(self.additive()?);
        for (keyword, negated) in [("in", false), ("nin", true)] {
            if self.eat_keyword(keyword) {
                return Ok(Expr::In {
                    expr: left,
                    list: self.constants()?,
                    negated,
                });
            }
        }
        let op = match self.peek().kind {
            TokenKind::Eq => CmpOp::Eq,
            TokenKind::Ne => CmpOp::Ne,
            TokenKind::Lt => CmpOp::Lt,
            TokenKind::Le => CmpOp::Le,
            TokenKind::Gt => CmpOp::Gt,
            TokenKind::Ge => CmpOp::Ge,
            _ => return Ok(*left),
        };
        self.advance();
        Ok(Expr::Compare(op, left, Box::new(self.additive()?)))
    }

    /// Parses an array constant `[c, …]` (the right-hand side of `IN` / `NIN`).
    fn constants(&mut self) -> Result<Vec<Literal>> {
        self.expect(TokenKind::LBracket)?;
        self.list(TokenKind::RBracket, Self::constant)
    }

    /// Parses `[item (',' item)*] close`, the opening bracket already consumed.
    fn list<T>(&mut self, close: TokenKind, item: fn(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut items = Vec::new();
        if self.eat(&close) {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            if !self.eat(&TokenKind::Comma) {
                return self.expect(close).map(|()| items);
            }
        }
    }

    /// A string, an optionally negative number, or one of `true`, `false`, `null`, `undefined`.
    fn constant(&mut self) -> Result<Literal> {
        let negative = self.eat(&TokenKind::Minus);
        let literal = match &self.peek().kind {
            TokenKind::Num(n) => Some(Literal::Num(if negative { -n } else { *n })),
            TokenKind::Str(s) if !negative => Some(Literal::Str(s.clone())),
            TokenKind::Ident(word) if !negative => keyword_literal(word),
            _ => None,
        };
        let literal = literal.ok_or_else(|| self.unexpected("a constant"))?;
        self.advance();
        Ok(literal)
    }

    fn additive(&mut self) -> Result<Expr> {
        self.arithmetic(Self::multiplicative, |kind| match kind {
            TokenKind::Plus => Some(ArithOp::Add),
            TokenKind::Minus => Some(ArithOp::Sub),
            _ => None,
        })
    }

    fn multiplicative(&mut self) -> Result<Expr> {
        self.arithmetic(Self::unary, |kind| match kind {
            TokenKind::Star => Some(ArithOp::Mul),
            TokenKind::Slash => Some(ArithOp::Div),
            TokenKind::Percent => Some(ArithOp::Rem),
            _ => None,
        })
    }

    /// Parses `operand (op operand)*` of one precedence level into one flat node.
    fn arithmetic(
        &mut self,
        operand: fn(&mut Self) -> Result<Expr>,
        operator: fn(&TokenKind) -> Option<ArithOp>,
    ) -> Result<Expr> {
        let first = operand(self)?;
        let mut rest = Vec::new();
        while let Some(op) = operator(&self.peek().kind) {
            self.advance();
            rest.push((op, operand(self)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Arith {
                first: Box::new(first),
                rest,
            }
        })
    }

    fn unary(&mut self) -> Result<Expr> {
        let Token { kind, offset } = self.peek().clone();
        let literal = match kind {
            TokenKind::Minus => {
                self.advance();
                return self.nested(offset, |p| Ok(Expr::Neg(Box::new(p.unary()?))));
            }
            TokenKind::LParen => {
                self.advance();
                return self.nested(offset, |p| {
                    let inner = p.expr()?;
                    p.expect(TokenKind::RParen).map(|()| inner)
                });
            }
            TokenKind::Num(n) => Literal::Num(n),
            TokenKind::Str(s) => Literal::Str(s),
            TokenKind::Ident(word) => match keyword_literal(&word) {
                Some(literal) => literal,
                None if is_reserved(&word) => return Err(self.unexpected("an expression")),
                None if self.at_call() => return self.call(&word, offset),
                None => {
                    let path = self.path()?.relative_to(self.collection);
                    return Ok(Expr::Path(path));
                }
            },
            TokenKind::LBracket => {
                let msg = "array constants are only allowed after IN or NIN";
                return Err(QueryError::new(offset, msg));
            }
            _ => return Err(self.unexpected("an expression")),
        };
        self.advance();
        Ok(Expr::Literal(literal))
    }

    /// Parses a function call in a condition; the current token is the name.
    fn call(&mut self, name: &str, offset: usize) -> Result<Expr> {
        let name = excerpt(name);
        let Some(function) = Function::by_name(&name) else {
            let msg = if AGGREGATES.contains(&name.to_ascii_uppercase().as_str()) {
                format!("aggregate `{name}` is only allowed in the select list")
            } else {
                format!("unknown function `{name}`")
            };
            return Err(QueryError::new(offset, msg));
        };
        self.advance(); // name
        self.advance(); // `(`
        let args = self.nested(offset, |p| p.list(TokenKind::RParen, Self::expr))?;
        if args.len() != function.arity() {
            let (arity, found) = (function.arity(), args.len());
            let msg = format!("function `{name}` takes {arity} argument(s), found {found}");
            return Err(QueryError::new(offset, msg));
        }
        Ok(Expr::Call(function, args))
    }
}

fn expected(what: &str, found: &TokenKind) -> String {
    format!("expected {what}, found {}", found.describe())
}

fn is_reserved(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word)) || keyword_literal(word).is_some()
}

fn keyword_literal(word: &str) -> Option<Literal> {
    match word.to_ascii_lowercase().as_str() {
        "true" => Some(Literal::Bool(true)),
        "false" => Some(Literal::Bool(false)),
        "null" => Some(Literal::Null),
        "undefined" => Some(Literal::Undefined),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a table of `input => expected error` lines.
    fn check_errors(parse: fn(&str) -> Result<()>, table: &str) {
        for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (input, expected) = line.split_once(" => ").unwrap();
            let actual = parse(input)
                .map(|()| "Ok".to_owned())
                .unwrap_or_else(|e| e.to_string());
            assert_eq!(actual, expected, "input: {input}");
        }
    }

    fn statement(text: &str) -> Result<()> {
        parse_statement(text).map(drop)
    }

    fn condition(text: &str) -> Result<()> {
        parse_condition(text).map(drop)
    }

    #[test]
    fn select_star_with_top_and_where() {
        let stmt = parse_statement("select top 5 * FROM Devices.Modules where x = 1").unwrap();
        assert_eq!(stmt.top, Some(5));
        assert_eq!(stmt.collection, Collection::Modules);
        assert_eq!(stmt.shape, Shape::Documents);
        assert!(matches!(
            stmt.condition,
            Some(Expr::Compare(CmpOp::Eq, _, _))
        ));
    }

    #[test]
    fn projection_and_aggregates() {
        let stmt = parse_statement("SELECT a.b, c AS x FROM devices").unwrap();
        let Shape::Project(items) = stmt.shape else {
            panic!("not a projection")
        };
        let items: Vec<_> = items
            .iter()
            .map(|i| (i.path.to_string(), i.alias.clone()))
            .collect();
        assert_eq!(
            items,
            [("a.b".into(), None), ("c".into(), Some("x".into()))]
        );

        let text = "SELECT s AS st, COUNT(), max(t) AS m FROM devices GROUP BY S";
        let Shape::Aggregate { group_by, columns } = parse_statement(text).unwrap().shape else {
            panic!("not grouped")
        };
        assert_eq!(
            group_by.map(|g| (g.to_string(), g.offset)),
            Some(("S".into(), 59))
        );
        assert_eq!(
            columns[0],
            Column::GroupKey {
                alias: Some("st".into())
            }
        );
        let count = Column::Aggregate {
            name: "$2".into(),
            aggregate: Aggregate::Count,
        };
        assert_eq!(columns[1], count);
        assert!(
            matches!(&columns[2], Column::Aggregate { name, aggregate: Aggregate::Max(p) }
            if name == "m" && p.offset == 29)
        );
    }

    #[test]
    fn collection_prefixes_are_stripped() {
        let text = "SELECT devices.jobs.status, COUNT() FROM devices.jobs \
                    WHERE devices.jobs.jobId = 'j' OR createdTimeUtc > '2016' GROUP BY status";
        let stmt = parse_statement(text).unwrap();
        let Some(Expr::Or(operands)) = &stmt.condition else {
            panic!("no OR")
        };
        let paths: Vec<_> = operands
            .iter()
            .map(|op| match op {
                Expr::Compare(_, left, _) => match &**left {
                    Expr::Path(p) => p.to_string(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(paths, ["jobId", "createdDateTimeUtc"]);
        assert!(
            matches!(stmt.shape, Shape::Aggregate { .. }),
            "status is the GROUP BY path"
        );
        let relative = |text| match parse_condition(text).unwrap() {
            Expr::Path(p) => p.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(relative("devices.deviceId"), "deviceId");
        assert_eq!(
            relative("Devices"),
            "Devices",
            "a path equal to the prefix is kept"
        );
    }

    #[test]
    fn precedence_and_flat_chains() {
        let Expr::Or(operands) = parse_condition("a OR b AND NOT c OR d").unwrap() else {
            panic!("not OR")
        };
        assert_eq!(operands.len(), 3);
        assert!(matches!(&operands[1], Expr::And(v) if matches!(v[1], Expr::Not(_))));
        let Expr::Arith { rest, .. } = parse_condition("1 + 2 * 3 - 4").unwrap() else {
            panic!("not arithmetic")
        };
        assert_eq!(rest.len(), 2);
        assert!(matches!(rest[0], (ArithOp::Add, Expr::Arith { .. })));
    }

    #[test]
    fn constants_in_lists() {
        let Expr::In { list, negated, .. } =
            parse_condition("x NIN ['a', -1.5, TRUE, null, undefined]").unwrap()
        else {
            panic!("not NIN")
        };
        assert!(negated);
        assert_eq!(
            list,
            [
                Literal::Str("a".into()),
                Literal::Num(-1.5),
                Literal::Bool(true),
                Literal::Null,
                Literal::Undefined
            ]
        );
    }

    #[test]
    fn statement_errors() {
        assert_eq!(
            statement("").unwrap_err().to_string(),
            "expected SELECT, found end of input at offset 0"
        );
        check_errors(statement, "
            SELECT * FORM devices => expected FROM, found `FORM` at offset 9
            SELECT * FROM devices.foo => unknown collection `devices.foo` at offset 14
            SELECT * FROM => expected a property path, found end of input at offset 13
            SELECT TOP -1 * FROM devices => expected a non-negative integer after TOP, found `-` at offset 11
            SELECT TOP 1.5 * FROM devices => expected a non-negative integer after TOP, found number at offset 11
            SELECT FROM devices => expected a property path, found `FROM` at offset 7
            SELECT a, FROM devices => expected a property path, found `FROM` at offset 10
            SELECT a AS FROM devices => expected an alias, found `FROM` at offset 12
            SELECT a AS top FROM devices => expected an alias, found `top` at offset 12
            SELECT a.1 FROM devices => expected a property name after `.`, found number at offset 9
            SELECT a. FROM devices => expected FROM, found `devices` at offset 15
            SELECT * FROM devices WHERE => expected an expression, found end of input at offset 27
            SELECT * FROM devices ORDER BY x => expected end of input, found `ORDER` at offset 22
            SELECT * FROM devices GROUP x => expected BY, found `x` at offset 28
            SELECT FOO(x) FROM devices => unknown function `FOO` at offset 7
            SELECT COUNT(x) FROM devices => expected `)`, found `x` at offset 13
            SELECT SUM() FROM devices => expected a property path, found `)` at offset 11
            SELECT is_defined(x) FROM devices => function `is_defined` is not allowed in the select list at offset 7
            SELECT * FROM devices GROUP BY a => GROUP BY cannot be used with SELECT * at offset 31
            SELECT b, COUNT() FROM devices GROUP BY a => `b` is neither the GROUP BY path nor an aggregate at offset 7
            SELECT a, COUNT() FROM devices => `a` cannot be selected with aggregates unless it is the GROUP BY path at offset 7
            SELECT a FROM devices GROUP BY A => Ok
            SELECT devices.a FROM devices GROUP BY a => Ok
        ");
    }

    #[test]
    fn condition_errors() {
        assert_eq!(
            condition("").unwrap_err().to_string(),
            "expected an expression, found end of input at offset 0"
        );
        check_errors(condition, "
            foo(x) = 1 => unknown function `foo` at offset 0
            x = 1 AND COUNT() = 2 => aggregate `COUNT` is only allowed in the select list at offset 10
            IS_DEFINED(a, b) => function `IS_DEFINED` takes 1 argument(s), found 2 at offset 0
            STARTSWITH(a) => function `STARTSWITH` takes 2 argument(s), found 1 at offset 0
            x IN 'a' => expected `[`, found string literal at offset 5
            x IN [a] => expected a constant, found `a` at offset 6
            x IN [-'a'] => expected a constant, found string literal at offset 7
            x IN [1 2] => expected `]`, found number at offset 8
            x = ['a'] => array constants are only allowed after IN or NIN at offset 4
            (x = 1 => expected `)`, found end of input at offset 6
            x = 1 = 2 => expected end of input, found `=` at offset 6
            x = AND => expected an expression, found `AND` at offset 4
            a.b(1) => expected end of input, found `(` at offset 3
            1 + NOT(x) => expected an expression, found `NOT` at offset 4
            x = 'open => unterminated string literal at offset 4
        ");
    }

    #[test]
    fn limits() {
        let at_limit = format!("x = '{}'", "a".repeat(MAX_QUERY_CHARS - 6));
        assert!(parse_condition(&at_limit).is_ok());
        let over = format!("x = '{}'", "é".repeat(MAX_QUERY_CHARS));
        let offset = 5 + 2 * (MAX_QUERY_CHARS - 5); // 'é' is two bytes
        let expected = format!("query text is longer than 8192 characters at offset {offset}");
        assert_eq!(parse_condition(&over).unwrap_err().to_string(), expected);

        let parens = |n: usize| format!("{}x = 1{}", "(".repeat(n), ")".repeat(n));
        assert!(parse_condition(&parens(MAX_NESTING_DEPTH)).is_ok());
        let err = parse_condition(&parens(MAX_NESTING_DEPTH + 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expression is nested too deeply (limit 64) at offset 64"
        );
        let nots = |n: usize| format!("{}true", "NOT ".repeat(n));
        assert!(parse_condition(&nots(MAX_NESTING_DEPTH)).is_ok());
        assert!(parse_condition(&nots(MAX_NESTING_DEPTH + 1)).is_err());
        assert!(parse_condition(&format!("{}1 = 1", "-".repeat(MAX_NESTING_DEPTH + 1))).is_err());
        let calls = format!("{}x{}", "IS_DEFINED(".repeat(65), ")".repeat(65));
        assert!(parse_condition(&calls).is_err());
        // Long flat chains are not nesting.
        assert!(parse_condition(&vec!["x = 1"; 900].join(" OR ")).is_ok());
        assert!(parse_condition(&vec!["1"; 3000].join("+")).is_ok());
    }
}
