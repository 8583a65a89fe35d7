//! Flow primitives shared by every pipeline, each small and tested on its own: bounded
//! edges between actors, in-order acknowledgement tracking, a circuit breaker, an
//! adaptive concurrency limiter and the sinks' batch age timer. Must never: import a pipeline, a client or the config.

pub mod ack;
pub mod age;
pub mod circuit;
pub mod edge;
pub mod limiter;
