//! Distributed key generation (RFC 9591 appendix C / Pedersen DKG as in `frost_core::keys::dkg`),
//! node side: one [`DkgSession`] per run, driven by the coordinator through the node's routes.
//!
//! What the node checks, beyond what frost checks:
//! - its own entry in the roster (identity key) and the roster's shape;
//! - round 1: every participant's package is signed by that participant's identity key over
//!   (session, *this node's* roster hash, sender, package) — a coordinator that shows different
//!   rosters or swaps a package or key is caught here;
//! - round 2: packages are sealed end to end for each recipient (ECDH of identity keys), the
//!   coordinator relays ciphertext only;
//! - commit: the new share is stored only when every participant signed a confirmation of the
//!   same transcript (roster + round-1 set) and the same group key.
//!
//! Refresh (`refresh = true`) runs `refresh_dkg_*`: same protocol, zero secret, the group key stays.
use std::collections::BTreeMap;

use frost_secp256k1::Identifier;
use frost_secp256k1::keys::dkg::{round1, round2};
use frost_secp256k1::keys::{KeyPackage, PublicKeyPackage};
use rand_core::OsRng;

use super::error::{Refusal, RefusalCode};
use super::identity::{IdentityKey, IdentityPublic, hash_parts, open, seal};
use super::wire::{
    DkgFinishRequest, DkgFinishResponse, DkgRound1Request, DkgRound2Request, DkgRound2Response, RosterEntry,
    SignedRound1,
};

fn fail(reason: impl Into<String>) -> Refusal {
    Refusal::new(RefusalCode::DkgFailure, reason)
}

/// Parses a hex identifier.
pub fn parse_identifier(s: &str) -> Result<Identifier, Refusal> {
    let b = hex::decode(s).map_err(|_| fail("identifier hex"))?;
    Identifier::deserialize(&b).map_err(|_| fail("identifier"))
}

/// Hex of an identifier.
pub fn identifier_hex(id: &Identifier) -> String {
    hex::encode(id.serialize())
}

/// The message a node signs for its round-1 package.
pub fn round1_message(
    session: &str,
    roster_hash: &[u8; 32],
    sender: &Identifier,
    package: &[u8],
) -> [u8; 32] {
    hash_parts(&[b"treasury-dkg-r1-v1", session.as_bytes(), roster_hash, &sender.serialize(), package])
}

/// The message every node signs to confirm a DKG result.
pub fn confirm_message(session: &str, transcript: &[u8; 32], group_key: &[u8], pkp: &[u8]) -> [u8; 32] {
    hash_parts(&[b"treasury-dkg-confirm-v1", session.as_bytes(), transcript, group_key, pkp])
}

/// Hash of a roster (identifiers and identity keys, in order) with the threshold and mode.
pub fn roster_hash(roster: &[RosterEntry], threshold: u16, refresh: bool) -> [u8; 32] {
    let mut parts: Vec<Vec<u8>> =
        vec![b"treasury-dkg-roster-v1".to_vec(), threshold.to_be_bytes().to_vec(), vec![refresh as u8]];
    for e in roster {
        parts.push(e.identifier.as_bytes().to_vec());
        parts.push(e.identity_key.as_bytes().to_vec());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    hash_parts(&refs)
}

/// A round-3 failure, naming the participant whose round-2 share does not match its round-1
/// commitment when FROST identifies one.
fn share_refusal(step: &str, e: frost_secp256k1::Error) -> Refusal {
    match e {
        frost_core::Error::InvalidSecretShare { culprit: Some(id) } => fail(format!(
            "round-2 share from {} does not match its round-1 commitment (equivocation or corruption)",
            identifier_hex(&id)
        )),
        e => fail(format!("{step}: {e}")),
    }
}

/// Gives the first recipient the package meant for the second (test fault injection).
fn equivocate_round2(outgoing: &mut BTreeMap<Identifier, round2::Package>) {
    let ids: Vec<Identifier> = outgoing.keys().copied().take(2).collect();
    if let [first, second] = ids[..] {
        let other = outgoing[&second].clone();
        outgoing.insert(first, other);
    }
}

fn seal_context(session: &str, from: &Identifier, to: &Identifier) -> [u8; 32] {
    hash_parts(&[b"treasury-dkg-r2-v1", session.as_bytes(), &from.serialize(), &to.serialize()])
}

enum Stage {
    Round1 {
        secret: round1::SecretPackage,
        package: Vec<u8>,
    },
    Round2 {
        secret: round2::SecretPackage,
        round1: BTreeMap<Identifier, round1::Package>,
        transcript: [u8; 32],
    },
    Finished {
        key_package: Box<KeyPackage>,
        public: Box<PublicKeyPackage>,
        confirm: [u8; 32],
    },
    Spent,
}

/// One DKG or refresh run on a node.
///
/// # Security
/// The round-1 and round-2 secret packages are held only in memory and consumed by value by the
/// next step (`frost` zeroizes them); a session runs each step once.
pub struct DkgSession {
    session: String,
    refresh: bool,
    me: Identifier,
    roster: Vec<(Identifier, IdentityPublic)>,
    roster_hash: [u8; 32],
    stage: Stage,
}

impl std::fmt::Debug for DkgSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkgSession").field("session", &self.session).field("refresh", &self.refresh).finish()
    }
}

impl DkgSession {
    /// Round 1: checks the roster and produces this node's signed package.
    ///
    /// `existing` is the node's current share: required for a refresh, forbidden for a new DKG.
    pub fn start(
        identity: &IdentityKey,
        req: &DkgRound1Request,
        existing: Option<&(KeyPackage, PublicKeyPackage)>,
    ) -> Result<(Self, SignedRound1), Refusal> {
        let n = req.roster.len();
        if n < 2 || req.threshold < 2 || usize::from(req.threshold) > n || n > usize::from(u16::MAX) {
            return Err(fail(format!("bad threshold {} for {n} participants", req.threshold)));
        }
        let mut roster = Vec::with_capacity(n);
        for e in &req.roster {
            let id = parse_identifier(&e.identifier)?;
            let key = IdentityPublic::from_hex(&e.identity_key).map_err(|_| fail("roster identity key"))?;
            if roster.iter().any(|(i, k)| *i == id || *k == key) {
                return Err(fail("duplicate identifier or identity key in roster"));
            }
            roster.push((id, key));
        }
        let mine = identity.public();
        let me = roster
            .iter()
            .find(|(_, k)| *k == mine)
            .map(|(i, _)| *i)
            .ok_or_else(|| fail("this node's identity key is not in the roster"))?;
        let (secret, package) = match (req.refresh, existing) {
            (false, Some(_)) => return Err(fail("this node already holds a key share; use refresh")),
            (false, None) => frost_secp256k1::keys::dkg::part1(me, n as u16, req.threshold, OsRng),
            (true, None) => return Err(fail("refresh needs an existing key share")),
            (true, Some((kp, pkp))) => {
                if *kp.identifier() != me {
                    return Err(fail("roster assigns this node a different identifier than its share"));
                }
                if *kp.min_signers() != req.threshold {
                    return Err(fail("refresh cannot change the threshold"));
                }
                let ids: Vec<_> = pkp.verifying_shares().keys().copied().collect();
                let mut roster_ids: Vec<_> = roster.iter().map(|(i, _)| *i).collect();
                roster_ids.sort();
                if ids != roster_ids {
                    return Err(fail("refresh roster must be exactly the current participants"));
                }
                frost_secp256k1::keys::refresh::refresh_dkg_part1(me, n as u16, req.threshold, OsRng)
            }
        }
        .map_err(|e| fail(format!("part1: {e}")))?;
        let package = package.serialize().map_err(|e| fail(e.to_string()))?;
        let rh = roster_hash(&req.roster, req.threshold, req.refresh);
        let signature = hex::encode(identity.sign(&round1_message(&req.session, &rh, &me, &package)));
        let out = SignedRound1 { package: hex::encode(&package), signature };
        let session = Self {
            session: req.session.clone(),
            refresh: req.refresh,
            me,
            roster,
            roster_hash: rh,
            stage: Stage::Round1 { secret, package },
        };
        Ok((session, out))
    }

    /// Round 2: verifies every signed round-1 package and seals this node's round-2 packages.
    ///
    /// `equivocate` (test fault injection only) sends the first peer the share meant for the second.
    pub fn round2(
        &mut self,
        identity: &IdentityKey,
        req: &DkgRound2Request,
        equivocate: bool,
    ) -> Result<DkgRound2Response, Refusal> {
        let Stage::Round1 { secret, package: own } = std::mem::replace(&mut self.stage, Stage::Spent) else {
            return Err(fail("round 2 out of order"));
        };
        if req.round1.len() != self.roster.len() {
            return Err(fail("round-1 set does not cover the roster"));
        }
        let mut received = BTreeMap::new();
        let mut transcript_parts: Vec<Vec<u8>> = vec![self.roster_hash.to_vec()];
        for (id, key) in &self.roster {
            let signed =
                req.round1.get(&identifier_hex(id)).ok_or_else(|| fail("missing a round-1 package"))?;
            let bytes = hex::decode(&signed.package).map_err(|_| fail("round-1 hex"))?;
            let sig = hex::decode(&signed.signature).map_err(|_| fail("round-1 signature hex"))?;
            if !key.verify(&round1_message(&self.session, &self.roster_hash, id, &bytes), &sig) {
                return Err(fail(format!(
                    "round-1 package of {} is not signed by its identity key over this roster",
                    identifier_hex(id)
                )));
            }
            if *id == self.me {
                if bytes != own {
                    return Err(fail("this node's own round-1 package was altered"));
                }
            } else {
                received.insert(*id, round1::Package::deserialize(&bytes).map_err(|e| fail(e.to_string()))?);
            }
            transcript_parts.push(id.serialize());
            transcript_parts.push(bytes);
        }
        let refs: Vec<&[u8]> = transcript_parts.iter().map(Vec::as_slice).collect();
        let transcript = hash_parts(&refs);
        let (secret2, outgoing) = if self.refresh {
            frost_secp256k1::keys::refresh::refresh_dkg_part2(secret, &received)
        } else {
            frost_secp256k1::keys::dkg::part2(secret, &received)
        }
        .map_err(|e| fail(format!("part2: {e}")))?;
        let mut outgoing = outgoing;
        if equivocate {
            equivocate_round2(&mut outgoing);
        }
        let mut sealed = BTreeMap::new();
        for (to, pkg) in outgoing {
            let key = self.key_of(&to)?;
            let ctx = seal_context(&self.session, &self.me, &to);
            let sym = identity.shared_key(&key, &ctx);
            let plain = zeroize::Zeroizing::new(pkg.serialize().map_err(|e| fail(e.to_string()))?);
            sealed.insert(identifier_hex(&to), hex::encode(seal(&sym, &ctx, &plain)));
        }
        self.stage = Stage::Round2 { secret: secret2, round1: received, transcript };
        Ok(DkgRound2Response { sealed })
    }

    /// Round 3: opens the sealed packages and computes the new share; nothing is stored yet.
    pub fn finish(
        &mut self,
        identity: &IdentityKey,
        req: &DkgFinishRequest,
        existing: Option<&(KeyPackage, PublicKeyPackage)>,
    ) -> Result<DkgFinishResponse, Refusal> {
        let Stage::Round2 { secret, round1, transcript } = std::mem::replace(&mut self.stage, Stage::Spent)
        else {
            return Err(fail("finish out of order"));
        };
        let mut packages = BTreeMap::new();
        for (from, _) in self.roster.iter().filter(|(i, _)| *i != self.me) {
            let sealed =
                req.sealed.get(&identifier_hex(from)).ok_or_else(|| fail("missing a round-2 package"))?;
            let sealed = hex::decode(sealed).map_err(|_| fail("round-2 hex"))?;
            let ctx = seal_context(&self.session, from, &self.me);
            let sym = identity.shared_key(&self.key_of(from)?, &ctx);
            let plain = open(&sym, &ctx, &sealed).ok_or_else(|| {
                fail(format!("round-2 package from {} does not open", identifier_hex(from)))
            })?;
            packages.insert(*from, round2::Package::deserialize(&plain).map_err(|e| fail(e.to_string()))?);
        }
        let (kp, pkp) = if self.refresh {
            let (old_kp, old_pkp) = existing.ok_or_else(|| fail("refresh needs an existing key share"))?;
            let res = frost_secp256k1::keys::refresh::refresh_dkg_shares(
                &secret,
                &round1,
                &packages,
                old_pkp.clone(),
                old_kp.clone(),
            )
            .map_err(|e| share_refusal("refresh", e))?;
            if res.1.verifying_key() != old_pkp.verifying_key() {
                return Err(fail("refresh changed the group key"));
            }
            res
        } else {
            frost_secp256k1::keys::dkg::part3(&secret, &round1, &packages)
                .map_err(|e| share_refusal("part3", e))?
        };
        let group_key = pkp.verifying_key().serialize().map_err(|e| fail(e.to_string()))?;
        let pkp_bytes = pkp.serialize().map_err(|e| fail(e.to_string()))?;
        let confirm = confirm_message(&self.session, &transcript, &group_key, &pkp_bytes);
        let confirmation = hex::encode(identity.sign(&confirm));
        self.stage = Stage::Finished { key_package: Box::new(kp), public: Box::new(pkp), confirm };
        Ok(DkgFinishResponse {
            group_key: hex::encode(&group_key),
            public_key_package: hex::encode(&pkp_bytes),
            transcript: hex::encode(transcript),
            confirmation,
        })
    }

    /// Commit: returns the new share once every participant confirmed the same result.
    pub fn commit(
        mut self,
        confirmations: &BTreeMap<String, String>,
    ) -> Result<(KeyPackage, PublicKeyPackage), Refusal> {
        let Stage::Finished { key_package, public, confirm } =
            std::mem::replace(&mut self.stage, Stage::Spent)
        else {
            return Err(fail("commit out of order"));
        };
        for (id, key) in &self.roster {
            let sig = confirmations
                .get(&identifier_hex(id))
                .and_then(|s| hex::decode(s).ok())
                .ok_or_else(|| fail(format!("no confirmation from {}", identifier_hex(id))))?;
            if !key.verify(&confirm, &sig) {
                return Err(fail(format!(
                    "{} did not confirm the same transcript and group key",
                    identifier_hex(id)
                )));
            }
        }
        Ok((*key_package, *public))
    }

    /// Whether this session refreshes existing shares.
    pub fn is_refresh(&self) -> bool {
        self.refresh
    }

    /// The roster as (identifier, identity key) in hex.
    pub fn roster_entries(&self) -> Vec<(String, String)> {
        self.roster.iter().map(|(i, k)| (identifier_hex(i), k.to_hex())).collect()
    }

    fn key_of(&self, id: &Identifier) -> Result<IdentityPublic, Refusal> {
        self.roster.iter().find(|(i, _)| i == id).map(|(_, k)| *k).ok_or_else(|| fail("unknown participant"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::wire::DkgRound1Request;

    fn roster(keys: &[IdentityKey]) -> Vec<RosterEntry> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| RosterEntry {
                identifier: identifier_hex(&Identifier::try_from((i + 1) as u16).unwrap()),
                identity_key: k.public().to_hex(),
            })
            .collect()
    }

    type Shares = Vec<(KeyPackage, PublicKeyPackage)>;

    fn run(keys: &[IdentityKey], t: u16, existing: Option<&Shares>, tamper: bool) -> Result<Shares, Refusal> {
        let req = DkgRound1Request {
            session: "s".into(),
            threshold: t,
            roster: roster(keys),
            refresh: existing.is_some(),
        };
        let mut sessions = Vec::new();
        let mut r1 = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            let (s, p) = DkgSession::start(k, &req, existing.map(|e| &e[i]))?;
            r1.insert(req.roster[i].identifier.clone(), p);
            sessions.push(s);
        }
        if tamper {
            let first = r1.keys().next().unwrap().clone();
            let second = r1.keys().nth(1).unwrap().clone();
            let p = r1[&second].package.clone();
            r1.get_mut(&first).unwrap().package = p;
        }
        let mut sealed: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (i, s) in sessions.iter_mut().enumerate() {
            let out =
                s.round2(&keys[i], &DkgRound2Request { session: "s".into(), round1: r1.clone() }, false)?;
            for (to, c) in out.sealed {
                sealed.entry(to).or_default().insert(req.roster[i].identifier.clone(), c);
            }
        }
        let mut confirmations = BTreeMap::new();
        for (i, s) in sessions.iter_mut().enumerate() {
            let id = &req.roster[i].identifier;
            let f = s.finish(
                &keys[i],
                &DkgFinishRequest { session: "s".into(), sealed: sealed[id].clone() },
                existing.map(|e| &e[i]),
            )?;
            confirmations.insert(id.clone(), f.confirmation);
        }
        sessions.into_iter().map(|s| s.commit(&confirmations)).collect()
    }

    #[test]
    fn dkg_then_refresh_keeps_group_key_and_changes_shares() {
        let keys: Vec<_> = (0..3).map(|_| IdentityKey::generate()).collect();
        let shares = run(&keys, 2, None, false).unwrap();
        let vk = *shares[0].1.verifying_key();
        assert!(shares.iter().all(|(_, p)| *p.verifying_key() == vk));
        let refreshed = run(&keys, 2, Some(&shares), false).unwrap();
        assert_eq!(*refreshed[0].1.verifying_key(), vk);
        assert_ne!(refreshed[0].0.signing_share(), shares[0].0.signing_share());
    }

    #[test]
    fn a_swapped_round1_package_is_caught() {
        let keys: Vec<_> = (0..3).map(|_| IdentityKey::generate()).collect();
        let err = run(&keys, 2, None, true).unwrap_err();
        assert_eq!(err.code, RefusalCode::DkgFailure);
        assert!(
            err.reason.contains("not signed by its identity key") || err.reason.contains("altered"),
            "{err}"
        );
    }
}
