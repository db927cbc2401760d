//! processor: TODO
