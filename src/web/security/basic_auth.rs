//! Basic auth of the web config (`basic_auth_users`): the users and their bcrypt hashes, the
//! check of an `Authorization: Basic` header, and the cache of successful checks.
//!
//! A request passes when its `Authorization: Basic` credentials match a user's bcrypt hash.
//! Successful checks are cached (by a salted SHA-256 of user and password, never the
//! plaintext), so only the first request of a user pays for bcrypt. An unknown user is checked
//! against another user's hash, so that it takes as long as a wrong password and timing does
//! not tell which users exist. bcrypt runs one at a time, off the async worker threads.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use rustls::crypto::ring as ring_provider;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha256};

/// How many successful (user, password) checks are remembered; the cache is emptied when full.
const AUTH_CACHE_LIMIT: usize = 4096;

/// `basic_auth_users`: user name to bcrypt hash, each hash checked while parsing.
pub(super) struct Users(pub(super) BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsersVisitor;
        impl<'de> Visitor<'de> for UsersVisitor {
            type Value = Users;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of user names to bcrypt hashes")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Users, E> {
                Ok(Users(BTreeMap::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Users, A::Error> {
                let mut users = BTreeMap::new();
                while let Some(user) = map.next_key::<String>()? {
                    let hash: String = map.next_value()?;
                    if user.contains(':') {
                        return Err(de::Error::custom(format!(
                            "user name \"{user}\" contains ':', which basic auth cannot carry"
                        )));
                    }
                    check_bcrypt_hash(&hash)
                        .map_err(|why| de::Error::custom(format!("user \"{user}\": {why}")))?;
                    if users.insert(user.clone(), hash).is_some() {
                        return Err(de::Error::custom(format!(
                            "user \"{user}\" is listed twice"
                        )));
                    }
                }
                Ok(Users(users))
            }
        }
        deserializer.deserialize_map(UsersVisitor)
    }
}

/// Whether `hash` is a bcrypt hash Go's bcrypt accepts too (cost 4 to 31).
fn check_bcrypt_hash(hash: &str) -> Result<(), String> {
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|e| format!("not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\"`"))?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(format!(
            "bcrypt cost {cost} is outside the allowed range 4 to 31"
        ));
    }
    Ok(())
}

/// The users, and the cache of successful checks.
pub(super) struct BasicAuth {
    /// User name to bcrypt hash; never empty.
    users: BTreeMap<String, String>,
    /// Random per process: cache keys are SHA-256(salt, user, password).
    salt: [u8; 32],
    /// Keys of (user, password) pairs that passed.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// bcrypt runs one at a time, so a flood of bad passwords takes one core, not all.
    bcrypt: Mutex<()>,
}

impl BasicAuth {
    pub(super) fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let mut salt = [0; 32];
        // ring's system random; should it ever fail, a fixed salt still hides the plaintext.
        let _ = ring_provider::default_provider()
            .secure_random
            .fill(&mut salt);
        BasicAuth {
            users,
            salt,
            cache: Mutex::new(HashSet::new()),
            bcrypt: Mutex::new(()),
        }
    }

    /// The names of the users, for `Debug`.
    pub(super) fn user_names(&self) -> Vec<&str> {
        self.users.keys().map(String::as_str).collect()
    }

    /// SHA-256 of the salt, the user's length, the user and the password: the user's length
    /// keeps ("alice", "wonderland") and ("alicew", "onderland") apart.
    fn cache_key(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.salt)
            .chain_update((user.len() as u64).to_be_bytes())
            .chain_update(user)
            .chain_update(password)
            .finalize()
            .into()
    }

    pub(super) fn check(&self, user: &[u8], password: &[u8]) -> bool {
        let key = self.cache_key(user, password);
        if self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let known = std::str::from_utf8(user)
            .ok()
            .and_then(|u| self.users.get(u));
        // An unknown user costs one bcrypt check too, against some user's hash, and fails.
        let hash = known.unwrap_or_else(|| self.users.values().next().expect("users not empty"));
        let matches = run_blocking(|| {
            let _one_at_a_time = self.bcrypt.lock().unwrap_or_else(|e| e.into_inner());
            bcrypt::verify(password, hash).unwrap_or(false)
        });
        let passed = matches && known.is_some();
        if passed {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= AUTH_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key);
        }
        passed
    }
}

/// Runs `f`, which blocks; on a multi-threaded tokio runtime the worker's other tasks move to
/// another thread meanwhile.
fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// User and password of an `Authorization: Basic` header value; `None` when it is not one.
pub(super) fn basic_credentials(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = value.trim_ascii();
    let split = value.iter().position(|b| *b == b' ')?;
    let (scheme, encoded) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = decode_base64(encoded.trim_ascii())?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Standard base64 (RFC 4648, `+` and `/`), padding optional: with `=`, the padding must be
/// complete, and unused trailing bits must be zero (as every encoder writes them).
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let engine = if text.ends_with(b"=") {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    engine.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hyper::header::HeaderValue;

    use super::*;
    use crate::web::security::testing::Setup;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let raw = format!("{user}:{password}");
        HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(raw.as_bytes()))).unwrap()
    }

    fn users_file(cost: u32) -> String {
        let alice = bcrypt::hash("wonderland", cost).unwrap();
        let bob = bcrypt::hash_with_result("builder", cost)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        format!("basic_auth_users:\n  alice: {alice}\n  bob: '{bob}'\n")
    }

    #[test]
    fn basic_auth_checks_users_and_passwords() {
        let setup = Setup::new();
        let config = setup.load(&users_file(4)).unwrap();
        assert!(config.tls().is_none());
        assert!(config.requires_auth());
        assert!(config.authorized(Some(&basic("alice", "wonderland"))));
        assert!(
            config.authorized(Some(&basic("bob", "builder"))),
            "$2y$ hashes work"
        );
        assert!(
            config.authorized(Some(&basic("bob", "builder"))),
            "and again, cached"
        );
        assert!(!config.authorized(Some(&basic("alice", "builder"))));
        assert!(!config.authorized(Some(&basic("alice", ""))));
        assert!(!config.authorized(Some(&basic("carol", "wonderland"))));
        assert!(!config.authorized(Some(&basic("", ""))));
        assert!(!config.authorized(None));
        let raw = STANDARD.encode(b"alice:wonderland");
        assert!(config.authorized(Some(
            &HeaderValue::from_str(&format!("basic  {raw}")).unwrap()
        )));
        for bad in [
            format!("Bearer {raw}"),
            "Basic".to_string(),
            "Basic !!!!".to_string(),
            format!("Basic {}", STANDARD.encode(b"alicewonderland")),
            format!("Basic {}", &raw[..raw.len() - 1]),
        ] {
            assert!(
                !config.authorized(Some(&HeaderValue::from_str(&bad).unwrap())),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_password_may_contain_colons_and_non_ascii() {
        let setup = Setup::new();
        let hash = bcrypt::hash("a:b:ç", 4).unwrap();
        let config = setup
            .load(&format!("basic_auth_users:\n  zoë: {hash}\n"))
            .unwrap();
        assert!(config.authorized(Some(&basic("zoë", "a:b:ç"))));
        assert!(!config.authorized(Some(&basic("zoë", "a:b"))));
    }

    #[test]
    fn only_successful_checks_are_cached_and_never_in_plaintext() {
        let setup = Setup::new();
        let config = setup.load(&users_file(4)).unwrap();
        let auth = config.basic_auth.as_ref().unwrap();
        let cached = || auth.cache.lock().unwrap().clone();
        assert!(!config.authorized(Some(&basic("alice", "wrong"))));
        assert!(!config.authorized(Some(&basic("carol", "wonderland"))));
        assert!(cached().is_empty(), "failures are not cached");
        assert!(config.authorized(Some(&basic("alice", "wonderland"))));
        let keys = cached();
        assert_eq!(keys.len(), 1);
        let key = keys.iter().next().unwrap();
        assert_eq!(*key, auth.cache_key(b"alice", b"wonderland"));
        assert_ne!(
            auth.cache_key(b"alice", b"wonderland"),
            auth.cache_key(b"alicew", b"onderland")
        );
        // A cached pair passes without bcrypt: even with alice's hash swapped for garbage.
        let mut config = config;
        let auth = config.basic_auth.as_mut().unwrap();
        auth.users.insert("alice".into(), "garbage".into());
        assert!(config.authorized(Some(&basic("alice", "wonderland"))));
        assert!(!config.authorized(Some(&basic("alice", "wrong"))));
    }

    #[test]
    fn unknown_users_cost_a_bcrypt_check_too() {
        let setup = Setup::new();
        let config = setup.load(&users_file(8)).unwrap();
        let time = |user: &str| {
            (0..3)
                .map(|_| {
                    let start = Instant::now();
                    assert!(!config.authorized(Some(&basic(user, "wrong"))));
                    start.elapsed()
                })
                .min()
                .unwrap()
        };
        let known = time("alice");
        let unknown = time("mallory");
        assert!(
            unknown * 2 > known,
            "an unknown user ({unknown:?}) is much faster than a wrong password ({known:?})"
        );
    }
    #[test]
    fn base64_decoding() {
        assert_eq!(decode_base64(b"YWxpY2U6cHc=").unwrap(), b"alice:pw");
        assert_eq!(decode_base64(b"YWxpY2U6cHc").unwrap(), b"alice:pw");
        assert_eq!(decode_base64(b"YQ==").unwrap(), b"a");
        assert_eq!(decode_base64(b"").unwrap(), b"");
        assert_eq!(decode_base64(b"YQ=").map(|_| ()), None);
        assert_eq!(decode_base64(b"Y").map(|_| ()), None);
        assert_eq!(decode_base64(b"YW=x").map(|_| ()), None);
        for data in [&b""[..], b"a", b"ab", b"abc", b"\xff\x00:\xfe"] {
            assert_eq!(
                decode_base64(STANDARD.encode(data).as_bytes()).unwrap(),
                data
            );
        }
    }

    #[test]
    fn base64_without_padding_and_with_bad_padding_or_trailing_bits() {
        for data in [&b"a"[..], b"ab", b"abc", b"\xff\x00:\xfe"] {
            let unpadded = STANDARD_NO_PAD.encode(data);
            assert_eq!(decode_base64(unpadded.as_bytes()).unwrap(), data);
        }
        // "YR==" would be "a" with its unused bits set: no encoder writes that.
        for bad in [
            &b"YR=="[..],
            b"YWJ",
            b"YQ==YQ==",
            b"=",
            b"====",
            b"YQ\n==",
            b"Y Q==",
        ] {
            assert_eq!(decode_base64(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
