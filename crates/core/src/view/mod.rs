//! Pages for people: the status page the services serve on `/` and `pgvigil report --html`
//! writes ([`page`]), with its charts drawn as inline SVG ([`chart`]). Pure functions of records
//! already loaded: no I/O, no script, no external asset.
//!
//! Must not import `infra`, `pipeline`, `operator` or any I/O crate.

pub mod chart;
mod html;
pub mod page;
pub mod sample;
pub mod series;
mod tables;
