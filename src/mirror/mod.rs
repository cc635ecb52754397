//! `ferry mirror`: makes a destination prefix hold the same plain objects as a source,
//! sending only changed byte ranges where the destination supports it (see [`native`]).

pub mod native;
pub mod plan;
