//! Unit tests: one or more per rule and per result code.
