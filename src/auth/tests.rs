//! Security tests of [`Authenticator::authenticate`]: every refusal reason, algorithm
//! confusion, tampering, placeholder injection and protocol parity. Keys are generated per
//! test run; nothing secret is checked in.

use super::cli::{generate_key, KeygenAlgorithm};
use super::*;
use crate::config::{AuthConfig, JwtConfig, JwtKeyConfig};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};

const NOW: u64 = 1_767_225_600;

/// A temporary directory with an Ed25519 key pair (`ed`), a second unrelated one (`other`)
/// and an HMAC secret (`hmac.secret`).
struct Fixture {
    dir: PathBuf,
    ed_private: Vec<u8>,
    ed_public: Vec<u8>,
    other_private: Vec<u8>,
    secret: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("isthmus-auth-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ed = generate_key(KeygenAlgorithm::Eddsa).unwrap();
        let other = generate_key(KeygenAlgorithm::Eddsa).unwrap();
        let hmac = generate_key(KeygenAlgorithm::Hs256).unwrap();
        std::fs::write(dir.join("ed.pub.pem"), ed.public.as_ref().unwrap()).unwrap();
        std::fs::write(dir.join("hmac.secret"), &hmac.private).unwrap();
        Fixture {
            dir,
            ed_private: ed.private.into_bytes(),
            ed_public: ed.public.unwrap().into_bytes(),
            other_private: other.private.into_bytes(),
            secret: hmac.private.trim_end().as_bytes().to_vec(),
        }
    }

    fn ed_key(kid: Option<&str>) -> JwtKeyConfig {
        JwtKeyConfig {
            kid: kid.map(str::to_string),
            algorithms: vec!["EdDSA".into()],
            public_key_file: Some("ed.pub.pem".into()),
            ..JwtKeyConfig::default()
        }
    }

    fn hmac_key(kid: Option<&str>) -> JwtKeyConfig {
        JwtKeyConfig {
            kid: kid.map(str::to_string),
            algorithms: vec!["HS256".into()],
            secret_file: Some("hmac.secret".into()),
            ..JwtKeyConfig::default()
        }
    }

    fn authenticator(&self, jwt: JwtConfig) -> Authenticator {
        let config = AuthConfig { allow_anonymous: false, jwt: Some(jwt) };
        Authenticator::from_config(&config, &self.dir).unwrap()
    }

    /// One EdDSA key, no kid, default settings.
    fn ed_only(&self) -> Authenticator {
        self.authenticator(JwtConfig { keys: vec![Fixture::ed_key(None)], ..JwtConfig::default() })
    }

    fn sign_ed(&self, claims: &serde_json::Value, kid: Option<&str>) -> String {
        sign(Algorithm::EdDSA, &EncodingKey::from_ed_pem(&self.ed_private).unwrap(), claims, kid)
    }

    fn sign_hmac(&self, claims: &serde_json::Value, kid: Option<&str>) -> String {
        sign(Algorithm::HS256, &EncodingKey::from_secret(&self.secret), claims, kid)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sign(
    algorithm: Algorithm,
    key: &EncodingKey,
    claims: &serde_json::Value,
    kid: Option<&str>,
) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Valid claims for device `dev1` at [`NOW`].
fn claims() -> serde_json::Value {
    json!({
        "sub": "dev1",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 3600,
        "isthmus": {
            "pub": { "allow": ["devices.%c.>"] },
            "sub": { "allow": ["devices.%c.cmd.>", "broadcast.>"], "deny": ["broadcast.secret.>"] }
        }
    })
}

fn with(
    mut claims: serde_json::Value,
    path: &[&str],
    value: serde_json::Value,
) -> serde_json::Value {
    let (last, parents) = path.split_last().unwrap();
    let mut target = &mut claims;
    for key in parents {
        target = target.get_mut(*key).unwrap();
    }
    match value {
        serde_json::Value::Null => {
            target.as_object_mut().unwrap().remove(*last);
        }
        value => {
            target[*last] = value;
        }
    }
    claims
}

fn mqtt<'a>(token: &'a str, client_id: &'a str) -> Credentials<'a> {
    Credentials {
        protocol: Protocol::Mqtt,
        token: Some(token.as_bytes()),
        client_id: Some(client_id.as_bytes()),
        username: None,
    }
}

fn nats(token: &str) -> Credentials<'_> {
    Credentials {
        protocol: Protocol::Nats,
        token: Some(token.as_bytes()),
        client_id: None,
        username: None,
    }
}

fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn a_valid_token_is_admitted_with_its_rules() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let token = fixture.sign_ed(&claims(), None);
    let grant = auth.authenticate(&mqtt(&token, "dev1"), NOW).unwrap();
    assert_eq!(grant.identity, "dev1");
    assert_eq!(grant.expires_at, Some(NOW + 3600));
    assert!(grant.retain);
    assert!(grant.permissions.may_publish(b"devices.dev1.temp"));
    assert!(!grant.permissions.may_publish(b"devices.dev2.temp"));
    assert_eq!(grant.permissions.may_subscribe(b"devices.dev1.cmd.>"), SubscribeCheck::Allowed);
    assert_eq!(
        grant.permissions.may_subscribe(b"broadcast.>"),
        SubscribeCheck::AllowedWithDenyFilter
    );
    assert_eq!(grant.permissions.may_subscribe(b"broadcast.secret.x"), SubscribeCheck::Denied);
}

#[test]
fn alg_none_is_refused() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims().to_string().as_bytes());
    for token in [format!("{header}.{payload}."), format!("{header}.{payload}.AAAA")] {
        assert_eq!(
            auth.authenticate(&mqtt(&token, "dev1"), NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }
    let header = base64url(br#"{"alg":"None"}"#);
    let token = format!("{header}.{payload}.");
    assert_eq!(auth.authenticate(&mqtt(&token, "dev1"), NOW), Err(AuthError::AlgorithmNotAllowed));
}

#[test]
fn hmac_signed_with_the_public_key_is_refused_by_an_eddsa_key() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    // The classic confusion attack: the public key is public, so an attacker can HMAC with it.
    for secret in [&fixture.ed_public[..], fixture.ed_public.trim_ascii_end()] {
        let token = sign(Algorithm::HS256, &EncodingKey::from_secret(secret), &claims(), None);
        assert_eq!(
            auth.authenticate(&mqtt(&token, "dev1"), NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }
}

/// The same attack against an RSA key (the form it was first published in): HS256 with the
/// RS256 public key's PEM as the secret. The key pair comes from the openssl CLI (the broker
/// only reads RSA keys; `isthmus token keygen` does not make them).
#[test]
fn hmac_signed_with_an_rsa_public_key_is_refused_by_an_rs256_key() {
    let fixture = Fixture::new();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&fixture.dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl CLI (CI installs it)");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "rsa.key.pem",
    ]);
    openssl(&["pkey", "-in", "rsa.key.pem", "-pubout", "-out", "rsa.pub.pem"]);
    let rsa = JwtKeyConfig {
        algorithms: vec!["RS256".into()],
        public_key_file: Some("rsa.pub.pem".into()),
        ..JwtKeyConfig::default()
    };
    let auth = fixture.authenticator(JwtConfig { keys: vec![rsa], ..JwtConfig::default() });
    let public = std::fs::read(fixture.dir.join("rsa.pub.pem")).unwrap();
    for secret in [&public[..], public.trim_ascii_end()] {
        let token = sign(Algorithm::HS256, &EncodingKey::from_secret(secret), &claims(), None);
        assert_eq!(
            auth.authenticate(&mqtt(&token, "dev1"), NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }
    let private = std::fs::read(fixture.dir.join("rsa.key.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    let token = sign(Algorithm::RS256, &key, &claims(), None);
    assert!(auth.authenticate(&mqtt(&token, "dev1"), NOW).is_ok(), "the real RS256 token passes");
}

#[test]
fn an_eddsa_token_is_refused_by_an_hmac_key() {
    let fixture = Fixture::new();
    let auth = fixture
        .authenticator(JwtConfig { keys: vec![Fixture::hmac_key(None)], ..JwtConfig::default() });
    let token = fixture.sign_ed(&claims(), None);
    assert_eq!(auth.authenticate(&mqtt(&token, "dev1"), NOW), Err(AuthError::AlgorithmNotAllowed));
    let token = fixture.sign_hmac(&claims(), None);
    assert!(auth.authenticate(&mqtt(&token, "dev1"), NOW).is_ok());
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let key = EncodingKey::from_ed_pem(&fixture.other_private).unwrap();
    let token = sign(Algorithm::EdDSA, &key, &claims(), None);
    assert_eq!(auth.authenticate(&mqtt(&token, "dev1"), NOW), Err(AuthError::BadSignature));
}

#[test]
fn a_tampered_payload_is_refused() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let token = fixture.sign_ed(&claims(), None);
    let parts: Vec<&str> = token.split('.').collect();
    let wider = with(claims(), &["isthmus", "pub", "allow"], json!([">"]));
    let tampered = format!("{}.{}.{}", parts[0], base64url(wider.to_string().as_bytes()), parts[2]);
    assert_eq!(auth.authenticate(&mqtt(&tampered, "dev1"), NOW), Err(AuthError::BadSignature));
    // A flipped signature byte, too.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], base64url(&signature));
    assert_eq!(auth.authenticate(&mqtt(&flipped, "dev1"), NOW), Err(AuthError::BadSignature));
}

#[test]
fn time_claims_are_checked_against_the_given_clock_with_the_leeway() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let leeway = JwtConfig::default().leeway_s;
    let cases = [
        (with(claims(), &["exp"], json!(NOW - leeway - 1)), Err(AuthError::Expired)),
        (with(claims(), &["exp"], json!(NOW - leeway)), Ok(())),
        (with(claims(), &["nbf"], json!(NOW + leeway + 1)), Err(AuthError::NotYetValid)),
        (with(claims(), &["nbf"], json!(NOW + leeway)), Ok(())),
        (with(claims(), &["iat"], json!(NOW + leeway + 1)), Err(AuthError::IssuedInFuture)),
        (with(claims(), &["iat"], json!(NOW + leeway)), Ok(())),
        (with(claims(), &["exp"], serde_json::Value::Null), Err(AuthError::Malformed)),
        (with(claims(), &["exp"], json!("tomorrow")), Err(AuthError::Malformed)),
    ];
    for (claims, expected) in cases {
        let token = fixture.sign_ed(&claims, None);
        let got = auth.authenticate(&mqtt(&token, "dev1"), NOW).map(|_| ());
        assert_eq!(got, expected, "{claims}");
    }
}

#[test]
fn the_leeway_comes_from_the_config() {
    let fixture = Fixture::new();
    let auth = fixture.authenticator(JwtConfig {
        leeway_s: 0,
        keys: vec![Fixture::ed_key(None)],
        ..JwtConfig::default()
    });
    let token = fixture.sign_ed(&with(claims(), &["exp"], json!(NOW - 1)), None);
    assert_eq!(auth.authenticate(&mqtt(&token, "dev1"), NOW), Err(AuthError::Expired));
}

#[test]
fn audience_is_checked_when_configured() {
    let fixture = Fixture::new();
    let auth = fixture.authenticator(JwtConfig {
        audience: Some("isthmus".into()),
        keys: vec![Fixture::ed_key(None)],
        ..JwtConfig::default()
    });
    let cases = [
        (json!("isthmus"), Ok(())),
        (json!(["other", "isthmus"]), Ok(())),
        (json!("other"), Err(AuthError::WrongAudience)),
        (json!(["other"]), Err(AuthError::WrongAudience)),
        (serde_json::Value::Null, Err(AuthError::WrongAudience)),
    ];
    for (aud, expected) in cases {
        let token = fixture.sign_ed(&with(claims(), &["aud"], aud.clone()), None);
        assert_eq!(auth.authenticate(&mqtt(&token, "dev1"), NOW).map(|_| ()), expected, "{aud}");
    }
    // Without a configured audience, any aud is accepted (the crate would refuse it).
    let open = fixture.ed_only();
    let token = fixture.sign_ed(&with(claims(), &["aud"], json!("whatever")), None);
    assert!(open.authenticate(&mqtt(&token, "dev1"), NOW).is_ok());
}

#[test]
fn issuer_is_checked_per_key_or_by_default() {
    let fixture = Fixture::new();
    let mut ed = Fixture::ed_key(Some("ed"));
    ed.issuer = Some("https://devices.example".into());
    let auth = fixture.authenticator(JwtConfig {
        issuer: Some("https://auth.example".into()),
        keys: vec![ed, Fixture::hmac_key(Some("hs"))],
        ..JwtConfig::default()
    });
    let devices = with(claims(), &["iss"], json!("https://devices.example"));
    let default = with(claims(), &["iss"], json!("https://auth.example"));
    let ok = |token: String| auth.authenticate(&mqtt(&token, "dev1"), NOW).map(|_| ());
    assert_eq!(ok(fixture.sign_ed(&devices, Some("ed"))), Ok(()));
    assert_eq!(ok(fixture.sign_ed(&default, Some("ed"))), Err(AuthError::WrongIssuer));
    assert_eq!(ok(fixture.sign_hmac(&default, Some("hs"))), Ok(()));
    assert_eq!(ok(fixture.sign_hmac(&devices, Some("hs"))), Err(AuthError::WrongIssuer));
    assert_eq!(ok(fixture.sign_hmac(&claims(), Some("hs"))), Err(AuthError::WrongIssuer), "no iss");
}

#[test]
fn oversize_tokens_are_refused_before_parsing() {
    let fixture = Fixture::new();
    let auth = fixture.authenticator(JwtConfig {
        max_token_bytes: 256,
        keys: vec![Fixture::ed_key(None)],
        ..JwtConfig::default()
    });
    let big = with(claims(), &["jti"], json!("x".repeat(300)));
    let token = fixture.sign_ed(&big, None);
    assert_eq!(auth.authenticate(&mqtt(&token, "dev1"), NOW), Err(AuthError::TooLarge));
    let garbage = "!".repeat(257);
    assert_eq!(auth.authenticate(&mqtt(&garbage, "dev1"), NOW), Err(AuthError::TooLarge));
    let garbage = "!".repeat(256);
    assert_eq!(auth.authenticate(&mqtt(&garbage, "dev1"), NOW), Err(AuthError::Malformed));
}

#[test]
fn keys_are_chosen_by_kid() {
    let fixture = Fixture::new();
    let auth = fixture.authenticator(JwtConfig {
        keys: vec![Fixture::ed_key(Some("ed")), Fixture::hmac_key(Some("hs"))],
        ..JwtConfig::default()
    });
    let ok = |token: String| auth.authenticate(&mqtt(&token, "dev1"), NOW).map(|_| ());
    assert_eq!(ok(fixture.sign_ed(&claims(), Some("ed"))), Ok(()));
    assert_eq!(ok(fixture.sign_hmac(&claims(), Some("hs"))), Ok(()));
    assert_eq!(ok(fixture.sign_ed(&claims(), Some("nope"))), Err(AuthError::UnknownKey));
    assert_eq!(ok(fixture.sign_ed(&claims(), None)), Err(AuthError::UnknownKey), "two keys");
    // A token naming the HMAC key but signed EdDSA: that key does not allow EdDSA.
    assert_eq!(ok(fixture.sign_ed(&claims(), Some("hs"))), Err(AuthError::AlgorithmNotAllowed));
    // With one key that has a kid, a different kid is unknown; no kid picks the key.
    let single = fixture.authenticator(JwtConfig {
        keys: vec![Fixture::ed_key(Some("ed"))],
        ..JwtConfig::default()
    });
    let token = fixture.sign_ed(&claims(), Some("old"));
    assert_eq!(
        single.authenticate(&mqtt(&token, "dev1"), NOW).map(|_| ()),
        Err(AuthError::UnknownKey)
    );
    let token = fixture.sign_ed(&claims(), None);
    assert!(single.authenticate(&mqtt(&token, "dev1"), NOW).is_ok());
}

#[test]
fn malformed_tokens_are_refused() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    for token in ["", "a.b", "a.b.c.d", "....", "eyJ.eyJ.sig", "not a token"] {
        let got = auth.authenticate(&mqtt(token, "dev1"), NOW);
        let expected = if token.is_empty() { AuthError::Missing } else { AuthError::Malformed };
        assert_eq!(got, Err(expected), "{token:?}");
    }
    let unknown_field = with(claims(), &["isthmus", "publish"], json!({"allow": [">"]}));
    let bad_rule = with(claims(), &["isthmus", "pub", "allow"], json!(["a..b"]));
    let partial_placeholder = with(claims(), &["isthmus", "pub", "allow"], json!(["dev%c.>"]));
    let no_sub = with(claims(), &["sub"], serde_json::Value::Null);
    let bad_qos = with(claims(), &["isthmus", "max_qos"], json!(3));
    for claims in [unknown_field, bad_rule, partial_placeholder, no_sub, bad_qos] {
        let token = fixture.sign_ed(&claims, None);
        assert_eq!(
            auth.authenticate(&mqtt(&token, "dev1"), NOW),
            Err(AuthError::Malformed),
            "{claims}"
        );
    }
}

#[test]
fn required_decides_about_clients_without_a_token() {
    let fixture = Fixture::new();
    let required = fixture.ed_only();
    let none =
        Credentials { protocol: Protocol::Mqtt, token: None, client_id: None, username: None };
    assert_eq!(required.authenticate(&none, NOW), Err(AuthError::Missing));
    assert!(required.required() && required.jwt_enabled());
    let optional = fixture.authenticator(JwtConfig {
        required: false,
        keys: vec![Fixture::ed_key(None)],
        ..JwtConfig::default()
    });
    assert!(!optional.required());
    let grant = optional.authenticate(&none, NOW).unwrap();
    assert!(grant.permissions.grants_nothing());
    // A token that is presented is still checked.
    let expired = fixture.sign_ed(&with(claims(), &["exp"], json!(NOW - 3600)), None);
    assert_eq!(optional.authenticate(&mqtt(&expired, "dev1"), NOW), Err(AuthError::Expired));
    // No [auth.jwt]: everything allowed.
    let open = Authenticator::from_config(&AuthConfig::default(), &fixture.dir).unwrap();
    assert!(!open.jwt_enabled() && !open.required());
    assert_eq!(open.authenticate(&none, NOW), Ok(Grant::anonymous()));
}

#[test]
fn no_isthmus_claim_means_no_permissions() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let token = fixture.sign_ed(&with(claims(), &["isthmus"], serde_json::Value::Null), None);
    let error = auth.authenticate(&mqtt(&token, "dev1"), NOW).unwrap_err();
    assert_eq!(error, AuthError::NoPermissions);
    assert_eq!((error.mqtt_v5_code(), error.mqtt_v3_code()), (0x87, 0x05));
    let empty = with(claims(), &["isthmus"], json!({}));
    let token = fixture.sign_ed(&empty, None);
    assert_eq!(auth.authenticate(&mqtt(&token, "dev1"), NOW), Err(AuthError::NoPermissions));
}

#[test]
fn hostile_client_ids_and_usernames_do_not_widen_access() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let rules = json!({
        "pub": { "allow": ["devices.%c.>", "users.%u.>"] },
        "sub": { "allow": ["devices.%c.>", "users.${username}.>"] }
    });
    let token = fixture.sign_ed(&with(claims(), &["isthmus"], rules), None);
    for hostile in ["a.>", "*", ">", "#", "+", "x/y", "a.b", " ", "a b", "a\tb", "a\0b", ""] {
        let credentials = Credentials {
            protocol: Protocol::Mqtt,
            token: Some(token.as_bytes()),
            client_id: Some(hostile.as_bytes()),
            username: Some(hostile.as_bytes()).filter(|u| !u.is_empty()),
        };
        match auth.authenticate(&credentials, NOW) {
            Err(AuthError::NoPermissions) => {}
            Ok(grant) => {
                // The empty username falls back to `sub`, so only users.dev1 remains.
                assert!(hostile.is_empty(), "{hostile:?} got {grant:?}");
                let p = &grant.permissions;
                assert!(p.may_publish(b"users.dev1.x"));
                assert!(!p.may_publish(b"devices.a.b"));
                assert_eq!(p.may_subscribe(b"devices.>"), SubscribeCheck::Denied);
            }
            Err(other) => panic!("{hostile:?}: {other:?}"),
        }
    }
}

#[test]
fn client_id_binding_exact_and_prefix() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let exact = fixture.sign_ed(&with(claims(), &["isthmus", "client_id"], json!("dev1")), None);
    assert!(auth.authenticate(&mqtt(&exact, "dev1"), NOW).is_ok());
    for wrong in ["dev2", "dev10", "dev", ""] {
        let error = auth.authenticate(&mqtt(&exact, wrong), NOW).unwrap_err();
        assert_eq!(error, AuthError::ClientIdMismatch, "{wrong:?}");
        assert_eq!((error.mqtt_v5_code(), error.mqtt_v3_code()), (0x85, 0x02));
    }
    let prefix = fixture.sign_ed(&with(claims(), &["isthmus", "client_id"], json!("dev-*")), None);
    let grant = auth.authenticate(&mqtt(&prefix, "dev-42"), NOW).unwrap();
    assert!(grant.permissions.may_publish(b"devices.dev-42.t"), "%c is the connecting id");
    assert_eq!(auth.authenticate(&mqtt(&prefix, "dex-42"), NOW), Err(AuthError::ClientIdMismatch));
    assert_eq!(auth.authenticate(&mqtt(&prefix, "de"), NOW), Err(AuthError::ClientIdMismatch));
    // A prefix binding admits `dev-.>`, but that id is no safe %c value: its rules drop out.
    let grant = auth.authenticate(&mqtt(&prefix, "dev-.>"), NOW).unwrap();
    assert!(!grant.permissions.may_publish(b"devices.dev-.x"));
    assert_eq!(grant.permissions.may_subscribe(b"devices.>"), SubscribeCheck::Denied);
    // `*` anywhere but the end is a literal character, not a pattern.
    let inner = fixture.sign_ed(&with(claims(), &["isthmus", "client_id"], json!("d*v")), None);
    assert_eq!(auth.authenticate(&mqtt(&inner, "dXv"), NOW), Err(AuthError::ClientIdMismatch));
}

#[test]
fn nats_clients_never_reach_more_than_mqtt_clients() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    // No client_id claim: %c rules do not exist for NATS.
    let unbound = fixture.sign_ed(&claims(), None);
    let grant = auth.authenticate(&nats(&unbound), NOW).unwrap();
    assert!(!grant.permissions.may_publish(b"devices.dev1.t"));
    assert_eq!(grant.permissions.may_subscribe(b"devices.dev1.cmd.x"), SubscribeCheck::Denied);
    assert_eq!(
        grant.permissions.may_subscribe(b"broadcast.>"),
        SubscribeCheck::AllowedWithDenyFilter
    );
    // Only %c rules: NATS gets nothing at all.
    let only_c = with(claims(), &["isthmus", "sub"], serde_json::Value::Null);
    let token = fixture.sign_ed(&only_c, None);
    assert_eq!(auth.authenticate(&nats(&token), NOW), Err(AuthError::NoPermissions));
    // A prefix binding is not a client id either.
    let prefix =
        fixture.sign_ed(&with(only_c.clone(), &["isthmus", "client_id"], json!("dev*")), None);
    assert_eq!(auth.authenticate(&nats(&prefix), NOW), Err(AuthError::NoPermissions));
    // An exact binding is %c for NATS, and the grants agree.
    let bound = fixture.sign_ed(&with(claims(), &["isthmus", "client_id"], json!("dev1")), None);
    let over_nats = auth.authenticate(&nats(&bound), NOW).unwrap();
    let over_mqtt = auth.authenticate(&mqtt(&bound, "dev1"), NOW).unwrap();
    assert_eq!(over_nats, over_mqtt);
}

#[test]
fn grant_carries_the_limits() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let limited = with(
        with(
            with(claims(), &["isthmus", "max_qos"], json!(1)),
            &["isthmus", "retain"],
            json!(false),
        ),
        &["isthmus", "max_payload"],
        json!(65536),
    );
    let grant = auth.authenticate(&mqtt(&fixture.sign_ed(&limited, None), "dev1"), NOW).unwrap();
    assert_eq!((grant.max_qos, grant.retain, grant.max_payload), (Some(1), false, Some(65536)));
}

#[test]
fn reload_swaps_keys_and_keeps_the_old_ones_on_error() {
    let fixture = Fixture::new();
    let auth = fixture.ed_only();
    let token = fixture.sign_ed(&claims(), None);
    assert!(auth.authenticate(&mqtt(&token, "dev1"), NOW).is_ok());
    let path = fixture.dir.join("ed.pub.pem");
    std::fs::write(&path, "not a key").unwrap();
    let error = auth.reload().unwrap_err();
    assert!(error.contains("ed.pub.pem"), "{error}");
    assert!(auth.authenticate(&mqtt(&token, "dev1"), NOW).is_ok(), "old key still in use");
    let rotated = generate_key(KeygenAlgorithm::Eddsa).unwrap();
    std::fs::write(&path, rotated.public.unwrap()).unwrap();
    auth.reload().unwrap();
    assert_eq!(auth.authenticate(&mqtt(&token, "dev1"), NOW), Err(AuthError::BadSignature));
    let new_token = sign(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(rotated.private.as_bytes()).unwrap(),
        &claims(),
        None,
    );
    assert!(auth.authenticate(&mqtt(&new_token, "dev1"), NOW).is_ok());
}

#[test]
fn reload_keys_from_adds_a_kid_for_rotation() {
    let fixture = Fixture::new();
    let auth = fixture.authenticator(JwtConfig {
        keys: vec![Fixture::ed_key(Some("k1"))],
        ..JwtConfig::default()
    });
    let k2 = fixture.sign_hmac(&claims(), Some("k2"));
    assert_eq!(auth.authenticate(&mqtt(&k2, "dev1"), NOW), Err(AuthError::UnknownKey));
    let rotated = JwtConfig {
        keys: vec![Fixture::ed_key(Some("k1")), Fixture::hmac_key(Some("k2"))],
        ..JwtConfig::default()
    };
    let config = AuthConfig { allow_anonymous: false, jwt: Some(rotated) };
    auth.reload_keys_from(&config, &fixture.dir).unwrap();
    assert!(auth.authenticate(&mqtt(&k2, "dev1"), NOW).is_ok());
    let k1 = fixture.sign_ed(&claims(), Some("k1"));
    assert!(auth.authenticate(&mqtt(&k1, "dev1"), NOW).is_ok());
    // A later plain reload keeps the new list.
    auth.reload().unwrap();
    assert!(auth.authenticate(&mqtt(&k2, "dev1"), NOW).is_ok());
    // A broken list changes nothing; turning JWT off needs a restart.
    let mut broken = config.clone();
    broken.jwt.as_mut().unwrap().keys[1].secret_file = Some("missing.secret".into());
    assert!(auth.reload_keys_from(&broken, &fixture.dir).unwrap_err().contains("missing.secret"));
    assert!(auth.authenticate(&mqtt(&k2, "dev1"), NOW).is_ok());
    assert!(auth.reload_keys_from(&AuthConfig::default(), &fixture.dir).is_err());
}

#[test]
fn key_file_errors_name_the_file() {
    let fixture = Fixture::new();
    let load = |key: JwtKeyConfig| {
        let jwt = JwtConfig { keys: vec![key], ..JwtConfig::default() };
        Authenticator::from_config(
            &AuthConfig { allow_anonymous: false, jwt: Some(jwt) },
            &fixture.dir,
        )
        .err()
        .unwrap_or_default()
    };
    let mut missing = Fixture::ed_key(None);
    missing.public_key_file = Some("nope.pem".into());
    assert!(load(missing).contains("nope.pem"));
    let mut short = Fixture::hmac_key(None);
    std::fs::write(fixture.dir.join("short.secret"), "tooshort\n").unwrap();
    short.secret_file = Some("short.secret".into());
    assert!(load(short).contains("short.secret"));
    let mut private = Fixture::ed_key(None);
    std::fs::write(fixture.dir.join("ed.key.pem"), &fixture.ed_private).unwrap();
    private.public_key_file = Some("ed.key.pem".into());
    assert!(load(private).contains("ed.key.pem"));
    let mut none = Fixture::ed_key(None);
    none.algorithms = vec!["none".into()];
    assert!(load(none).contains("none"));
    let mut mixed = Fixture::ed_key(None);
    mixed.algorithms = vec!["EdDSA".into(), "HS256".into()];
    assert!(!load(mixed).is_empty());
    let mut secret_as_pem = Fixture::hmac_key(None);
    secret_as_pem.algorithms = vec!["EdDSA".into()];
    assert!(!load(secret_as_pem).is_empty());
}

#[test]
fn a_jwks_file_provides_keys_by_kid() {
    let fixture = Fixture::new();
    let jwk = |kid: &str, secret: &[u8]| json!({ "kty": "oct", "kid": kid, "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret) });
    let second = [7u8; 32];
    let set = json!({ "keys": [jwk("a", &fixture.secret), jwk("b", &second)] });
    std::fs::write(fixture.dir.join("jwks.json"), set.to_string()).unwrap();
    let key = JwtKeyConfig {
        algorithms: vec!["HS256".into()],
        jwks_file: Some("jwks.json".into()),
        ..JwtKeyConfig::default()
    };
    let auth = fixture.authenticator(JwtConfig { keys: vec![key], ..JwtConfig::default() });
    let a = fixture.sign_hmac(&claims(), Some("a"));
    let b = sign(Algorithm::HS256, &EncodingKey::from_secret(&second), &claims(), Some("b"));
    let a_as_b = fixture.sign_hmac(&claims(), Some("b"));
    assert!(auth.authenticate(&mqtt(&a, "dev1"), NOW).is_ok());
    assert!(auth.authenticate(&mqtt(&b, "dev1"), NOW).is_ok());
    assert_eq!(auth.authenticate(&mqtt(&a_as_b, "dev1"), NOW), Err(AuthError::BadSignature));
}

#[test]
fn error_codes_and_reasons() {
    for error in AuthError::ALL {
        let expected = match error {
            AuthError::NoPermissions => (0x87, 0x05),
            AuthError::ClientIdMismatch => (0x85, 0x02),
            _ => (0x86, 0x04),
        };
        assert_eq!((error.mqtt_v5_code(), error.mqtt_v3_code()), expected, "{error:?}");
        assert!(!error.reason().is_empty() && !error.reason().contains(' '));
        assert_eq!(error.nats_error(), "Authorization Violation");
    }
    let mut reasons: Vec<&str> = AuthError::ALL.iter().map(|e| e.reason()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), AuthError::ALL.len());
}

#[test]
fn the_authenticator_is_send_and_sync_and_the_grant_is_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Authenticator>();
    send::<Grant>();
}
