//! Fixtures for cross-component tests.
