//! Viewer analytics: what players report (beacons), folded into views with Mux Data's
//! metric definitions ([`view`]).

pub mod view;
