//! daemon: TODO
