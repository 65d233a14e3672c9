//! Sending transactions from the keeper account: nonces, EIP-1559 fees, replacement, confirmation, reorgs.
