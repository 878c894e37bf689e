//! KDFa, TPM 2.0's key derivation from an HMAC (Part 1 §11.4.10.2, SP 800-108 counter mode).

use ring::hmac;

/// `KDFa(hash, key, label, context_u, context_v, bits)` for whole bytes: the concatenation of
/// `HMAC(key, [i]₃₂ || label || 0x00 || context_u || context_v || [bits]₃₂)` for i = 1, 2, …,
/// cut to `len` bytes. `label` is given without its terminating zero.
pub(super) fn kdfa(
    hash: hmac::Algorithm,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    len: usize,
) -> Vec<u8> {
    let key = hmac::Key::new(hash, key);
    let bits = u32::try_from(len.saturating_mul(8)).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(len);
    let mut counter: u32 = 0;
    while out.len() < len {
        counter = counter.wrapping_add(1);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label);
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
    }
    out.truncate(len);
    out
}
