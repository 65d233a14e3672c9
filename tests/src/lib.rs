//! End-to-end harness: anvil on a free port, the deployed fixture, teardown on drop.
