//! rdht-testkit: helpers shared by the workspace's tests and benchmarks, so that none
//! exists twice. Dev-only: no production crate depends on it.
//!
//! - [`data`]: deterministic incompressible bytes; [`text`]: deterministic compressible
//!   bytes (source-like lines); [`pattern`]: the `i % 251` bytes the spec vectors use.
//! - [`cpu_time`]: this process's CPU time, so a benchmark on a busy machine can be told
//!   apart from a slow one.
//! - [`unhex`]: the bytes of an annotated hex vector (`specs/vectors/`).
//!
//! Owns: nothing any production code relies on. Does not own: multi-node harnesses
//! (`rdht-testnet`) or project fixtures (`rdht_testnet::write_small_project`).
//!
//! ```
//! let a = rdht_testkit::data(7, 100);
//! assert_eq!(a, rdht_testkit::data(7, 100));
//! assert_ne!(a, rdht_testkit::data(8, 100));
//! assert_eq!(rdht_testkit::pattern(3), vec![0, 1, 2]);
//! assert_eq!(rdht_testkit::unhex("01 # version\nab cd # id\n"), [1, 0xab, 0xcd]);
//! ```

use std::time::Duration;

/// Deterministic pseudo-random (incompressible) bytes: `len` bytes of xorshift64* from
/// `seed`.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic compressible bytes: numbered source-like lines with pseudo-random
/// numbers from `seed`.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let noise = data(seed, len / 8 + 1);
    let mut out = Vec::with_capacity(len + 64);
    let mut n = 0usize;
    while out.len() < len {
        let line = format!(
            "pub fn item_{n}() -> u64 {{ {} }}\n",
            noise[n % noise.len()]
        );
        out.extend_from_slice(line.as_bytes());
        n += 1;
    }
    out.truncate(len);
    out
}

/// `len` bytes `i % 251`: the contents the block and DAG vectors of `specs/vectors/`
/// are made of.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`
/// (Linux; `None` elsewhere).
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux target Rust supports.
    Some(Duration::from_millis(ticks * 10))
}

/// Annotated hex, as `specs/vectors/` writes byte layouts: everything after `#` on each
/// line and all whitespace are dropped, the rest is hex digits.
///
/// # Panics
/// On an odd number of digits or a character that is not a hex digit: a broken vector.
pub fn unhex(annotated: &str) -> Vec<u8> {
    let digits: String = annotated
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .unwrap_or_else(|e| panic!("{:?} is not hex: {e}", &digits[i..i + 2]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_compresses_and_data_does_not_repeat() {
        let t = text(1, 4096);
        assert_eq!(t.len(), 4096);
        assert!(t.starts_with(b"pub fn item_0() -> u64 { "));
        let d = data(1, 4096);
        assert_eq!(d.len(), 4096);
        assert_ne!(d[..2048], d[2048..]);
        assert!(cpu_time().is_some());
    }
}
