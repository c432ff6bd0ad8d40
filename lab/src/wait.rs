//! Waiting for something to come true: one deadline loop for the whole lab,
//! whose timeout names what was awaited.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::{Instant, sleep};

/// How often a condition is looked at again.
const EVERY: Duration = Duration::from_millis(25);

/// Runs `check` until it returns `Some`, at most for `limit`. An error from
/// `check` ends the wait at once (the thing awaited can no longer happen: a
/// process exited, a query failed); `None` means "not yet".
///
/// `what` is what is awaited, said as in "waiting for {what}".
pub async fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check()
            .await
            .with_context(|| format!("while waiting for {what}"))?
        {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("gave up waiting for {what} after {limit:?}");
        }
        sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_that_comes() {
        let mut looks = 0;
        let value = wait_until("the third look", Duration::from_secs(5), async || {
            looks += 1;
            Ok((looks == 3).then_some(looks))
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_timeout_names_what_was_awaited() {
        let err = wait_until(
            "a thing that never comes",
            Duration::from_millis(60),
            async || Ok(None::<()>),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gave up waiting for a thing that never comes after 60ms"
        );
    }

    #[tokio::test]
    async fn an_error_ends_the_wait_at_once_and_says_what_it_interrupted() {
        let started = Instant::now();
        let err = wait_until(
            "a server",
            Duration::from_secs(30),
            async || -> Result<Option<()>> { bail!("the server exited") },
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            format!("{err:#}"),
            "while waiting for a server: the server exited"
        );
    }
}
