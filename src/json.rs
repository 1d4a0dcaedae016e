//! JSON mapping
