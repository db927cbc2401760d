//! timefmt: TODO
