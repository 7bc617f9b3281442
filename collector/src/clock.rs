//! The server clock, injectable so that time-dependent behaviour is tested exactly.

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

/// Where `timestamp_server` comes from.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> OffsetDateTime + Send + Sync>);

impl Clock {
    /// The system clock, truncated to microseconds (the precision the log promises).
    pub fn system() -> Clock {
        Clock(Arc::new(|| {
            let now = OffsetDateTime::now_utc();
            now.replace_nanosecond(now.nanosecond() / 1000 * 1000)
                .unwrap_or(now)
        }))
    }

    /// A clock that reads whatever the returned handle last set.
    pub fn manual(start: OffsetDateTime) -> (Clock, ManualClock) {
        let cell = Arc::new(Mutex::new(start));
        let reader = cell.clone();
        (
            Clock(Arc::new(move || *reader.lock().unwrap())),
            ManualClock(cell),
        )
    }

    pub fn now(&self) -> OffsetDateTime {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Sets the time a [`Clock::manual`] reads.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    pub fn set(&self, t: OffsetDateTime) {
        *self.0.lock().unwrap() = t;
    }
}
