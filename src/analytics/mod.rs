//! Viewer analytics: what players report (beacons, [`beacon`]), queued to an aggregator
//! that holds open views in memory and writes each as it ends ([`aggregator`]), with Mux
//! Data's metric definitions ([`view`]).

pub mod agent;
pub mod aggregator;
pub mod beacon;
pub mod cmcd;
pub mod cmcd_events;
pub mod metrics;
mod peaks;
pub mod rollup;
pub mod server;
mod store;
pub mod timeline;
pub mod view;

pub use aggregator::{
    Analytics, Arrival, CmcdArrival, Dimensions, KeyArrival, QueueFull, ServerArrival,
};
