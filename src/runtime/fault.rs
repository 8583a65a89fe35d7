//! How a supervisor treats a child's failure. Every actor's error belongs to one class, and the
//! actor says which: its child spec carries a [`Classify`] function written next to the actor
//! (for the error types it returns), so the generic supervisor never names an actor's error type.
//!
//! - **Outage**: a server the actor needs is away (unreachable, not answering, shutting down).
//!   Waited out once the actor ran healthily: restarted with backoff, not counted against the
//!   restart intensity.
//! - **Transient**: anything else that a restart may cure: restarted with backoff and counted.
//! - **Permanent**: a restart cannot cure it (refused credentials): the child's supervisor
//!   stops at once with this error as its one message.
//!
//! Must never: call an error permanent that time can cure, or an outage what a server answered.

use std::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Outage,
    Transient,
    Permanent,
}

/// The class of an error an actor failed with (or failed to start with).
pub type Classify = fn(&(dyn Error + 'static)) -> ErrorClass;

/// A failure of a known class, for actors whose errors are strings (an outage of a server
/// they need, or a permanent error); [`classify`] reads its class.
#[derive(Debug)]
pub struct Classified {
    pub class: ErrorClass,
    pub message: String,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Classified {}

/// Wraps a message in the type that carries its class (a transient one stays a string).
pub fn classified(message: String, class: ErrorClass) -> Box<dyn Error + Send + Sync> {
    match class {
        ErrorClass::Transient => message.into(),
        class => Box::new(Classified { class, message }),
    }
}

/// The classes every actor shares: a [`Classified`] error has its class, anything else is
/// transient. An actor's own classifier handles its error types and falls back to this.
pub fn classify(err: &(dyn Error + 'static)) -> ErrorClass {
    err.downcast_ref::<Classified>()
        .map_or(ErrorClass::Transient, |c| c.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wrapped_outages_are_outages() {
        let e = classified("x".into(), ErrorClass::Outage);
        assert_eq!(classify(e.as_ref()), ErrorClass::Outage);
        // Strings are not outages unless wrapped.
        let s: Box<dyn Error + Send + Sync> = "connection refused".into();
        assert_eq!(classify(s.as_ref()), ErrorClass::Transient);
        for class in [
            ErrorClass::Outage,
            ErrorClass::Transient,
            ErrorClass::Permanent,
        ] {
            let e = classified("m".into(), class);
            assert_eq!((classify(e.as_ref()), e.to_string().as_str()), (class, "m"));
        }
    }
}
