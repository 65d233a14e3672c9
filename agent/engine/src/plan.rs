//! Planning lives in `treasury_policies::plan`, shared with the signer nodes that replay it.
pub use treasury_policies::plan::*;
