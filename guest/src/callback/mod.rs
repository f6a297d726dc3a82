//! The guest's HTTP transport to the host's callback API (`proto::api`):
//! bootstrap discovery, the job spec, the event uplink, the artifacts upload
//! and the result.
//!
//! # Requests
//! Every request carries `Authorization: Bearer <token>` and
//! `x-delegate-protocol: 1`. The token lives only in a header value marked
//! sensitive; no `Debug` output of this module shows it. How answers map:
//!
//! | status            | meaning                          | retried |
//! |-------------------|----------------------------------|---------|
//! | 2xx               | done                             |         |
//! | 401, 403          | [`CallbackError::Unauthorized`]  | no      |
//! | 404               | [`CallbackError::NotFound`]      | no      |
//! | 409, 410          | [`CallbackError::JobFinal`]      | no      |
//! | 413               | [`CallbackError::TooLarge`]      | no (events: smaller batches) |
//! | 408, 429, 5xx, no connection, timeout | transient    | yes, exponential backoff with jitter, within the operation's budget |
//! | other 4xx         | [`CallbackError::Rejected`]      | no      |
//!
//! An error body of the form `proto::api::ApiError` gives the message; code
//! `unsupported_protocol` gives [`CallbackError::Protocol`].
//!
//! # Order of a job (callback mode)
//! [`find_bootstrap`] → [`CallbackClient::new`] → [`CallbackClient::fetch_spec`]
//! → [`CallbackClient::start_uplink`] → events via [`Uplink::send`] (watch
//! [`Uplink::cancelled`], set by the control long poll the uplink runs
//! beside itself, or by an event ack) → [`Uplink::flush`] → [`CallbackClient::upload_artifacts`]
//! → [`CallbackClient::post_result`]. The result comes last: once it is
//! stored the host stops accepting the job's token.
//!
//! # Events and dropped ranges
//! The caller numbers events 1, 2, 3, ...; the uplink keeps them in that
//! order, with one batch in flight at a time, and takes the host's
//! `EventsAck::highest_seq` as the truth: everything up to it is delivered,
//! everything after it is sent again. While the host is unreachable events
//! wait in memory (`memory_limit`), then in append-only files in the spool
//! directory (`spool_limit`). When even the spool is full, the oldest log
//! chunks, heartbeats and progress events are dropped, never phases and
//! never `Dropped` events.
//!
//! **Seq of a `Dropped` event.** A dropped run of events is replaced, in
//! place, by one `EventKind::Dropped { first_seq, last_seq, reason }` event
//! whose own `seq` is `last_seq`: it takes the slot of the last event it
//! stands for, so no new sequence number is needed and the caller's
//! numbering is never disturbed (no shared counter). Adjacent runs merge.
//! For the host: an event with seq `s` may be `Dropped { first_seq: f,
//! last_seq: s }`, meaning "events `f..=s` are lost; this one fills their
//! slots". A host that keeps only gap-free seqs should accept it when
//! `f <= highest + 1 < s + 1` and move `highest` to `s`.
//!
//! A host that takes only `highest + 1` and nothing else still works: when
//! an answer shows it took none of a batch, the uplink splits the ranged
//! event at the front into one `Dropped { s, s }` per seq (at most a batch at
//! a time), and fills seqs the caller never queued the same way (reason
//! "the runner never queued these events"), so the stream never stalls.

mod backoff;
mod bootstrap;
mod client;
mod control;
mod error;
mod http;
mod options;
pub mod pool_port;
mod repo;
mod turns;
mod uplink;

pub use backoff::RetryPolicy;
pub use bootstrap::{
    BootstrapPaths, BootstrapSource, find_bootstrap, find_bootstrap_in, wait_for_bootstrap,
};
pub use client::CallbackClient;
pub use error::CallbackError;
pub use options::CallbackOptions;
pub use turns::NextTurnJob;
pub use uplink::{FlushReport, Uplink, UplinkSender};
