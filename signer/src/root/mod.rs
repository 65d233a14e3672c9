//! The HSM-backed root signer (PKCS#11), its guard and approval queue.
