//! When a record is created and when it becomes searchable: the lateness of late records, the
//! index delay, a record's local time, and the hash that picks, always the same way, which
//! records get a trait.

use chrono::{DateTime, FixedOffset, TimeZone, Utc};

/// Salts of [`unit_hash`]: authorizations and the follow-up records number their `seq`
/// separately.
pub(super) const SALT_AUTHORIZATIONS: u64 = 0x0a07_0c1e_0a11;
pub(super) const SALT_FOLLOW_UPS: u64 = 0x0f01_10e0_04b5;
/// Salt of the records hidden from queries on `created` (the `hide_from_created_rate` fault).
pub(crate) const SALT_HIDDEN: u64 = 0x0b1d_de00_c4e7;
/// Share of records indexed later than the index delay.
const SLOW_INDEX_SHARE: f64 = 0.05;

/// A number in [0, 1) fixed by `seq` and `salt` (splitmix64): chooses, always the same way,
/// which records get a trait without drawing from the data's random stream.
pub(crate) fn unit_hash(seq: u64, salt: u64) -> f64 {
    let mut z = seq ^ salt.rotate_left(17);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// When a record `created` at `created_ms` becomes searchable: after `delay_ms`, or for
/// 5 % of records uniformly between `delay_ms` and 5 times it.
pub(super) fn visible_at(created_ms: i64, seq: u64, salt: u64, delay_ms: i64) -> i64 {
    let delay = delay_ms.max(0);
    if delay == 0 {
        return created_ms;
    }
    let u = unit_hash(seq, salt);
    if u < SLOW_INDEX_SHARE {
        // Reuse the same hash for the extra delay: uniform over [delay, 5 × delay].
        let v = u / SLOW_INDEX_SHARE;
        created_ms + delay + (v * 4.0 * delay as f64) as i64
    } else {
        created_ms + delay
    }
}

/// The lateness of a late record, from a uniform `u` in [0, 1): log-uniform between a minute
/// (a tenth of `max_ms` if that is shorter) and `max_ms`, so 98 minutes is as ordinary as 9.
pub(super) fn late_lateness_ms(u: f64, max_ms: i64) -> i64 {
    let max = max_ms.max(1) as f64;
    let min = 60_000f64.min(max / 10.0).max(1.0);
    (min * (max / min).powf(u.clamp(0.0, 1.0))).round() as i64
}

/// The instant `ms` (unix milliseconds) in the time zone `offset`: a record's local time.
pub(super) fn local(ms: i64, offset: FixedOffset) -> DateTime<FixedOffset> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&offset)
}
