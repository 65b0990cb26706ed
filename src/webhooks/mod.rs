//! Webhooks: call and room events POSTed to the operator's URLs, at least once, from a
//! persistent outbox in the database.
//!
//! The store writes an event into the outbox (`store::webhooks`) in the same transaction as the
//! state change that causes it, one row per configured URL, so an event is never lost to a
//! restart or to a receiver that is down. A background [`worker`] claims the oldest undelivered
//! row of each call or room (events of one call or room go out in order), POSTs it signed with
//! [`sign`], and records the attempt; failures are retried on the [`retry`] schedule. Nothing on
//! the signaling path waits for a POST.
//!
//! [`event`] builds the bodies; it, [`retry`] and [`sign`] are pure (time passed in).

pub mod event;
pub mod retry;
pub mod sign;
pub mod worker;

pub use retry::RetryPolicy;
