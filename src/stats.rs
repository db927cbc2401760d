//! stats: TODO
