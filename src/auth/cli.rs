//! `isthmus token keygen | issue | inspect | verify`: offline key and token tools (DECISIONS
//! 1.6, docs/auth.md).
//!
//! Owns: key generation (aws-lc-rs), signing tokens with the claim format of [`super::Claims`],
//! and printing what a token says. `verify` runs exactly [`Authenticator::authenticate`], so a
//! dry run cannot disagree with the broker. Nothing here talks to a network.

use super::keys::{parse_algorithms, read_secret};
use super::permissions::{check_rule, compile, Placeholders, RuleSource};
use super::{
    decode_header, Audience, AuthError, Authenticator, Claims, Credentials, Grant, IsthmusClaim,
    Protocol, RuleLists,
};
use crate::config::Config;
use crate::protocol::subject::{mqtt_filter_to_subject, subject_to_mqtt_topic};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `isthmus token ...`.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Generate a signing key: PATH.key.pem + PATH.pub.pem (eddsa, es256) or a secret file
    /// PATH (hs256). Prints the key's kid.
    Keygen {
        /// Key type. For RSA use `openssl genpkey -algorithm RSA`.
        #[arg(long, value_enum, default_value_t = KeygenAlgorithm::Eddsa)]
        alg: KeygenAlgorithm,
        /// Output path (without .key.pem / .pub.pem for eddsa and es256).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Sign a token. Prints only the token.
    Issue(Box<IssueArgs>),
    /// Show a token's header, claims, time left and rules (in NATS and MQTT spelling).
    Inspect {
        /// The token, or `-` to read it from stdin.
        token: String,
        /// Also verify the signature with this public key (PEM) or secret file.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Dry-run the broker's CONNECT check against a config; exit 0 accepted, 1 refused.
    Verify {
        /// The broker's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// MQTT client id the client would connect with.
        #[arg(long)]
        client_id: Option<String>,
        /// Username the client would connect with.
        #[arg(long)]
        username: Option<String>,
        /// The protocol the client would speak.
        #[arg(long, value_enum, default_value_t = ProtocolArg::Mqtt)]
        protocol: ProtocolArg,
        /// Check at this unix time instead of now.
        #[arg(long)]
        at: Option<u64>,
        /// The token, or `-` to read it from stdin.
        token: String,
    },
}

/// Key types `keygen` makes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeygenAlgorithm {
    /// Ed25519 (JWT alg EdDSA): small tokens, fast verification.
    Eddsa,
    /// ECDSA P-256 (JWT alg ES256).
    Es256,
    /// A 256-bit HMAC secret (JWT alg HS256).
    Hs256,
}

/// `--protocol` of `verify`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolArg {
    /// MQTT 3.1.1 / 5.0.
    Mqtt,
    /// NATS.
    Nats,
}

/// `isthmus token issue` arguments.
#[derive(clap::Args, Debug)]
pub struct IssueArgs {
    /// Signing key: a PKCS#8 PEM private key, or an HMAC secret file.
    #[arg(long)]
    key: PathBuf,
    /// JWT algorithm (EdDSA, ES256, ES384, RS256, PS256, HS256, ...); guessed from the key when
    /// absent.
    #[arg(long)]
    alg: Option<String>,
    /// Header kid: which configured key verifies the token.
    #[arg(long)]
    kid: Option<String>,
    /// Identity (the `sub` claim; `%u` when the client sends no username).
    #[arg(long = "sub")]
    identity: String,
    /// Bind the MQTT client id: exact, or a prefix with one trailing `*`.
    #[arg(long)]
    client_id: Option<String>,
    /// Lifetime: 3600s, 90m, 24h or 7d.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    ttl: u64,
    /// Audience (`aud`).
    #[arg(long)]
    aud: Option<String>,
    /// Issuer (`iss`).
    #[arg(long)]
    iss: Option<String>,
    /// Token id (`jti`).
    #[arg(long)]
    jti: Option<String>,
    /// Allow publishing to this NATS subject pattern (repeatable), e.g. 'devices.%c.>'.
    #[arg(long = "pub")]
    publish: Vec<String>,
    /// Allow subscribing to this NATS filter (repeatable).
    #[arg(long)]
    sub_allow: Vec<String>,
    /// Allow publishing to this MQTT topic filter (repeatable), e.g. 'sensors/%c/#'.
    #[arg(long)]
    mqtt_pub: Vec<String>,
    /// Allow subscribing to this MQTT topic filter (repeatable).
    #[arg(long)]
    mqtt_sub: Vec<String>,
    /// Deny publishing to this NATS subject pattern (repeatable).
    #[arg(long)]
    deny_pub: Vec<String>,
    /// Deny subscribing to this NATS filter (repeatable).
    #[arg(long)]
    deny_sub: Vec<String>,
    /// Deny publishing to this MQTT topic filter (repeatable).
    #[arg(long)]
    mqtt_deny_pub: Vec<String>,
    /// Deny subscribing to this MQTT topic filter (repeatable).
    #[arg(long)]
    mqtt_deny_sub: Vec<String>,
    /// Highest QoS the client may use (0-2).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    max_qos: Option<u8>,
    /// Forbid publishing retained messages.
    #[arg(long)]
    no_retain: bool,
    /// Largest payload the client may publish, in bytes.
    #[arg(long)]
    max_payload: Option<u32>,
    /// Print a JSON object with the token and its claims instead of the bare token.
    #[arg(long)]
    json: bool,
}

/// Runs a `token` subcommand. `Ok(false)` means "refused" (verify) and exits 1.
pub fn run(command: TokenCommand) -> Result<bool, String> {
    match command {
        TokenCommand::Keygen { alg, out, force } => keygen(alg, &out, force).map(|()| true),
        TokenCommand::Issue(args) => issue(&args).map(|()| true),
        TokenCommand::Inspect { token, key } => inspect(&read_token(&token)?, key.as_deref()),
        TokenCommand::Verify { config, client_id, username, protocol, at, token } => {
            let token = read_token(&token)?;
            verify(&config, client_id.as_deref(), username.as_deref(), protocol, at, &token)
        }
    }
}

/// A freshly generated key, in the files `keygen` writes.
pub(crate) struct GeneratedKey {
    /// PKCS#8 PEM private key, or the secret file's text.
    pub private: String,
    /// SubjectPublicKeyInfo PEM; `None` for a secret.
    pub public: Option<String>,
    /// First 8 bytes of SHA-256 of the public key DER (or the secret), hex.
    pub kid: String,
}

/// Generates a key with aws-lc-rs.
pub(crate) fn generate_key(alg: KeygenAlgorithm) -> Result<GeneratedKey, String> {
    let rng = SystemRandom::new();
    match alg {
        KeygenAlgorithm::Eddsa => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| "Ed25519 key generation failed".to_string())?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|e| format!("generated Ed25519 key does not parse: {e}"))?;
            let spki = [ED25519_SPKI_PREFIX, pair.public_key().as_ref()].concat();
            Ok(GeneratedKey {
                private: pem("PRIVATE KEY", pkcs8.as_ref()),
                public: Some(pem("PUBLIC KEY", &spki)),
                kid: kid_of(&spki),
            })
        }
        KeygenAlgorithm::Es256 => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| "P-256 key generation failed".to_string())?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .map_err(|e| format!("generated P-256 key does not parse: {e}"))?;
            let spki = [P256_SPKI_PREFIX, pair.public_key().as_ref()].concat();
            Ok(GeneratedKey {
                private: pem("PRIVATE KEY", pkcs8.as_ref()),
                public: Some(pem("PUBLIC KEY", &spki)),
                kid: kid_of(&spki),
            })
        }
        KeygenAlgorithm::Hs256 => {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no random bytes".to_string())?;
            let secret = STANDARD.encode(bytes);
            Ok(GeneratedKey {
                kid: kid_of(secret.as_bytes()),
                private: format!("{secret}\n"),
                public: None,
            })
        }
    }
}

/// Signs `claims` with the key file `key` (PEM private key or secret file).
pub(crate) fn sign(
    claims: &Claims,
    key: &Path,
    alg: Option<&str>,
    kid: Option<&str>,
) -> Result<String, String> {
    let (algorithm, encoding) = signing_key(key, alg)?;
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &encoding)
        .map_err(|e| format!("cannot sign with {}: {e}", key.display()))
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const ED25519_SPKI_PREFIX: &[u8] =
    &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480): the 65-byte point follows.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn keygen(alg: KeygenAlgorithm, out: &Path, force: bool) -> Result<(), String> {
    let key = generate_key(alg)?;
    match &key.public {
        Some(public) => {
            let private_path = with_suffix(out, ".key.pem");
            let public_path = with_suffix(out, ".pub.pem");
            write_file(&private_path, key.private.as_bytes(), 0o600, force)?;
            write_file(&public_path, public.as_bytes(), 0o644, force)?;
            let alg = if alg == KeygenAlgorithm::Eddsa { "EdDSA" } else { "ES256" };
            eprintln!(
                "wrote {} (keep it with the issuer) and {}; in the broker config:\n\
                 [[auth.jwt.keys]]\nkid = \"{}\"\nalgorithms = [\"{alg}\"]\n\
                 public_key_file = \"{}\"",
                private_path.display(),
                public_path.display(),
                key.kid,
                public_path.display()
            );
        }
        None => {
            write_file(out, key.private.as_bytes(), 0o600, force)?;
            eprintln!(
                "wrote {} (shared by issuer and broker); in the broker config:\n\
                 [[auth.jwt.keys]]\nkid = \"{}\"\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"",
                out.display(),
                key.kid,
                out.display()
            );
        }
    }
    println!("{}", key.kid);
    Ok(())
}

fn issue(args: &IssueArgs) -> Result<(), String> {
    let mut publish = RuleLists { allow: args.publish.clone(), deny: args.deny_pub.clone() };
    let mut subscribe = RuleLists { allow: args.sub_allow.clone(), deny: args.deny_sub.clone() };
    for (topics, rules) in [
        (&args.mqtt_pub, &mut publish.allow),
        (&args.mqtt_deny_pub, &mut publish.deny),
        (&args.mqtt_sub, &mut subscribe.allow),
        (&args.mqtt_deny_sub, &mut subscribe.deny),
    ] {
        for topic in topics {
            rules.extend(mqtt_rule_to_subjects(topic)?);
        }
    }
    for rule in
        publish.allow.iter().chain(&publish.deny).chain(&subscribe.allow).chain(&subscribe.deny)
    {
        check_rule(rule).map_err(|reason| format!("rule {rule:?}: {reason}"))?;
    }
    if let Some(binding) = &args.client_id {
        let stars = binding.bytes().filter(|b| *b == b'*').count();
        if stars > 1 || (stars == 1 && !binding.ends_with('*')) {
            return Err(format!("--client-id {binding:?}: only one trailing '*' is allowed"));
        }
    }
    let rules: Vec<&String> = publish
        .allow
        .iter()
        .chain(&publish.deny)
        .chain(&subscribe.allow)
        .chain(&subscribe.deny)
        .collect();
    if args.client_id.is_none() && rules.iter().any(|r| has_token(r, &["%c", "${clientid}"])) {
        eprintln!(
            "warning: rules use %c but the token binds no --client-id: an MQTT client may pick \
             any client id, and NATS clients get none of these rules"
        );
    }
    if rules.iter().any(|r| has_token(r, &["%u", "${username}"])) {
        eprintln!(
            "warning: %u is the username the client sends (the sub claim when it sends none)"
        );
    }
    let now = now_unix();
    let claims = Claims {
        iss: args.iss.clone(),
        aud: args.aud.clone().map(Audience::One),
        sub: Some(args.identity.clone()),
        iat: Some(now),
        nbf: Some(now),
        exp: Some(now + args.ttl),
        jti: args.jti.clone(),
        isthmus: Some(IsthmusClaim {
            client_id: args.client_id.clone(),
            publish: (!publish.allow.is_empty() || !publish.deny.is_empty()).then_some(publish),
            subscribe: (!subscribe.allow.is_empty() || !subscribe.deny.is_empty())
                .then_some(subscribe),
            max_qos: args.max_qos,
            retain: args.no_retain.then_some(false),
            max_payload: args.max_payload,
        }),
    };
    let token = sign(&claims, &args.key, args.alg.as_deref(), args.kid.as_deref())?;
    if args.json {
        let object = serde_json::json!({ "token": token, "kid": args.kid, "claims": claims });
        println!("{object}");
    } else {
        println!("{token}");
    }
    Ok(())
}

fn inspect(token: &str, key: Option<&Path>) -> Result<bool, String> {
    let header = decode_header(token.as_bytes()).map_err(|_| "not a JWT (header)".to_string())?;
    let payload = token.split('.').nth(1).ok_or("not a JWT")?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| "not a JWT (payload base64)")?;
    let raw: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|_| "not a JWT (payload JSON)")?;
    let mut out = String::new();
    out += &format!("header: {header}\n");
    out += &format!(
        "claims: {}\n",
        serde_json::to_string_pretty(&raw).unwrap_or_else(|_| raw.to_string())
    );
    let now = now_unix();
    for name in ["iat", "nbf", "exp"] {
        if let Some(at) = raw.get(name).and_then(serde_json::Value::as_u64) {
            out += &format!("{name}: {} ({})\n", utc(at), relative(at, now));
        }
    }
    match serde_json::from_value::<Claims>(raw) {
        Err(e) => out += &format!("claims do not fit the Isthmus format: {e}\n"),
        Ok(claims) => out += &describe_rules(&claims),
    }
    let mut verified = true;
    if let Some(key) = key {
        match check_signature(token, &header, key) {
            Ok(()) => out += &format!("signature: valid for {}\n", key.display()),
            Err(reason) => {
                out += &format!("signature: INVALID for {}: {reason}\n", key.display());
                verified = false;
            }
        }
    } else {
        out += "signature: not checked (pass --key)\n";
    }
    print!("{out}");
    Ok(verified)
}

fn verify(
    config: &Path,
    client_id: Option<&str>,
    username: Option<&str>,
    protocol: ProtocolArg,
    at: Option<u64>,
    token: &str,
) -> Result<bool, String> {
    let config = Config::from_file(config)?;
    let authenticator = Authenticator::from_config(&config.auth, config.base_dir())?;
    let protocol = match protocol {
        ProtocolArg::Mqtt => Protocol::Mqtt,
        ProtocolArg::Nats => Protocol::Nats,
    };
    let credentials = Credentials {
        protocol,
        token: Some(token.as_bytes()),
        client_id: match protocol {
            Protocol::Mqtt => client_id.map(str::as_bytes),
            Protocol::Nats => None,
        },
        username: username.map(str::as_bytes),
    };
    let now = at.unwrap_or_else(now_unix);
    match authenticator.authenticate(&credentials, now) {
        Ok(grant) => {
            print!("{}", describe_grant(&grant, authenticator.jwt_enabled(), now));
            Ok(true)
        }
        Err(error) => {
            println!("{}", describe_refusal(error, protocol));
            Ok(false)
        }
    }
}

fn describe_refusal(error: AuthError, protocol: Protocol) -> String {
    match protocol {
        Protocol::Mqtt => format!(
            "refused: {} (MQTT 5 CONNACK 0x{:02X}, MQTT 3.1.1 CONNACK 0x{:02X})",
            error.reason(),
            error.mqtt_v5_code(),
            error.mqtt_v3_code()
        ),
        Protocol::Nats => {
            format!("refused: {} (NATS -ERR '{}')", error.reason(), error.nats_error())
        }
    }
}

fn describe_grant(grant: &Grant, jwt_enabled: bool, now: u64) -> String {
    let mut out = String::from("accepted\n");
    if !jwt_enabled {
        out += "no [auth.jwt] in the config: every client is admitted with all permissions\n";
        return out;
    }
    out += &format!("identity: {}\n", grant.identity);
    if let Some(exp) = grant.expires_at {
        out += &format!("expires: {} ({})\n", utc(exp), relative(exp, now));
    }
    let [publish_allow, publish_deny, subscribe_allow, subscribe_deny] =
        grant.permissions.describe();
    for (label, rules) in [
        ("publish allow", publish_allow),
        ("publish deny", publish_deny),
        ("subscribe allow", subscribe_allow),
        ("subscribe deny", subscribe_deny),
    ] {
        for rule in rules {
            out += &format!("{label:<16} {rule:<32} mqtt: {}\n", subject_rule_to_mqtt(&rule));
        }
    }
    out += &format!(
        "max_qos: {}  retain: {}  max_payload: {}\n",
        grant.max_qos.map_or("-".to_string(), |q| q.to_string()),
        grant.retain,
        grant.max_payload.map_or("-".to_string(), |p| p.to_string())
    );
    out
}

fn describe_rules(claims: &Claims) -> String {
    let Some(isthmus) = &claims.isthmus else {
        return "rules: none (no isthmus claim: the broker refuses this token)\n".to_string();
    };
    let mut out = String::new();
    if let Some(binding) = &isthmus.client_id {
        out += &format!("client id binding: {binding}\n");
    }
    let empty = RuleLists::default();
    let publish = isthmus.publish.as_ref().unwrap_or(&empty);
    let subscribe = isthmus.subscribe.as_ref().unwrap_or(&empty);
    for (label, rules) in [
        ("publish allow", &publish.allow),
        ("publish deny", &publish.deny),
        ("subscribe allow", &subscribe.allow),
        ("subscribe deny", &subscribe.deny),
    ] {
        for rule in rules {
            let status = match check_rule(rule) {
                Ok(()) => String::new(),
                Err(reason) => format!("  INVALID: {reason}"),
            };
            out +=
                &format!("{label:<16} {rule:<32} mqtt: {}{status}\n", subject_rule_to_mqtt(rule));
        }
    }
    // What the rules compile to if nothing is substituted (placeholder rules drop out).
    let compiled = compile(
        RuleSource { allow: &publish.allow, deny: &publish.deny },
        RuleSource { allow: &subscribe.allow, deny: &subscribe.deny },
        Placeholders::default(),
    );
    if compiled.is_err() {
        out += "the broker refuses this token: a rule is malformed\n";
    }
    out
}

/// A NATS rule in MQTT spelling, token by token (`*` -> `+`, `>` -> `#`).
fn subject_rule_to_mqtt(rule: &str) -> String {
    let mut levels = Vec::new();
    for token in rule.split('.') {
        let level = match token {
            "*" => "+".to_string(),
            ">" => "#".to_string(),
            _ => match subject_to_mqtt_topic(token.as_bytes()) {
                Ok(level) => String::from_utf8_lossy(&level).into_owned(),
                Err(_) => return "(no MQTT form)".to_string(),
            },
        };
        levels.push(level);
    }
    levels.join("/")
}

/// An MQTT topic filter as NATS rules: `a/+/#` -> `a.*.>` and, because MQTT `#` also matches
/// its parent level, `a.*`.
fn mqtt_rule_to_subjects(topic: &str) -> Result<Vec<String>, String> {
    let filter = mqtt_filter_to_subject(topic.as_bytes())
        .map_err(|e| format!("MQTT filter {topic:?}: {e}"))?;
    let mut rules = vec![String::from_utf8_lossy(&filter.subject).into_owned()];
    if let Some(parent) = filter.parent() {
        rules.push(String::from_utf8_lossy(parent).into_owned());
    }
    Ok(rules)
}

fn has_token(rule: &str, names: &[&str]) -> bool {
    rule.split('.').any(|t| names.contains(&t))
}

fn check_signature(token: &str, header: &serde_json::Value, key: &Path) -> Result<(), String> {
    let alg = header.get("alg").and_then(|a| a.as_str()).ok_or("no alg in the header")?;
    let algorithm = parse_algorithms(&[alg.to_string()])?[0];
    let decoding = verification_key(key, algorithm)?;
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn verification_key(key: &Path, algorithm: Algorithm) -> Result<DecodingKey, String> {
    use jsonwebtoken::AlgorithmFamily;
    if algorithm.family() == AlgorithmFamily::Hmac {
        return Ok(DecodingKey::from_secret(&read_secret(key)?));
    }
    let pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    let decoded = match algorithm.family() {
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
        _ => DecodingKey::from_rsa_pem(&pem),
    };
    decoded.map_err(|e| format!("{}: not a public key for {algorithm:?}: {e}", key.display()))
}

/// The algorithm and signing key for `key`; the algorithm is guessed from the file when
/// `alg` is absent (a PEM private key: its type; anything else: an HS256 secret).
fn signing_key(key: &Path, alg: Option<&str>) -> Result<(Algorithm, EncodingKey), String> {
    let bytes =
        std::fs::read(key).map_err(|e| format!("cannot read key {}: {e}", key.display()))?;
    let is_pem = bytes.starts_with(b"-----BEGIN");
    let algorithm = match alg {
        Some(alg) => parse_algorithms(&[alg.to_string()])?[0],
        None if is_pem => guess_pem_algorithm(&bytes)
            .ok_or_else(|| format!("{}: unknown private key type; pass --alg", key.display()))?,
        None => Algorithm::HS256,
    };
    use jsonwebtoken::AlgorithmFamily;
    let encoding = match algorithm.family() {
        AlgorithmFamily::Hmac => {
            if is_pem {
                return Err(format!("{}: a PEM key cannot sign {algorithm:?}", key.display()));
            }
            Ok(EncodingKey::from_secret(&read_secret(key)?))
        }
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&bytes),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&bytes),
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&bytes),
    };
    let encoding = encoding
        .map_err(|e| format!("{}: not a PEM private key for {algorithm:?}: {e}", key.display()))?;
    Ok((algorithm, encoding))
}

fn guess_pem_algorithm(pem_text: &[u8]) -> Option<Algorithm> {
    let text = std::str::from_utf8(pem_text).ok()?;
    if text.contains("BEGIN RSA PRIVATE KEY") {
        return Some(Algorithm::RS256);
    }
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body.trim()).ok()?;
    if Ed25519KeyPair::from_pkcs8(&der).is_ok() {
        return Some(Algorithm::EdDSA);
    }
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).is_ok() {
        return Some(Algorithm::ES256);
    }
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &der).is_ok() {
        return Some(Algorithm::ES384);
    }
    EncodingKey::from_rsa_pem(pem_text).ok().map(|_| Algorithm::RS256)
}

fn kid_of(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out += std::str::from_utf8(line).expect("base64 is ASCII");
        out.push('\n');
    }
    out += &format!("-----END {label}-----\n");
    out
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_file(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // `--out keys/issuer` on a fresh checkout: make `keys/`, private to the user.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; pass --force to overwrite it", path.display())
        } else {
            format!("cannot write {}: {e}", path.display())
        }
    })?;
    // An existing file keeps its old mode under `create`; a key must not stay readable.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read_token(token: &str) -> Result<String, String> {
    if token != "-" {
        return Ok(token.trim().to_string());
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(text.trim().to_string())
}

fn parse_ttl(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("bad duration unit in {text:?} (s, m, h or d)")),
    };
    match number.checked_mul(seconds) {
        Some(0) | None => Err(format!("duration {text:?} must be positive and sane")),
        Some(ttl) => Ok(ttl),
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `2026-01-01T00:00:00Z` for unix seconds (proleptic Gregorian, UTC).
fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let seconds = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

fn relative(at: u64, now: u64) -> String {
    let span = |s: u64| match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    };
    if at >= now {
        format!("in {}", span(at - now))
    } else {
        format!("{} ago", span(now - at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parses_units() {
        assert_eq!(parse_ttl("3600s"), Ok(3600));
        assert_eq!(parse_ttl("90m"), Ok(5400));
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("60"), Ok(60));
        assert!(parse_ttl("0h").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("5y").is_err());
    }

    #[test]
    fn utc_formats_known_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn mqtt_rules_convert_with_placeholders_intact() {
        assert_eq!(mqtt_rule_to_subjects("sensors/%c/#").unwrap(), ["sensors.%c.>", "sensors.%c"]);
        assert_eq!(mqtt_rule_to_subjects("a/+/${username}").unwrap(), ["a.*.${username}"]);
        assert_eq!(mqtt_rule_to_subjects("#").unwrap(), [">"]);
        assert!(mqtt_rule_to_subjects("a/#/b").is_err());
        assert_eq!(subject_rule_to_mqtt("sensors.%c.>"), "sensors/%c/#");
        assert_eq!(subject_rule_to_mqtt("a.*.b"), "a/+/b");
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        for alg in [KeygenAlgorithm::Eddsa, KeygenAlgorithm::Es256] {
            let key = generate_key(alg).unwrap();
            let public = key.public.unwrap();
            assert_eq!(key.kid.len(), 16);
            let (algorithm, encoding) = {
                let dir = std::env::temp_dir()
                    .join(format!("isthmus-keygen-{}-{alg:?}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("k.key.pem");
                std::fs::write(&path, &key.private).unwrap();
                let result = signing_key(&path, None).unwrap();
                std::fs::remove_dir_all(&dir).unwrap();
                result
            };
            let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
            let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &encoding).unwrap();
            let decoding = match algorithm {
                Algorithm::EdDSA => DecodingKey::from_ed_pem(public.as_bytes()).unwrap(),
                _ => DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
            };
            let mut validation = Validation::new(algorithm);
            validation.validate_exp = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        }
        let secret = generate_key(KeygenAlgorithm::Hs256).unwrap();
        assert!(secret.public.is_none());
        assert_eq!(secret.private.len(), 45, "44 base64 characters and a newline");
    }
}
