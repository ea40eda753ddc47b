//! A circuit breaker around the SMTP transport: an outage of the mail server is not a bad
//! message, so it must not use up the emails' attempts.
//!
//! - **Closed**: the sender claims and sends as usual; each connection-level failure
//!   (refused, reset, timeout, TLS) counts, a success resets the count.
//! - **Open** after `failures` consecutive connection failures: nothing is claimed until the
//!   open period passes. It starts at `open_for` and doubles each time a probe fails, up to
//!   `open_max`.
//! - **Half-open** when the period has passed: one email is sent as a probe. Success closes
//!   the circuit; a connection failure opens it again.
//!
//! Every transition is logged and counted (`orderflow_email_smtp_circuit_transitions_total`),
//! and `orderflow_email_smtp_circuit_state` is 0 closed, 1 half-open, 2 open.
//!
//! Owns only the state machine; it never touches the database or the transport.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    HalfOpen,
    Open,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }

    fn gauge_value(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }
}

/// How many emails the sender may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: a full round.
    All,
    /// Half-open: one probe.
    Probe,
    /// Open: none until the period passes.
    None,
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
    open_until: Instant,
    /// The current open period (doubles per failed probe).
    open_for: Duration,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    /// The SMTP server (`host:port`), the metrics' `smtp` label.
    server: String,
    failures: u32,
    open_for: Duration,
    open_max: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(server: impl Into<String>, failures: u32, open_for: Duration, open_max: Duration) -> Self {
        let server = server.into();
        gauge!("orderflow_email_smtp_circuit_state", "smtp" => server.clone()).set(State::Closed.gauge_value());
        CircuitBreaker {
            server,
            failures: failures.max(1),
            open_for,
            open_max: open_max.max(open_for),
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                open_until: Instant::now(),
                open_for,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    /// What the sender may do now; moves Open to Half-open once the period has passed.
    pub fn permit(&self) -> Permit {
        self.permit_at(Instant::now())
    }

    fn permit_at(&self, now: Instant) -> Permit {
        let mut inner = self.lock();
        // Every round, so the gauge is there even before the first transition (and whenever
        // the metrics recorder was installed).
        gauge!("orderflow_email_smtp_circuit_state", "smtp" => self.server.clone()).set(inner.state.gauge_value());
        match inner.state {
            State::Closed => Permit::All,
            State::HalfOpen => Permit::Probe,
            State::Open if now >= inner.open_until => {
                transition(&self.server, &mut inner, State::HalfOpen, "probing the SMTP server with one email");
                Permit::Probe
            }
            State::Open => Permit::None,
        }
    }

    /// The server took a message (or answered at all): the circuit closes.
    pub fn on_success(&self) {
        let mut inner = self.lock();
        inner.consecutive_failures = 0;
        if inner.state != State::Closed {
            inner.open_for = self.open_for;
            transition(&self.server, &mut inner, State::Closed, "the SMTP server is back; sending resumes");
        }
    }

    /// A connection-level failure (the server could not be reached or did not answer).
    pub fn on_connection_failure(&self, error: &str) {
        self.on_connection_failure_at(Instant::now(), error)
    }

    fn on_connection_failure_at(&self, now: Instant, error: &str) {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        match inner.state {
            State::Closed if inner.consecutive_failures >= self.failures => {
                inner.open_for = self.open_for;
                inner.open_until = now + inner.open_for;
                tracing::warn!(
                    error,
                    failures = inner.consecutive_failures,
                    open_ms = inner.open_for.as_millis() as u64,
                    "SMTP server unreachable; emails wait (no attempt is counted)"
                );
                transition(&self.server, &mut inner, State::Open, "SMTP circuit opened");
            }
            State::HalfOpen => {
                inner.open_for = (inner.open_for * 2).min(self.open_max);
                inner.open_until = now + inner.open_for;
                tracing::warn!(error, open_ms = inner.open_for.as_millis() as u64, "SMTP probe failed");
                transition(&self.server, &mut inner, State::Open, "SMTP circuit opened again");
            }
            _ => {}
        }
    }
}

fn transition(server: &str, inner: &mut Inner, to: State, message: &'static str) {
    let from = inner.state;
    inner.state = to;
    gauge!("orderflow_email_smtp_circuit_state", "smtp" => server.to_owned()).set(to.gauge_value());
    counter!("orderflow_email_smtp_circuit_transitions_total", "smtp" => server.to_owned(), "to" => to.name())
        .increment(1);
    tracing::info!(smtp = server, from = from.name(), to = to.name(), "{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_connection_failures_and_a_success_closes_it() {
        // On a clock of the test's own: a stall of the machine cannot end the open period.
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let breaker = CircuitBreaker::new("test:25", 3, Duration::from_millis(50), Duration::from_millis(200));
        breaker.on_connection_failure_at(ms(0), "refused");
        breaker.on_connection_failure_at(ms(1), "refused");
        assert_eq!(breaker.permit_at(ms(2)), Permit::All, "two failures are not an outage yet");
        breaker.on_success();
        breaker.on_connection_failure_at(ms(3), "refused");
        breaker.on_connection_failure_at(ms(4), "refused");
        assert_eq!(breaker.state(), State::Closed, "a success reset the count");
        breaker.on_connection_failure_at(ms(5), "refused");
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(breaker.permit_at(ms(5)), Permit::None);
        assert_eq!(breaker.permit_at(ms(54)), Permit::None, "open for the whole period");
    }

    #[test]
    fn after_the_open_period_one_probe_goes_out_and_its_outcome_decides() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let breaker = CircuitBreaker::new("test:25", 1, Duration::from_millis(20), Duration::from_millis(30));
        breaker.on_connection_failure_at(ms(0), "refused");
        assert_eq!(breaker.permit_at(ms(10)), Permit::None);
        assert_eq!(breaker.permit_at(ms(20)), Permit::Probe);
        breaker.on_connection_failure_at(ms(21), "refused");
        assert_eq!(breaker.state(), State::Open, "a failed probe opens it again");
        assert_eq!(breaker.lock().open_for, Duration::from_millis(30), "doubled, capped at the maximum");
        assert_eq!(breaker.permit_at(ms(50)), Permit::None);
        assert_eq!(breaker.permit_at(ms(51)), Permit::Probe);
        breaker.on_success();
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.permit_at(ms(52)), Permit::All);
    }
}
