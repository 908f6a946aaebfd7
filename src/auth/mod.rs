//! Client authentication: verifying a JWT presented at connect time and compiling its
//! `isthmus` claim into the [`Permissions`] a connection carries (docs/auth.md).
//!
//! Owns: the claim format (`/work/shared/DECISIONS.md` 1.5), key selection by `kid`, the
//! per-key algorithm allow-list, time checks with an injected clock, client-id binding and
//! placeholder substitution. Does not own: reading tokens off the wire, reason codes on the
//! wire, expiry timers or counters (the shards), and SIGHUP handling (it calls
//! [`Authenticator::reload`]).
//!
//! [`Authenticator::authenticate`] runs once per CONNECT; only the resulting [`Grant`]'s
//! [`Permissions`] are consulted per message, and they never allocate.

pub mod cli;
mod keys;
mod permissions;

pub use permissions::{Permissions, SubscribeCheck};

use crate::config::{AuthConfig, JwtConfig, JwtKeyConfig, PublishDenied};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use keys::KeySet;
use permissions::{Placeholders, RuleSource};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

/// Verifies tokens against the configured keys. Built once at startup and shared by every
/// shard in an `Arc`; `Send + Sync`.
pub struct Authenticator {
    /// The `[auth.jwt]` settings read at startup; its `keys` are superseded by `keys.configs`.
    jwt: Option<JwtConfig>,
    /// Swapped whole by [`Authenticator::reload`]; `authenticate` clones the `Arc` and lets go
    /// of the lock before it verifies anything.
    keys: RwLock<LoadedKeys>,
}

/// The key list, where its relative paths resolve, and the keys read from it.
struct LoadedKeys {
    configs: Vec<JwtKeyConfig>,
    base_dir: PathBuf,
    set: Option<Arc<KeySet>>,
}

/// Which protocol a client speaks; decides what `%c` stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 or 5.0: `%c` is the CONNECT client id, which a `client_id` claim binds.
    Mqtt,
    /// NATS: `%c` is the token's exact `client_id` claim; without one `%c` rules never match.
    Nats,
}

/// What a client presented at connect time.
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    /// The client's protocol.
    pub protocol: Protocol,
    /// The JWT: MQTT password; NATS `auth_token` or `pass`.
    pub token: Option<&'a [u8]>,
    /// The MQTT CONNECT client id; `None` for NATS.
    pub client_id: Option<&'a [u8]>,
    /// MQTT username / NATS `user`; `None` or empty: `%u` is the token's `sub`.
    pub username: Option<&'a [u8]>,
}

/// Why a client was refused. Small and `Copy`, so counters can be indexed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// A token is required and none was given.
    Missing,
    /// The token is longer than `auth.jwt.max_token_bytes`.
    TooLarge,
    /// Not a JWT, or a claim has the wrong shape (including a missing `exp` or `sub`).
    Malformed,
    /// The header's `kid` names no configured key (or names none while several are).
    UnknownKey,
    /// The header's `alg` is not in the selected key's `algorithms` (or is `none`).
    AlgorithmNotAllowed,
    /// The signature does not verify with the selected key.
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// `auth.jwt.audience` is set and `aud` does not contain it.
    WrongAudience,
    /// An issuer is configured and `iss` is not it.
    WrongIssuer,
    /// The MQTT client id does not match the `client_id` claim.
    ClientIdMismatch,
    /// The token allows neither publishing nor subscribing.
    NoPermissions,
}

impl AuthError {
    /// Every error, for tables and counters.
    pub const ALL: [AuthError; 13] = [
        AuthError::Missing,
        AuthError::TooLarge,
        AuthError::Malformed,
        AuthError::UnknownKey,
        AuthError::AlgorithmNotAllowed,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::IssuedInFuture,
        AuthError::WrongAudience,
        AuthError::WrongIssuer,
        AuthError::ClientIdMismatch,
        AuthError::NoPermissions,
    ];

    /// MQTT 5.0 CONNACK reason code: 0x86 Bad User Name or Password, 0x87 Not authorized,
    /// 0x85 Client Identifier not valid.
    pub fn mqtt_v5_code(self) -> u8 {
        match self {
            AuthError::NoPermissions => 0x87,
            AuthError::ClientIdMismatch => 0x85,
            _ => 0x86,
        }
    }

    /// MQTT 3.1.1 CONNACK return code: 0x04 bad user name or password, 0x05 not authorized,
    /// 0x02 identifier rejected.
    pub fn mqtt_v3_code(self) -> u8 {
        match self {
            AuthError::NoPermissions => 0x05,
            AuthError::ClientIdMismatch => 0x02,
            _ => 0x04,
        }
    }

    /// The NATS `-ERR` text (nats-server wording): the same for every reason, so a client
    /// learns nothing about which check failed.
    pub fn nats_error(self) -> &'static str {
        "Authorization Violation"
    }

    /// Short text for logs and metric labels.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::TooLarge => "too_large",
            AuthError::Malformed => "malformed",
            AuthError::UnknownKey => "unknown_key",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::ClientIdMismatch => "client_id_mismatch",
            AuthError::NoPermissions => "no_permissions",
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for AuthError {}

/// What an admitted client may do. Plain owned data, `Send`: it travels between shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's `sub` (empty for an anonymous client).
    pub identity: String,
    /// `exp`, in unix seconds; `None` for an anonymous client.
    pub expires_at: Option<u64>,
    /// The compiled publish/subscribe rules.
    pub permissions: Permissions,
    /// Highest QoS the client may publish or be granted on a subscription.
    pub max_qos: Option<u8>,
    /// May publish retained messages (true when the claim is absent).
    pub retain: bool,
    /// Largest payload the client may publish, in bytes.
    pub max_payload: Option<u32>,
}

impl Grant {
    /// Everything allowed: no `[auth.jwt]`, or an open listener.
    pub fn anonymous() -> Grant {
        Grant {
            identity: String::new(),
            expires_at: None,
            permissions: Permissions::allow_all(),
            max_qos: None,
            retain: true,
            max_payload: None,
        }
    }
}

/// The claims Isthmus reads from a token (DECISIONS 1.5). Also what `isthmus token issue`
/// signs, so the two cannot drift apart.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Claims {
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: one string or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Issued at, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expires at, unix seconds (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The broker permissions; absent = no access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isthmus: Option<IsthmusClaim>,
}

/// `aud`: a string or a list of strings (RFC 7519 4.1.3).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(one) => one == wanted,
            Audience::Many(many) => many.iter().any(|a| a == wanted),
        }
    }
}

/// The `isthmus` claim. Unknown keys are refused (a misspelt `deny` must not pass silently).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IsthmusClaim {
    /// MQTT client-id binding: exact, or a prefix with one trailing `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Publish rules (NATS subjects).
    #[serde(default, rename = "pub", skip_serializing_if = "Option::is_none")]
    pub publish: Option<RuleLists>,
    /// Subscribe rules (NATS filters).
    #[serde(default, rename = "sub", skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<RuleLists>,
    /// QoS cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_qos: Option<u8>,
    /// May publish retained messages; absent = true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<bool>,
    /// Payload cap in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<u32>,
}

/// `allow` / `deny` lists of one direction.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleLists {
    /// Subjects allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Subjects denied, even where an allow rule matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Authenticator {
    /// Loads the keys named by `config`; relative paths resolve against `base_dir`. The error
    /// names the file and what is wrong with it.
    pub fn from_config(config: &AuthConfig, base_dir: &Path) -> Result<Authenticator, String> {
        let (configs, set) = match &config.jwt {
            Some(jwt) => (jwt.keys.clone(), Some(Arc::new(KeySet::load(&jwt.keys, base_dir)?))),
            None => (Vec::new(), None),
        };
        let keys = LoadedKeys { configs, base_dir: base_dir.to_path_buf(), set };
        Ok(Authenticator { jwt: config.jwt.clone(), keys: RwLock::new(keys) })
    }

    /// Re-reads every key file of the current key list (SIGHUP). On an error the keys in use
    /// stay.
    pub fn reload(&self) -> Result<(), String> {
        if self.jwt.is_none() {
            return Ok(());
        }
        let (configs, base_dir) = {
            let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            (keys.configs.clone(), keys.base_dir.clone())
        };
        let set = KeySet::load(&configs, &base_dir)?;
        self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()).set =
            Some(Arc::new(set));
        Ok(())
    }

    /// Replaces the key list with `config`'s `[[auth.jwt.keys]]` and loads it: SIGHUP after
    /// re-reading the config file, so a new kid can be added without a restart. The other
    /// `[auth]` settings stay as they were at startup. On an error nothing changes.
    pub fn reload_keys_from(&self, config: &AuthConfig, base_dir: &Path) -> Result<(), String> {
        let jwt = match (&self.jwt, &config.jwt) {
            (None, None) => return Ok(()),
            (Some(_), Some(jwt)) => jwt,
            _ => return Err("turning [auth.jwt] on or off needs a restart".into()),
        };
        let set = KeySet::load(&jwt.keys, base_dir)?;
        let mut keys = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *keys = LoadedKeys {
            configs: jwt.keys.clone(),
            base_dir: base_dir.to_path_buf(),
            set: Some(Arc::new(set)),
        };
        Ok(())
    }

    /// True if `[auth.jwt]` is configured.
    pub fn jwt_enabled(&self) -> bool {
        self.jwt.is_some()
    }

    /// True if a client must present a token to connect.
    pub fn required(&self) -> bool {
        self.jwt.as_ref().is_some_and(|jwt| jwt.required)
    }

    /// True if a denied MQTT QoS 0 / 3.1.1 publish closes the connection (else it is dropped).
    pub fn on_publish_denied_disconnect(&self) -> bool {
        self.jwt.as_ref().is_some_and(|jwt| jwt.on_publish_denied == PublishDenied::Disconnect)
    }

    /// Checks `credentials` at unix time `now_unix` and returns what the client may do.
    ///
    /// Without `[auth.jwt]` every client gets [`Grant::anonymous`]. With it, a client without
    /// a token is refused ([`AuthError::Missing`]) when tokens are required, and otherwise
    /// admitted with no permissions. A presented token is always checked, required or not.
    pub fn authenticate(
        &self,
        credentials: &Credentials<'_>,
        now_unix: u64,
    ) -> Result<Grant, AuthError> {
        let Some(jwt) = &self.jwt else { return Ok(Grant::anonymous()) };
        let token = credentials.token.filter(|token| !token.is_empty());
        let Some(token) = token else {
            if jwt.required {
                return Err(AuthError::Missing);
            }
            return Ok(Grant { permissions: Permissions::none(), ..Grant::anonymous() });
        };
        if token.len() > jwt.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .set
            .clone()
            .expect("keys are loaded whenever [auth.jwt] is configured");
        let claims = verify(token, jwt, &keys, now_unix)?;
        grant(claims, credentials)
    }
}

/// Shows the settings and the kids, never key material.
impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).set.clone();
        let kids: Vec<Option<String>> =
            keys.iter().flat_map(|set| set.keys.iter().map(|key| key.kid.clone())).collect();
        f.debug_struct("Authenticator")
            .field("jwt_enabled", &self.jwt_enabled())
            .field("required", &self.required())
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

/// Header fields read before any key is chosen.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Decodes the header of `token` without verifying anything: for key selection and
/// `isthmus token inspect`.
pub(crate) fn decode_header(token: &[u8]) -> Result<serde_json::Value, AuthError> {
    let mut parts = token.split(|b| *b == b'.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let json = URL_SAFE_NO_PAD.decode(header).map_err(|_| AuthError::Malformed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if !value.is_object() {
        return Err(AuthError::Malformed);
    }
    Ok(value)
}

/// Signature, `alg`, `aud`, `iss` and time checks; the claims on success.
fn verify(
    token: &[u8],
    jwt: &JwtConfig,
    keys: &KeySet,
    now_unix: u64,
) -> Result<Claims, AuthError> {
    let header: RawHeader =
        serde_json::from_value(decode_header(token)?).map_err(|_| AuthError::Malformed)?;
    // `none` (in any case) and names the crate does not know are refused before a key is
    // even chosen.
    let algorithm = Algorithm::from_str(&header.alg).map_err(|_| AuthError::AlgorithmNotAllowed)?;
    let key = keys.select(header.kid.as_deref()).ok_or(AuthError::UnknownKey)?;
    if !key.algorithms.contains(&algorithm) {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    let issuer = key.issuer.as_ref().or(jwt.issuer.as_ref());
    let validation = validation(algorithm, jwt.audience.as_deref(), issuer.map(String::as_str));
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
        .map_err(|e| map_error(e.kind()))?;
    let claims = data.claims;
    // The crate checks these only against its own clock; ours is injected (tests, `verify`).
    let leeway = jwt.leeway_s;
    let exp = claims.exp.ok_or(AuthError::Malformed)?;
    if exp.saturating_add(leeway) < now_unix {
        return Err(AuthError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now_unix.saturating_add(leeway)) {
        return Err(AuthError::NotYetValid);
    }
    if claims.iat.is_some_and(|iat| iat > now_unix.saturating_add(leeway)) {
        return Err(AuthError::IssuedInFuture);
    }
    // Belt and braces over the crate's checks, which pass a token that omits the claim.
    if let Some(audience) = &jwt.audience {
        if !claims.aud.as_ref().is_some_and(|aud| aud.contains(audience)) {
            return Err(AuthError::WrongAudience);
        }
    }
    if let Some(issuer) = issuer {
        if claims.iss.as_ref() != Some(issuer) {
            return Err(AuthError::WrongIssuer);
        }
    }
    Ok(claims)
}

/// Every field set explicitly: the crate's defaults (60 s leeway, nbf unchecked, `aud`
/// refused unless configured) are not ours (DECISIONS 1.4).
fn validation(algorithm: Algorithm, audience: Option<&str>, issuer: Option<&str>) -> Validation {
    let mut required = HashSet::from(["exp".to_string(), "sub".to_string()]);
    if audience.is_some() {
        required.insert("aud".to_string());
    }
    if issuer.is_some() {
        required.insert("iss".to_string());
    }
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.required_spec_claims = required;
    validation.leeway = 0;
    validation.reject_tokens_expiring_in_less_than = 0;
    // Time claims are checked by `verify` against the caller's clock, not the crate's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = audience.is_some();
    validation.aud = audience.map(|a| HashSet::from([a.to_string()]));
    validation.iss = issuer.map(|i| HashSet::from([i.to_string()]));
    validation.sub = None;
    validation
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => AuthError::AlgorithmNotAllowed,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        _ => AuthError::Malformed,
    }
}

/// Client-id binding, placeholder substitution and the [`Grant`].
fn grant(claims: Claims, credentials: &Credentials<'_>) -> Result<Grant, AuthError> {
    let identity = claims.sub.ok_or(AuthError::Malformed)?;
    let Some(isthmus) = claims.isthmus else { return Err(AuthError::NoPermissions) };
    if isthmus.max_qos.is_some_and(|qos| qos > 2) {
        return Err(AuthError::Malformed);
    }
    let binding = isthmus.client_id.as_deref();
    let client_id = match credentials.protocol {
        Protocol::Mqtt => {
            let presented = credentials.client_id.unwrap_or_default();
            if let Some(binding) = binding {
                if !client_id_matches(binding.as_bytes(), presented) {
                    return Err(AuthError::ClientIdMismatch);
                }
            }
            Some(presented)
        }
        // A NATS client has no client id of its own: only an exact binding names one.
        Protocol::Nats => binding.filter(|b| !b.ends_with('*')).map(str::as_bytes),
    };
    let username = match credentials.username {
        Some(name) if !name.is_empty() => name,
        _ => identity.as_bytes(),
    };
    let empty = RuleLists::default();
    let publish = isthmus.publish.as_ref().unwrap_or(&empty);
    let subscribe = isthmus.subscribe.as_ref().unwrap_or(&empty);
    let permissions = permissions::compile(
        RuleSource { allow: &publish.allow, deny: &publish.deny },
        RuleSource { allow: &subscribe.allow, deny: &subscribe.deny },
        Placeholders { client_id, username: Some(username) },
    )
    .map_err(|_| AuthError::Malformed)?;
    if permissions.grants_nothing() {
        return Err(AuthError::NoPermissions);
    }
    Ok(Grant {
        identity,
        expires_at: claims.exp,
        permissions,
        max_qos: isthmus.max_qos,
        retain: isthmus.retain.unwrap_or(true),
        max_payload: isthmus.max_payload,
    })
}

/// `binding` is an exact client id, or a prefix followed by one `*` (the only `*` allowed).
fn client_id_matches(binding: &[u8], presented: &[u8]) -> bool {
    match binding.strip_suffix(b"*") {
        Some(prefix) if !prefix.contains(&b'*') => presented.starts_with(prefix),
        Some(_) => false,
        None => binding == presented,
    }
}

#[cfg(test)]
mod tests;
