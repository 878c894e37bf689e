//! How deeply AMQP 1.0 values nest, measured without decoding them.
//!
//! serde_amqp (fe2o3-amqp's codec) decodes a `Value` by recursion with no depth limit, so a
//! frame of nested lists (3 bytes a level as `list8`) overflows a tokio worker's stack, which
//! aborts the whole process. The frame guard measures every frame with [`Scanner`] before the
//! decoder sees it and refuses one nested deeper than its limit.
//!
//! The scanner walks the type encodings of AMQP 1.0 part 1 §1.6 with an explicit stack of the
//! open containers (so it never recurses itself), one byte at a time or skipping whole data
//! fields, and can be fed a stream in pieces of any size (a message split over transfer
//! frames). What it counts as a level: a list or map (`0xc0`, `0xc1`, `0xd0`, `0xd1`), an
//! array (`0xe0`, `0xf0`), a described value (`0x00` descriptor value), and the descriptor of
//! an array's described element constructor. Everything else is data it skips by its width.
//!
//! It is total: any bytes are measured in time linear in their length (an array of
//! fixed-width elements is skipped in one step, whatever its count), using memory bounded by
//! the limit. What it cannot parse (a format code AMQP does not define) ends the scan without
//! a verdict: the decoder, which never gets that far down either, reports it. So a frame is
//! only ever refused for nesting that is really there.

use std::fmt;

/// A value nested deeper than the scanner's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DepthError {
    /// The limit passed.
    pub(crate) limit: usize,
}

impl fmt::Display for DepthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AMQP values nested more than {} deep", self.limit)
    }
}

impl std::error::Error for DepthError {}

/// Measures `bytes`, a sequence of whole or partial AMQP values: `Err` if they nest deeper
/// than `limit` (a top-level list of lists is 2 deep).
pub(crate) fn nesting_depth(bytes: &[u8], limit: usize) -> Result<(), DepthError> {
    Scanner::new(limit).feed(bytes)
}

/// The length of the one AMQP value at the start of `bytes`, if it is all there and
/// parseable and nests at most `limit` deep.
pub(crate) fn value_len(bytes: &[u8], limit: usize) -> Option<usize> {
    let mut scanner = Scanner::new(limit);
    let len = scanner.run(bytes, true).ok()?;
    (scanner.values > 0).then_some(len)
}

/// A container open around the scanner's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// A list or map with this many values left, each with its own constructor.
    Values(u32),
    /// An array with this many elements left, each encoded with format code `code` (a
    /// variable-width, compound or array code; fixed-width elements are skipped at once).
    Elements { left: u32, code: u8 },
    /// An array whose element constructor is being read; `count` elements follow it.
    ArrayConstructor { count: u32 },
    /// The descriptor of a described element constructor (it precedes the element code).
    ConstructorDescriptor,
    /// A described value: `true` while its descriptor is being read.
    Described { descriptor: bool },
}

/// What the next bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A constructor: a format code, or `0x00` starting a described value.
    Constructor,
    /// Data to skip, this many bytes (never 0).
    Skip(u64),
    /// A big-endian size or count field of `width` bytes, `have` read so far into `value`;
    /// what it is is `then`.
    Field {
        width: u8,
        have: u8,
        value: u32,
        then: Then,
    },
    /// Bytes the scanner cannot parse: the rest is left to the decoder.
    Stopped,
}

/// What a size or count field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The size of a variable-width value: its data follows.
    VariableSize,
    /// The size of a list or map (`width` bytes); its count follows.
    CompoundSize,
    /// The count of a list or map; its values follow.
    CompoundCount,
    /// The size of an array; its count follows.
    ArraySize,
    /// The count of an array; its element constructor follows.
    ArrayCount,
}

/// How the data of a format code is laid out.
enum Layout {
    /// This many bytes.
    Fixed(u8),
    /// A size field of this width, then that many bytes.
    Variable(u8),
    /// A list or map: size and count fields of this width, then count values.
    Compound(u8),
    /// An array: size and count fields of this width, an element constructor, then count
    /// elements.
    Array(u8),
}

/// The layout of format code `code`, `None` for one AMQP 1.0 does not define.
fn layout(code: u8) -> Option<Layout> {
    Some(match code {
        0x40..=0x45 => Layout::Fixed(0),
        0x50..=0x56 => Layout::Fixed(1),
        0x60 | 0x61 => Layout::Fixed(2),
        0x70..=0x74 => Layout::Fixed(4),
        0x80..=0x84 => Layout::Fixed(8),
        0x94 | 0x98 => Layout::Fixed(16),
        0xa0 | 0xa1 | 0xa3 => Layout::Variable(1),
        0xb0 | 0xb1 | 0xb3 => Layout::Variable(4),
        0xc0 | 0xc1 => Layout::Compound(1),
        0xd0 | 0xd1 => Layout::Compound(4),
        0xe0 => Layout::Array(1),
        0xf0 => Layout::Array(4),
        _ => return None,
    })
}

/// A resumable measurement of a stream of AMQP values (see the module header).
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    limit: usize,
    /// The open containers, innermost last; never longer than `limit`.
    stack: Vec<Level>,
    need: Need,
    /// Top-level values completed so far.
    values: u64,
    /// Set once the limit is passed: every later feed is refused too.
    refused: bool,
}

impl Scanner {
    /// A scanner at the start of a value, refusing nesting deeper than `limit`.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            stack: Vec::new(),
            need: Need::Constructor,
            values: 0,
            refused: false,
        }
    }

    /// Whether the scanner is between top-level values (or has stopped): a stream that ends
    /// here ended on a value boundary.
    #[cfg(test)]
    pub(crate) fn at_boundary(&self) -> bool {
        self.stack.is_empty() && matches!(self.need, Need::Constructor | Need::Stopped)
    }

    /// Measures the next `bytes` of the stream. After an `Err` the scanner stays refused.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), DepthError> {
        self.run(bytes, false).map(|_| ())
    }

    /// Measures `bytes`, or only up to the end of the first top-level value if `one`;
    /// returns how many bytes it measured.
    fn run(&mut self, mut bytes: &[u8], one: bool) -> Result<usize, DepthError> {
        if self.refused {
            return Err(DepthError { limit: self.limit });
        }
        let total = bytes.len();
        while let Some((&b, rest)) = bytes.split_first() {
            if one && self.values > 0 {
                break;
            }
            match &mut self.need {
                Need::Stopped => break,
                Need::Skip(left) => {
                    let n = usize::try_from(*left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    bytes = &bytes[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.complete();
                    }
                }
                Need::Constructor => {
                    bytes = rest;
                    self.constructor(b)?;
                }
                Need::Field {
                    width,
                    have,
                    value,
                    then,
                } => {
                    bytes = rest;
                    *value = (*value << 8) | u32::from(b);
                    *have += 1;
                    if *have == *width {
                        let (value, then, width) = (*value, *then, *width);
                        self.field(value, then, width)?;
                    }
                }
            }
        }
        Ok(total - bytes.len())
    }

    /// Opens a container, refusing one past the limit.
    fn push(&mut self, level: Level) -> Result<(), DepthError> {
        if self.stack.len() >= self.limit {
            self.need = Need::Stopped;
            self.stack = Vec::new();
            self.refused = true;
            return Err(DepthError { limit: self.limit });
        }
        self.stack.push(level);
        Ok(())
    }

    /// A constructor byte `b`.
    fn constructor(&mut self, b: u8) -> Result<(), DepthError> {
        if let Some(Level::ArrayConstructor { count }) = self.stack.last().copied() {
            if b == 0x00 {
                self.need = Need::Constructor;
                return self.push(Level::ConstructorDescriptor);
            }
            self.stack.pop();
            return self.elements(count, b);
        }
        if b == 0x00 {
            self.need = Need::Constructor;
            return self.push(Level::Described { descriptor: true });
        }
        self.data(b);
        Ok(())
    }

    /// The `count` elements of an array, each encoded with `code`; the array is the level
    /// just popped, opened again here.
    fn elements(&mut self, count: u32, code: u8) -> Result<(), DepthError> {
        match layout(code) {
            None => self.need = Need::Stopped,
            Some(_) if count == 0 => self.complete(),
            Some(Layout::Fixed(0)) => self.complete(),
            Some(Layout::Fixed(width)) => {
                self.need = Need::Skip(u64::from(count) * u64::from(width));
            }
            Some(_) => {
                self.push(Level::Elements { left: count, code })?;
                self.data(code);
            }
        }
        Ok(())
    }

    /// The data of a value whose format code is `code` (read, or shared by an array).
    fn data(&mut self, code: u8) {
        let field = |width: u8, then: Then| Need::Field {
            width,
            have: 0,
            value: 0,
            then,
        };
        match layout(code) {
            None => self.need = Need::Stopped,
            Some(Layout::Fixed(0)) => self.complete(),
            Some(Layout::Fixed(width)) => self.need = Need::Skip(u64::from(width)),
            Some(Layout::Variable(width)) => self.need = field(width, Then::VariableSize),
            Some(Layout::Compound(width)) => self.need = field(width, Then::CompoundSize),
            Some(Layout::Array(width)) => self.need = field(width, Then::ArraySize),
        }
    }

    /// A size or count field read whole.
    fn field(&mut self, value: u32, then: Then, width: u8) -> Result<(), DepthError> {
        let next = |then| Need::Field {
            width,
            have: 0,
            value: 0,
            then,
        };
        match then {
            Then::VariableSize if value == 0 => self.complete(),
            Then::VariableSize => self.need = Need::Skip(u64::from(value)),
            Then::CompoundSize => self.need = next(Then::CompoundCount),
            Then::ArraySize => self.need = next(Then::ArrayCount),
            Then::CompoundCount => {
                self.push(Level::Values(value))?;
                if value == 0 {
                    self.stack.pop();
                    self.complete();
                } else {
                    self.need = Need::Constructor;
                }
            }
            Then::ArrayCount => {
                self.push(Level::ArrayConstructor { count: value })?;
                self.need = Need::Constructor;
            }
        }
        Ok(())
    }

    /// A value just ended: moves to what follows it, closing the containers it completes.
    fn complete(&mut self) {
        loop {
            match self.stack.last_mut() {
                None => {
                    self.values += 1;
                    self.need = Need::Constructor;
                    return;
                }
                Some(Level::Values(left)) => {
                    *left -= 1;
                    if *left > 0 {
                        self.need = Need::Constructor;
                        return;
                    }
                    self.stack.pop();
                }
                Some(Level::Elements { left, code }) => {
                    *left -= 1;
                    if *left > 0 {
                        let code = *code;
                        // A variable, compound or array code: never completes at once.
                        self.data(code);
                        return;
                    }
                    self.stack.pop();
                }
                Some(Level::Described { descriptor }) => {
                    if *descriptor {
                        *descriptor = false;
                        self.need = Need::Constructor;
                        return;
                    }
                    self.stack.pop();
                }
                Some(Level::ConstructorDescriptor) => {
                    // The element code of the array below follows.
                    self.stack.pop();
                    self.need = Need::Constructor;
                    return;
                }
                Some(Level::ArrayConstructor { .. }) => {
                    // Unreachable: a value inside an array constructor is a descriptor.
                    self.need = Need::Stopped;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::primitives::{Array, OrderedMap, Symbol, Value};
    use proptest::prelude::*;

    fn nested(depth: usize) -> Value {
        let mut v = Value::List(Vec::new());
        for _ in 1..depth {
            v = Value::List(vec![Value::Int(7), v]);
        }
        v
    }

    fn depth_of(bytes: &[u8]) -> usize {
        (0..=64)
            .find(|&limit| nesting_depth(bytes, limit).is_ok())
            .unwrap()
    }

    #[test]
    fn lists_built_by_fe2o3_measure_their_depth() {
        for depth in 1..40 {
            let bytes = serde_amqp::to_vec(&nested(depth)).unwrap();
            // The innermost list is empty: list0, no level; every other one is a level.
            assert_eq!(depth_of(&bytes), depth - 1, "depth {depth}: {bytes:02x?}");
        }
    }

    #[test]
    fn a_deep_list_is_refused_and_a_shallow_one_passes() {
        let bytes = serde_amqp::to_vec(&nested(33)).unwrap();
        assert_eq!(nesting_depth(&bytes, 32), Ok(()));
        let bytes = serde_amqp::to_vec(&nested(34)).unwrap();
        assert_eq!(nesting_depth(&bytes, 32), Err(DepthError { limit: 32 }));
    }

    #[test]
    fn every_kind_of_container_is_a_level() {
        // described(list8[map8{sym: array8 of list8 [int]}])
        let mut map = OrderedMap::new();
        map.insert(
            Value::Symbol(Symbol::from("k")),
            Value::Array(Array(vec![Value::List(vec![Value::Int(1)])])),
        );
        let value = Value::Described(Box::new(serde_amqp::described::Described {
            descriptor: serde_amqp::descriptor::Descriptor::Code(0x70),
            value: Value::List(vec![Value::Map(map), Value::Null]),
        }));
        let bytes = serde_amqp::to_vec(&value).unwrap();
        assert_eq!(depth_of(&bytes), 5, "{bytes:02x?}");
    }

    #[test]
    fn arrays_of_fixed_width_elements_are_skipped_at_once() {
        // array32 of 2^32-1 uints whose data is not there: measured at once, no verdict.
        let bytes = [0xf0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x70];
        assert_eq!(nesting_depth(&bytes, 1), Ok(()));
        // Then a value after a two-element array of ubytes.
        let mut scanner = Scanner::new(2);
        scanner.feed(&[0xe0, 4, 2, 0x50, 1, 2]).unwrap();
        assert!(scanner.at_boundary());
        assert_eq!(scanner.values, 1);
    }

    #[test]
    fn a_described_element_constructor_is_measured() {
        // array8 of 2 elements, constructor 0x00 (descriptor smallulong 1) then list8;
        // each element a list8 of one list0.
        let bytes = [0xe0, 12, 2, 0x00, 0x53, 0x01, 0xc0, 2, 1, 0x45, 2, 1, 0x45];
        assert_eq!(nesting_depth(&bytes, 2), Ok(()));
        let mut scanner = Scanner::new(8);
        scanner.feed(&bytes).unwrap();
        assert!(scanner.at_boundary(), "{scanner:?}");
        // A described element constructor whose descriptor nests deeply is refused.
        let mut deep = vec![0xe0, 0xff, 1, 0x00];
        deep.extend(std::iter::repeat_n([0xc0, 0xff, 1], 40).flatten());
        assert!(nesting_depth(&deep, 32).is_err());
    }

    #[test]
    fn undefined_codes_stop_the_scan_without_a_verdict() {
        assert_eq!(nesting_depth(&[0xc0, 5, 1, 0x99, 0xc0, 0xc0], 1), Ok(()));
        assert_eq!(value_len(&[0x99], 8), None);
    }

    #[test]
    fn value_len_finds_the_end_of_one_value() {
        assert_eq!(value_len(&[0x43, 0x43], 8), Some(1));
        assert_eq!(value_len(&[0xa1, 2, b'h', b'i', 0x40], 8), Some(4));
        assert_eq!(value_len(&[0xa1, 2, b'h'], 8), None);
        assert_eq!(value_len(&[0x00, 0x53, 0x10, 0xc0, 1, 0, 0x40], 8), Some(6));
    }

    #[test]
    fn a_stream_may_be_fed_in_any_pieces() {
        let bytes = serde_amqp::to_vec(&nested(40)).unwrap();
        for piece in [1, 2, 3, 5, 64] {
            let mut scanner = Scanner::new(32);
            let refused = bytes.chunks(piece).any(|c| scanner.feed(c).is_err());
            assert!(refused, "pieces of {piece}");
            let mut scanner = Scanner::new(64);
            bytes.chunks(piece).for_each(|c| scanner.feed(c).unwrap());
            assert!(scanner.at_boundary());
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u8>().prop_map(Value::Ubyte),
            any::<u32>().prop_map(Value::Uint),
            any::<i64>().prop_map(Value::Long),
            any::<u64>().prop_map(Value::Ulong),
            ".{0,40}".prop_map(Value::String),
            "[a-z]{0,300}".prop_map(|s| Value::Symbol(Symbol::from(s))),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| Value::Binary(b.into())),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(|pairs| {
                    let mut map = OrderedMap::new();
                    for (k, v) in pairs {
                        map.insert(k, v);
                    }
                    Value::Map(map)
                }),
                (0u64..300, inner).prop_map(|(code, value)| Value::Described(Box::new(
                    serde_amqp::described::Described {
                        descriptor: serde_amqp::descriptor::Descriptor::Code(code),
                        value,
                    }
                ))),
            ]
        })
    }

    /// The depth of `value` as the scanner counts it.
    fn expected(value: &Value) -> usize {
        match value {
            Value::List(items) if items.is_empty() => 0,
            Value::List(items) => 1 + items.iter().map(expected).max().unwrap_or(0),
            Value::Map(map) => {
                1 + map
                    .iter()
                    .map(|(k, v)| expected(k).max(expected(v)))
                    .max()
                    .unwrap_or(0)
            }
            Value::Array(items) => 1 + items.0.iter().map(expected).max().unwrap_or(0),
            Value::Described(d) => 1 + expected(&d.value),
            _ => 0,
        }
    }

    proptest! {
        #[test]
        fn the_scanner_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), limit in 0usize..40) {
            let _ = nesting_depth(&bytes, limit);
            let _ = value_len(&bytes, limit);
        }

        #[test]
        fn the_scanner_never_panics_on_container_codes(
            bytes in proptest::collection::vec(
                prop_oneof![Just(0x00u8), Just(0x45), Just(0xc0), Just(0xc1), Just(0xd0), Just(0xe0), Just(0xf0), Just(0x53), Just(0x40), Just(1), Just(0), Just(0xff)],
                0..512,
            ),
            limit in 0usize..40,
        ) {
            let _ = nesting_depth(&bytes, limit);
        }

        #[test]
        fn values_built_by_fe2o3_measure_their_depth(value in value(), pieces in 1usize..20) {
            let bytes = serde_amqp::to_vec(&value).unwrap();
            let depth = expected(&value);
            prop_assert_eq!(depth_of(&bytes), depth, "{:02x?}", bytes);
            let mut scanner = Scanner::new(depth);
            for piece in bytes.chunks(pieces) {
                prop_assert!(scanner.feed(piece).is_ok());
            }
            prop_assert!(scanner.at_boundary());
            prop_assert_eq!(scanner.values, 1);
            prop_assert_eq!(value_len(&bytes, depth), Some(bytes.len()));
        }
    }
}
