//! writer: TODO
