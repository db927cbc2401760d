//! cli: TODO
