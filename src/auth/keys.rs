//! Verification keys from `[[auth.jwt.keys]]`: reading the secret, PEM and JWKS files, and
//! choosing the key for a token's `kid`.
//!
//! Owns: file formats and the per-key algorithm allow-list. Does not own: token parsing or
//! claim checks (`auth::mod`), or when keys are reloaded (SIGHUP handling in `serve`).

use crate::config::JwtKeyConfig;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Shortest HMAC secret accepted, in bytes: HS256's own output size (RFC 7518 3.2).
pub(crate) const HMAC_SECRET_BYTES_MIN: usize = 32;

/// One verification key.
pub(crate) struct Key {
    /// `None`: the only key, used whatever `kid` a token names (or none).
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub issuer: Option<String>,
    pub decoding: DecodingKey,
}

/// Every configured key.
pub(crate) struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// Reads every key file; the error names the file and what is wrong with it.
    pub fn load(configs: &[JwtKeyConfig], base_dir: &Path) -> Result<KeySet, String> {
        let mut keys = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let algorithms = parse_algorithms(&config.algorithms)
                .map_err(|e| format!("auth.jwt.keys[{index}].algorithms: {e}"))?;
            let family = algorithms[0].family();
            let decoding = if let Some(path) = &config.secret_file {
                load_secret(&resolve(base_dir, path), family)?
            } else if let Some(path) = &config.public_key_file {
                load_public_key(&resolve(base_dir, path), family)?
            } else if let Some(path) = &config.jwks_file {
                load_jwks(&resolve(base_dir, path), config, &algorithms, &mut keys)?;
                continue;
            } else {
                return Err(format!(
                    "auth.jwt.keys[{index}] needs secret_file, public_key_file or jwks_file"
                ));
            };
            keys.push(Key {
                kid: config.kid.clone(),
                algorithms,
                issuer: config.issuer.clone(),
                decoding,
            });
        }
        if keys.is_empty() {
            return Err("auth.jwt has no keys".into());
        }
        for (index, key) in keys.iter().enumerate() {
            if key.kid.is_none() && keys.len() > 1 {
                return Err("every key needs a kid when more than one key is configured".into());
            }
            if keys[..index].iter().any(|other| other.kid == key.kid) {
                return Err(format!(
                    "kid {:?} is configured twice",
                    key.kid.as_deref().unwrap_or("")
                ));
            }
        }
        Ok(KeySet { keys })
    }

    /// The key for a token whose header names `kid`. With one key configured without a kid,
    /// that key serves every token.
    pub fn select(&self, kid: Option<&str>) -> Option<&Key> {
        if let [only] = &self.keys[..] {
            if only.kid.is_none() || kid.is_none() {
                return Some(only);
            }
        }
        let kid = kid?;
        self.keys.iter().find(|key| key.kid.as_deref() == Some(kid))
    }
}

/// Parses algorithm names (`"EdDSA"`, `"HS256"`, ...); all must be of one family.
pub(crate) fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Err("no algorithms".into());
    }
    let mut algorithms = Vec::with_capacity(names.len());
    for name in names {
        if name.eq_ignore_ascii_case("none") {
            return Err("\"none\" is never accepted".into());
        }
        let algorithm = Algorithm::from_str(name).map_err(|_| {
            format!(
                "unknown algorithm {name:?} (HS256, HS384, HS512, RS256, RS384, RS512, PS256, \
                 PS384, PS512, ES256, ES384, EdDSA)"
            )
        })?;
        algorithms.push(algorithm);
    }
    if algorithms.iter().any(|a| a.family() != algorithms[0].family()) {
        return Err(
            "one key's algorithms must all be of one family (HS*, RS*/PS*, ES*, EdDSA)".into()
        );
    }
    Ok(algorithms)
}

/// Reads an HMAC secret file: the raw bytes, one trailing newline (`\n` or `\r\n`) ignored.
pub(crate) fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut secret = std::fs::read(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.len() < HMAC_SECRET_BYTES_MIN {
        return Err(format!(
            "secret file {} holds {} bytes; an HMAC secret needs at least {HMAC_SECRET_BYTES_MIN} \
             (`isthmus token keygen --alg hs256` makes one)",
            path.display(),
            secret.len()
        ));
    }
    Ok(secret)
}

fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

fn load_secret(path: &Path, family: AlgorithmFamily) -> Result<DecodingKey, String> {
    if family != AlgorithmFamily::Hmac {
        return Err(format!(
            "secret file {}: a secret is only for HS256/HS384/HS512; use public_key_file",
            path.display()
        ));
    }
    Ok(DecodingKey::from_secret(&read_secret(path)?))
}

fn load_public_key(path: &Path, family: AlgorithmFamily) -> Result<DecodingKey, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read public key file {}: {e}", path.display()))?;
    let decoded = match family {
        AlgorithmFamily::Hmac => {
            return Err(format!(
                "public key file {}: HS* algorithms need secret_file, not a public key",
                path.display()
            ))
        }
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
    };
    decoded.map_err(|e| {
        format!(
            "public key file {}: not a PEM public key for {family:?} ({e}); a private key \
             belongs with the issuer, not the broker",
            path.display()
        )
    })
}

fn load_jwks(
    path: &Path,
    config: &JwtKeyConfig,
    algorithms: &[Algorithm],
    keys: &mut Vec<Key>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("JWKS file {}: not a JSON Web Key Set: {e}", path.display()))?;
    let count = set.keys.len();
    for (index, jwk) in set.keys.iter().enumerate() {
        let kid = match (&jwk.common.key_id, &config.kid) {
            (Some(kid), _) => Some(kid.clone()),
            (None, Some(kid)) if count == 1 => Some(kid.clone()),
            (None, None) if count == 1 => None,
            (None, _) => {
                return Err(format!("JWKS file {}: key {index} has no kid", path.display()))
            }
        };
        let decoding = DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("JWKS file {}: key {index}: {e}", path.display()))?;
        let mut allowed: Vec<Algorithm> =
            algorithms.iter().copied().filter(|a| a.family() == decoding.family()).collect();
        if let Some(own) = &jwk.common.key_algorithm {
            let own = Algorithm::from_str(&own.to_string()).ok();
            allowed.retain(|a| Some(*a) == own);
        }
        if allowed.is_empty() {
            return Err(format!(
                "JWKS file {}: key {index} fits none of the configured algorithms",
                path.display()
            ));
        }
        keys.push(Key { kid, algorithms: allowed, issuer: config.issuer.clone(), decoding });
    }
    Ok(())
}
