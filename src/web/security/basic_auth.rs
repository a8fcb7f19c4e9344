//! Basic auth of the web config (`basic_auth_users`): the users and their bcrypt hashes, the
//! check of an `Authorization: Basic` header, and the cache of successful checks.
//!
//! A request passes when its `Authorization: Basic` credentials match a user's bcrypt hash.
//! Successful checks are cached (by a salted SHA-256 of user and password, never the
//! plaintext), so only the first request of a user pays for bcrypt; the cache is looked up
//! first, at once, so a cached user never waits behind the checks of others. An unknown user
//! is checked against another user's hash, so that it takes as long as a wrong password and
//! timing does not tell which users exist.
//!
//! bcrypt runs on one thread of its own ([`BCRYPT_RUNS`] checks at a time), never on the async
//! workers nor tokio's blocking pool: a flood of bad passwords takes one core and one thread.
//! A check that finds the bcrypt thread busy is not queued: it is [`Verdict::Busy`] at once
//! (the server answers 429), so failures never pile up in memory or threads.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use rustls::crypto::ring as ring_provider;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// How many successful (user, password) checks are remembered; the cache is emptied when full.
const AUTH_CACHE_LIMIT: usize = 4096;

/// How many bcrypt checks may be running or queued for the bcrypt thread at once; a check
/// beyond them is refused ([`Verdict::Busy`]). One: a flood of bad passwords takes one core.
const BCRYPT_RUNS: usize = 1;

/// What a request's credentials get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Right user and password, or no `basic_auth_users` at all.
    Passed,
    /// No credentials, or wrong ones: 401.
    Refused,
    /// Not in the cache, and the bcrypt check is busy with other requests: not checked, 429.
    Busy,
}

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
    /// The hash an unknown user is checked against: some user's.
    decoy: String,
    /// Random per process: cache keys are SHA-256(salt, user, password).
    salt: [u8; 32],
    /// Keys of (user, password) pairs that passed.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// The bcrypt thread.
    bcrypt: Bcrypt,
}

impl BasicAuth {
    /// The users' checker; starts the bcrypt thread, which ends when this is dropped.
    pub(super) fn new(users: BTreeMap<String, String>) -> std::io::Result<BasicAuth> {
        let mut salt = [0; 32];
        // ring's system random; should it ever fail, a fixed salt still hides the plaintext.
        let _ = ring_provider::default_provider()
            .secure_random
            .fill(&mut salt);
        // An empty decoy (no users, which the caller never passes) matches no password.
        let decoy = users.values().next().cloned().unwrap_or_default();
        Ok(BasicAuth {
            users,
            decoy,
            salt,
            cache: Mutex::new(HashSet::new()),
            bcrypt: Bcrypt::start()?,
        })
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

    /// Whether `key` passed before; takes the cache's lock for a lookup only.
    fn cached(&self, key: &[u8; 32]) -> bool {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// The cache first, without waiting; then a bcrypt check if the bcrypt thread is free.
    pub(super) async fn check(&self, user: &[u8], password: &[u8]) -> Verdict {
        let key = self.cache_key(user, password);
        if self.cached(&key) {
            return Verdict::Passed;
        }
        let known = std::str::from_utf8(user)
            .ok()
            .and_then(|u| self.users.get(u));
        // An unknown user costs one bcrypt check too, against some user's hash, and fails.
        let hash = known.unwrap_or(&self.decoy);
        let Some(matches) = self.bcrypt.verify(password, hash).await else {
            return Verdict::Busy;
        };
        if !(matches && known.is_some()) {
            return Verdict::Refused;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= AUTH_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key);
        Verdict::Passed
    }
}

#[cfg(test)]
impl BasicAuth {
    /// Takes every bcrypt permit, as checks in progress would, until the result is dropped.
    pub(super) fn occupy_bcrypt(&self) -> OwnedSemaphorePermit {
        self.bcrypt
            .permits
            .clone()
            .try_acquire_many_owned(BCRYPT_RUNS as u32)
            .expect("no check is running")
    }
}

/// A password to check against a hash, with the answer's way back.
struct Job {
    password: Vec<u8>,
    hash: String,
    /// Held until the check is done, even when the request that asked has gone.
    permit: OwnedSemaphorePermit,
    answer: oneshot::Sender<bool>,
}

/// The bcrypt thread, and the permits that bound the checks given to it.
struct Bcrypt {
    /// [`BCRYPT_RUNS`] permits: a check takes one before it is queued, so the queue never
    /// holds more than that.
    permits: Arc<Semaphore>,
    jobs: SyncSender<Job>,
}

impl Bcrypt {
    fn start() -> std::io::Result<Bcrypt> {
        let (jobs, queue) = std::sync::mpsc::sync_channel(BCRYPT_RUNS);
        std::thread::Builder::new()
            .name("bcrypt".into())
            .spawn(move || run_bcrypt(&queue))?;
        Ok(Bcrypt {
            permits: Arc::new(Semaphore::new(BCRYPT_RUNS)),
            jobs,
        })
    }

    /// Whether `password` matches `hash`; `None`, at once, when [`BCRYPT_RUNS`] checks are
    /// already running or queued.
    async fn verify(&self, password: &[u8], hash: &str) -> Option<bool> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let (answer, answered) = oneshot::channel();
        let job = Job {
            password: password.to_vec(),
            hash: hash.to_string(),
            permit,
            answer,
        };
        // Never full (each queued job holds one of as many permits as the queue has room),
        // and never disconnected while `self` lives (the thread ends when `jobs` is dropped).
        self.jobs.try_send(job).ok()?;
        // The thread always answers; should it be gone, the password is not taken as right.
        Some(answered.await.unwrap_or(false))
    }
}

/// The bcrypt thread's loop: one check at a time, until the sender is dropped.
fn run_bcrypt(queue: &Receiver<Job>) {
    for job in queue {
        let matches = bcrypt::verify(&job.password, &job.hash).unwrap_or(false);
        // Free the permit before answering: the client's next request finds bcrypt free.
        drop(job.permit);
        let _ = job.answer.send(matches);
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
    use std::time::{Duration, Instant};

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
    #[tokio::test]
    async fn beyond_the_bcrypt_bound_a_check_is_busy_at_once_while_cached_users_pass() {
        let setup = Setup::new();
        let config = setup.load(&users_file(4)).unwrap();
        let auth = config.basic_auth.as_ref().unwrap();
        let bob = basic("bob", "builder");
        assert_eq!(config.authorize(Some(&bob)).await, Verdict::Passed);
        let busy = auth.occupy_bcrypt();
        for (user, password, verdict) in [
            ("bob", "builder", Verdict::Passed),
            ("alice", "wonderland", Verdict::Busy),
            ("alice", "wrong", Verdict::Busy),
            ("mallory", "x", Verdict::Busy),
        ] {
            let start = Instant::now();
            let credentials = basic(user, password);
            let check = config.authorize(Some(&credentials));
            let got = tokio::time::timeout(Duration::from_secs(1), check).await;
            assert_eq!(got.ok(), Some(verdict), "{user}:{password}");
            assert!(
                start.elapsed() < Duration::from_millis(100),
                "{user}: at once"
            );
        }
        // No credentials need no bcrypt: refused as before.
        assert_eq!(config.authorize(None).await, Verdict::Refused);
        assert!(
            !auth.cached(&auth.cache_key(b"alice", b"wonderland")),
            "a busy check caches nothing"
        );
        drop(busy);
        assert_eq!(
            config.authorize(Some(&basic("alice", "wonderland"))).await,
            Verdict::Passed
        );
        assert_eq!(
            config.authorize(Some(&basic("alice", "wrong"))).await,
            Verdict::Refused
        );
    }

    #[tokio::test]
    async fn a_check_whose_request_is_gone_still_holds_the_bound_until_bcrypt_ends() {
        let setup = Setup::new();
        // Cost 8: one check takes far longer (tens of milliseconds) than the polls below.
        let hash = bcrypt::hash("slow", 8).unwrap();
        let config = setup
            .load(&format!("basic_auth_users:\n  slow: {hash}\n"))
            .unwrap();
        let slow = basic("slow", "wrong");
        let check = config.authorize(Some(&slow));
        // Polled once: the check is queued for the bcrypt thread; then the request is gone.
        let pending = tokio::time::timeout(Duration::from_millis(1), check).await;
        assert!(pending.is_err(), "a cost-8 check does not end in 1 ms");
        assert_eq!(config.authorize(Some(&slow)).await, Verdict::Busy);
    }

    #[test]
    fn the_cache_is_emptied_when_full() {
        let setup = Setup::new();
        let config = setup.load(&users_file(4)).unwrap();
        let auth = config.basic_auth.as_ref().unwrap();
        auth.cache
            .lock()
            .unwrap()
            .extend((0..AUTH_CACHE_LIMIT).map(|i| auth.cache_key(b"fake", &i.to_be_bytes())));
        assert!(config.authorized(Some(&basic("alice", "wonderland"))));
        let keys = auth.cache.lock().unwrap().clone();
        assert_eq!(keys.len(), 1, "full: emptied, then the new key");
        assert!(keys.contains(&auth.cache_key(b"alice", b"wonderland")));
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
