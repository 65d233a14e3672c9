//! FROST signer quorum: nodes, coordinator, DKG and refresh (RFC 9591).
