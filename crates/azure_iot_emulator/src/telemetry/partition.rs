//! Which partition a device's messages go to.
//!
//! IoT Hub partitions device-to-cloud messages by a hash of the device id; its hash is not
//! documented, so the emulator uses its own, fixed one: 32-bit FNV-1a over the id's UTF-8
//! bytes, modulo the partition count. It is the same on every platform, build and run (unlike
//! std's randomly seeded `RandomState`), so a device stays in its partition across restarts.

/// The partition count of a new log unless configured: a new hub's built-in endpoint has 4.
pub(crate) const DEFAULT_PARTITIONS: u32 = 4;

/// The most partitions a log may have (IoT Hub allows up to 128 device-to-cloud partitions).
pub(crate) const MAX_PARTITIONS: u32 = 128;

/// 32-bit FNV-1a of `bytes`.
pub(crate) fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The partition (0-based) of `device_id` in a log of `count` partitions (`count` ≥ 1).
pub(crate) fn partition_of(device_id: &str, count: u32) -> u32 {
    fnv1a_32(device_id.as_bytes()) % count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_published_fnv1a() {
        // Reference values of 32-bit FNV-1a.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        // Pinned: changing these would move devices between partitions of existing logs.
        assert_eq!(partition_of("a", 4), 0xe40c_292c % 4);
        assert_eq!(partition_of("foobar", 4), 0xbf9c_f968 % 4);
        let mut used = [0u32; 4];
        for i in 0..400 {
            let p = partition_of(&format!("device-{i}"), 4);
            assert!(p < 4);
            used[p as usize] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "spread: {used:?}");
        assert_eq!(partition_of("anything", 1), 0);
    }
}
