//! Time and randomness come in through these ports, so tests can move time without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use sigil_types::Timestamp;

/// The source of "now" for the domain.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The source of randomness for ids and generated values.
pub trait Rng: Send + Sync + std::fmt::Debug {
    fn fill(&self, buf: &mut [u8]);

    fn bytes10(&self) -> [u8; 10] {
        let mut b = [0u8; 10];
        self.fill(&mut b);
        b
    }
}

/// A new prefixed, time-sortable id (`prefix` + ULID) from the given time and randomness.
pub fn new_id(prefix: &str, now: Timestamp, rng: &dyn Rng) -> String {
    format!(
        "{prefix}{}",
        sigil_types::encode_ulid(u64::try_from(now.unix_millis()).unwrap_or(0), rng.bytes10())
    )
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp::from_unix_micros(us)
    }
}

/// A clock that only moves when told to; for tests of expiry, rotation and replay windows.
#[derive(Debug)]
pub struct FakeClock(AtomicI64);

impl FakeClock {
    pub fn new(start: Timestamp) -> Self {
        Self(AtomicI64::new(start.unix_micros()))
    }

    pub fn advance(&self, d: std::time::Duration) {
        let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(us, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.unix_micros(), Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.0.load(Ordering::SeqCst))
    }
}

/// The operating system's CSPRNG (through aws-lc-rs).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRng;

impl Rng for SystemRng {
    fn fill(&self, buf: &mut [u8]) {
        if sigil_crypto::fill_random(buf).is_err() {
            // Without randomness no id, key or secret can be made safely; this is not caused by
            // input and cannot be recovered from, so stop rather than continue with weak values.
            tracing::error!("the system random generator failed; stopping");
            std::process::abort();
        }
    }
}
