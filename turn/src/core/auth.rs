//! The long-term credential mechanism (RFC 8489 §9.2) with TURN REST usernames: challenge
//! (401 + REALM + NONCE), stateless nonce check (438), REST expiry and key check over every
//! configured secret (401), and same-user check for an existing allocation (441).

use stun::attributes::{
    ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME,
};
use stun::message::Message;

use super::message::{add_text, error, integrity_ok, seal, text};
use super::{Core, FiveTuple, Now};
use crate::credentials::{candidate_keys, check_username};
use crate::nonce::NonceCheck;
use crate::stats::Stats;

/// A request that passed authentication.
#[derive(Debug, Clone)]
pub(crate) struct Authed {
    pub key: [u8; 16],
    pub username: String,
    pub user: String,
}

impl<R: Clone> Core<R> {
    /// Authenticates `m`, or returns the (unauthenticated) error response to send.
    pub(super) fn authenticate(
        &mut self,
        tuple: &FiveTuple,
        m: &mut Message,
        now: Now,
    ) -> Result<Authed, Vec<u8>> {
        let fp = m.contains(ATTR_FINGERPRINT);
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Err(self.challenge(m, 401, tuple, now, fp));
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            text(m, ATTR_USERNAME),
            text(m, ATTR_REALM),
            text(m, ATTR_NONCE),
        ) else {
            return Err(seal(error(m, 400), None, fp));
        };
        if self.nonce.check(&nonce, tuple.client, now.unix()) != NonceCheck::Valid {
            return Err(self.challenge(m, 438, tuple, now, fp));
        }
        if realm != self.cfg.realm {
            return Err(self.fail(m, tuple, now, fp));
        }
        if let Some(a) = self.allocations.get(tuple) {
            if a.username != username {
                Stats::add(&self.stats.auth_failures, 1);
                return Err(seal(error(m, 441), None, fp));
            }
            let (key, user) = (a.key, a.user.clone());
            if integrity_ok(m, &key) {
                return Ok(Authed {
                    key,
                    username,
                    user,
                });
            }
            return Err(self.fail(m, tuple, now, fp));
        }
        let user = match check_username(&username, now.unix()) {
            Ok((_, user)) => user.to_owned(),
            Err(_) => return Err(self.fail(m, tuple, now, fp)),
        };
        let keys: Vec<[u8; 16]> =
            candidate_keys(&self.cfg.secrets, &username, &self.cfg.realm).collect();
        for key in keys {
            if integrity_ok(m, &key) {
                return Ok(Authed {
                    key,
                    username,
                    user,
                });
            }
        }
        Err(self.fail(m, tuple, now, fp))
    }

    /// 401 for credentials that do not verify (counted).
    fn fail(&self, m: &Message, tuple: &FiveTuple, now: Now, fp: bool) -> Vec<u8> {
        Stats::add(&self.stats.auth_failures, 1);
        self.challenge(m, 401, tuple, now, fp)
    }

    /// An error with REALM and a fresh NONCE so the client can (re)try.
    fn challenge(&self, m: &Message, code: u16, tuple: &FiveTuple, now: Now, fp: bool) -> Vec<u8> {
        let mut r = error(m, code);
        add_text(&mut r, ATTR_REALM, &self.cfg.realm);
        add_text(
            &mut r,
            ATTR_NONCE,
            &self.nonce.issue(tuple.client, now.unix()),
        );
        seal(r, None, fp)
    }
}
