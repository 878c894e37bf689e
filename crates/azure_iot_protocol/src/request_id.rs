//! Request ids for twin, method and DPS request/response pairs.
//!
//! IoT Hub treats `$rid` as opaque and echoes it; the official SDKs use UUIDs (Python, Node,
//! C#) or a decimal counter (C). We use a per-connection decimal counter: short, URL-safe (so
//! it needs no encoding in a topic) and unique for the life of the client, which is what the
//! correlation needs. Parsers elsewhere in this crate accept any rid text.

/// Hands out `1`, `2`, `3`, ... as request ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdGenerator {
    next: u64,
}

impl Default for RequestIdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIdGenerator {
    /// A generator whose first id is `1`.
    pub fn new() -> Self {
        Self { next: 1 }
    }

    /// The next id. After `u64::MAX` ids it wraps to `0`, far beyond any connection's life.
    pub fn next_id(&mut self) -> String {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sequential_and_unique() {
        let mut ids = RequestIdGenerator::new();
        assert_eq!(ids.next_id(), "1");
        assert_eq!(ids.next_id(), "2");
        let mut late = RequestIdGenerator { next: u64::MAX };
        assert_eq!(late.next_id(), u64::MAX.to_string());
        assert_eq!(late.next_id(), "0");
    }
}
