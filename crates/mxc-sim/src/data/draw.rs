//! Random draws shared by the generators, all from the dataset's seeded stream: uuids,
//! log-normal quantities and weighted picks.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A random (version 4) uuid, hyphenated.
pub(super) fn uuid(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// A log-normal draw: `exp(mu + sigma × z)` for a standard normal `z`.
pub(super) fn lognormal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (mu + sigma * z).exp()
}

/// One of `items`, each with a chance proportional to its `weight`.
pub(super) fn pick<'a, T>(
    rng: &mut ChaCha8Rng,
    items: &'a [T],
    weight: impl Fn(&T) -> f64,
) -> &'a T {
    let total: f64 = items.iter().map(&weight).sum();
    let mut x = rng.gen_range(0.0..total);
    for item in items {
        x -= weight(item);
        if x < 0.0 {
            return item;
        }
    }
    &items[items.len() - 1]
}
