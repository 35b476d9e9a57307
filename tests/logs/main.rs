//! Log capture tests, in a binary of their own. tracing decides once per call site whether a
//! span is recorded and caches the answer; with the thread-local subscribers these tests
//! install, a call site first reached by another test at the same moment could be cached as
//! disabled, and a request's lines would then miss their span (and its request id). Alone in
//! their process, the captures see every span.

#[allow(unused)]
#[path = "../api/dump.rs"]
mod dump;
#[allow(unused)]
#[path = "../api/helpers.rs"]
mod helpers;
mod logs;
