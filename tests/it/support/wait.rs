//! Waiting for what a test expects, with a deadline: the one way the tests wait for a
//! condition (never a bare sleep).

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long to rest between two looks.
const EVERY: Duration = Duration::from_millis(10);

/// Looks with `check` until it answers `Some`, and returns that; fails the test, naming
/// `what`, when it has not after `limit`.
pub async fn until<T, F: Future<Output = Option<T>>>(
    what: impl Display,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(EVERY).await;
    }
}

/// [`until`] for code that is not async (the CLI's tests drive processes).
pub fn until_blocking<T>(
    what: impl Display,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(EVERY);
    }
}
