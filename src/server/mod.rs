//! server: TODO
