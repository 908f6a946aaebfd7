//! `isthmus token keygen | issue | inspect | verify`, driven through the built binary: keys
//! are generated into a temporary directory, tokens issued with them, and `verify` runs the
//! broker's own check against a config file that names those keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn isthmus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isthmus")).arg("token").args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A fresh directory, removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("isthmus-token-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn keygen(dir: &TempDir, alg: &str, out: &str) -> String {
    let output = isthmus(&["keygen", "--alg", alg, "--out", &dir.path(out)]);
    assert!(output.status.success(), "keygen {alg}: {}", stderr(&output));
    let kid = stdout(&output).trim().to_string();
    assert_eq!(kid.len(), 16, "kid is 8 bytes in hex: {kid:?}");
    assert!(kid.bytes().all(|b| b.is_ascii_hexdigit()));
    kid
}

fn issue(args: &[&str]) -> String {
    let mut all = vec!["issue"];
    all.extend_from_slice(args);
    let output = isthmus(&all);
    assert!(output.status.success(), "issue {args:?}: {}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "issue prints only the token: {text:?}");
    let token = text.trim_end().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    token
}

fn mode(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn write_config(dir: &TempDir, body: &str) -> String {
    let path = dir.path("isthmus.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn verify(config: &str, args: &[&str], token: &str) -> Output {
    let mut all = vec!["verify", "--config", config];
    all.extend_from_slice(args);
    all.push(token);
    isthmus(&all)
}

const EDDSA_CONFIG: &str = r#"
[auth.jwt]
audience = "isthmus"
issuer = "https://auth.example"
[[auth.jwt.keys]]
kid = "k1"
algorithms = ["EdDSA"]
public_key_file = "keys/issuer.pub.pem"
"#;

#[test]
fn keygen_writes_private_keys_mode_0600_and_refuses_to_overwrite() {
    let dir = TempDir::new("keygen");
    keygen(&dir, "eddsa", "ed");
    keygen(&dir, "es256", "ec");
    keygen(&dir, "hs256", "hmac.secret");
    for private in ["ed.key.pem", "ec.key.pem", "hmac.secret"] {
        assert_eq!(mode(&dir.path(private)), 0o600, "{private}");
    }
    let public = std::fs::read_to_string(dir.path("ed.pub.pem")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    let private = std::fs::read_to_string(dir.path("ed.key.pem")).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"), "{private}");
    let secret = std::fs::read_to_string(dir.path("hmac.secret")).unwrap();
    assert_eq!(secret.len(), 45, "32 bytes in base64 and a newline: {secret:?}");
    let again = isthmus(&["keygen", "--out", &dir.path("ed")]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(dir.path("ed.key.pem")).unwrap(), private, "unchanged");
    let forced = isthmus(&["keygen", "--out", &dir.path("ed"), "--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read_to_string(dir.path("ed.key.pem")).unwrap(), private);
    // The README's `--out keys/issuer` on a fresh checkout: the directory is made, 0700.
    keygen(&dir, "eddsa", "fresh/keys/issuer");
    assert_eq!(mode(&dir.path("fresh/keys")), 0o700);
    assert_eq!(mode(&dir.path("fresh/keys/issuer.key.pem")), 0o600);
}

#[test]
fn issue_inspect_and_verify_an_eddsa_device_token() {
    let dir = TempDir::new("eddsa");
    keygen(&dir, "eddsa", "keys/issuer");
    let config = write_config(&dir, EDDSA_CONFIG);
    let key = dir.path("keys/issuer.key.pem");
    let token = issue(&[
        "--key",
        &key,
        "--kid",
        "k1",
        "--iss",
        "https://auth.example",
        "--aud",
        "isthmus",
        "--sub",
        "device-42",
        "--client-id",
        "device-42",
        "--ttl",
        "24h",
        "--pub",
        "devices.%c.>",
        "--sub-allow",
        "devices.%c.cmd.>",
        "--mqtt-pub",
        "sensors/%c/#",
        "--max-qos",
        "1",
    ]);

    let inspected = isthmus(&["inspect", &token, "--key", &dir.path("keys/issuer.pub.pem")]);
    assert!(inspected.status.success(), "{}", stderr(&inspected));
    let text = stdout(&inspected);
    for expected in [
        "\"alg\":\"EdDSA\"",
        "\"kid\":\"k1\"",
        "device-42",
        "devices.%c.>",
        "mqtt: devices/%c/#",
        "sensors.%c.>",
        "mqtt: sensors/%c/#",
        "mqtt: devices/%c/cmd/#",
        "exp: ",
        "(in 2",
        "signature: valid",
    ] {
        assert!(text.contains(expected), "inspect lacks {expected:?}:\n{text}");
    }

    let accepted = verify(&config, &["--client-id", "device-42"], &token);
    assert_eq!(accepted.status.code(), Some(0), "{}{}", stdout(&accepted), stderr(&accepted));
    let text = stdout(&accepted);
    assert!(text.starts_with("accepted"), "{text}");
    assert!(text.contains("devices.device-42.>") && text.contains("sensors.device-42"), "{text}");

    let wrong_client = verify(&config, &["--client-id", "device-43"], &token);
    assert_eq!(wrong_client.status.code(), Some(1));
    let text = stdout(&wrong_client);
    assert!(text.contains("client_id_mismatch") && text.contains("0x85") && text.contains("0x02"));

    let later = verify(&config, &["--client-id", "device-42", "--at", "4000000000"], &token);
    assert_eq!(later.status.code(), Some(1));
    assert!(stdout(&later).contains("expired") && stdout(&later).contains("0x86"));

    let over_nats = verify(&config, &["--protocol", "nats"], &token);
    assert_eq!(over_nats.status.code(), Some(0), "exact binding is %c for NATS");
    assert!(stdout(&over_nats).contains("devices.device-42.>"));
}

#[test]
fn verify_refuses_what_the_config_does_not_trust() {
    let dir = TempDir::new("refuse");
    std::fs::create_dir(dir.0.join("keys")).unwrap();
    keygen(&dir, "eddsa", "keys/issuer");
    keygen(&dir, "eddsa", "keys/stranger");
    keygen(&dir, "hs256", "keys/hmac.secret");
    let config = write_config(&dir, EDDSA_CONFIG);
    let good = ["--sub", "d", "--pub", "a.>"];
    let trusted = ["--iss", "https://auth.example", "--aud", "isthmus"];
    let issue_with = |key: &str, extra: &[&str]| {
        let mut args = vec!["--key", key];
        args.extend_from_slice(&good);
        args.extend_from_slice(extra);
        issue(&args)
    };
    let issuer = dir.path("keys/issuer.key.pem");
    let cases = [
        (
            issue_with(
                &dir.path("keys/stranger.key.pem"),
                &[&trusted[..], &["--kid", "k1"]].concat(),
            ),
            "bad_signature",
        ),
        (issue_with(&issuer, &[&trusted[..], &["--kid", "k2"]].concat()), "unknown_key"),
        (
            issue_with(&dir.path("keys/hmac.secret"), &[&trusted[..], &["--kid", "k1"]].concat()),
            "algorithm_not_allowed",
        ),
        (
            issue_with(
                &issuer,
                &["--kid", "k1", "--iss", "https://auth.example", "--aud", "other"],
            ),
            "wrong_audience",
        ),
        (
            issue_with(
                &issuer,
                &["--kid", "k1", "--aud", "isthmus", "--iss", "https://evil.example"],
            ),
            "wrong_issuer",
        ),
        (issue_with(&issuer, &[&trusted[..], &["--kid", "k1"]].concat()), "accepted"),
    ];
    for (token, reason) in cases {
        let output = verify(&config, &["--client-id", "x"], &token);
        let code = if reason == "accepted" { 0 } else { 1 };
        assert_eq!(output.status.code(), Some(code), "{reason}: {}", stdout(&output));
        assert!(stdout(&output).contains(reason), "want {reason}: {}", stdout(&output));
    }
    // The HS256 token signed with the EdDSA public key file as the secret: algorithm confusion.
    let public = dir.path("keys/issuer.pub.pem");
    // `issue` refuses to HMAC with a PEM file, so the attacker's token is made by hand.
    let refused = isthmus(&[&["issue", "--key", &public, "--alg", "HS256"][..], &good].concat());
    assert!(!refused.status.success());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let claims = serde_json::json!({
        "sub": "d", "iss": "https://auth.example", "aud": "isthmus", "exp": 4_000_000_000u64,
        "isthmus": { "pub": { "allow": [">"] } }
    });
    let secret = std::fs::read(&public).unwrap();
    let confused =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(&secret))
            .unwrap();
    let output = verify(&config, &["--client-id", "x"], &confused);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("algorithm_not_allowed"), "{}", stdout(&output));
    // And inspect with the right key says the stranger's signature is invalid.
    let stranger = issue_with(&dir.path("keys/stranger.key.pem"), &["--kid", "k1"]);
    let inspected = isthmus(&["inspect", &stranger, "--key", &dir.path("keys/stranger.pub.pem")]);
    assert_eq!(inspected.status.code(), Some(0), "{}", stdout(&inspected));
    let inspected = isthmus(&["inspect", &stranger, "--key", &public]);
    assert_eq!(inspected.status.code(), Some(1));
    assert!(stdout(&inspected).contains("signature: INVALID"));
}

#[test]
fn hmac_tokens_and_mqtt_spellings() {
    let dir = TempDir::new("hmac");
    keygen(&dir, "hs256", "hmac.secret");
    let config = write_config(
        &dir,
        "[auth.jwt]\n[[auth.jwt.keys]]\nalgorithms = [\"HS256\"]\nsecret_file = \"hmac.secret\"\n",
    );
    let key = dir.path("hmac.secret");
    let token = issue(&[
        "--key",
        &key,
        "--sub",
        "alice",
        "--mqtt-sub",
        "chat/+/%u",
        "--mqtt-deny-sub",
        "chat/secret/#",
        "--mqtt-pub",
        "chat/%u/out",
        "--no-retain",
        "--ttl",
        "90m",
    ]);
    let output = verify(&config, &["--client-id", "phone-1"], &token);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains("subscribe allow  chat.*.alice"), "{text}");
    assert!(text.contains("subscribe deny   chat.secret.>"), "{text}");
    assert!(text.contains("publish allow    chat.alice.out"), "{text}");
    assert!(text.contains("retain: false"), "{text}");
    // %u is the username when one is sent.
    let output = verify(&config, &["--client-id", "phone-1", "--username", "bob"], &token);
    assert!(stdout(&output).contains("chat.bob.out"), "{}", stdout(&output));
    // A hostile username drops the %u rules; nothing left = refused.
    let output = verify(&config, &["--client-id", "phone-1", "--username", "a/#"], &token);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains("no_permissions") && stdout(&output).contains("0x87"));
}

#[test]
fn issue_refuses_malformed_rules_and_warns_about_unbound_placeholders() {
    let dir = TempDir::new("rules");
    keygen(&dir, "eddsa", "ed");
    let key = dir.path("ed.key.pem");
    for bad in ["a..b", "dev%c.>", "a.>.b", "a b"] {
        let output = isthmus(&["issue", "--key", &key, "--sub", "x", "--pub", bad]);
        assert!(!output.status.success(), "{bad:?} was accepted");
        assert!(stdout(&output).is_empty(), "no token for {bad:?}");
    }
    let output = isthmus(&["issue", "--key", &key, "--sub", "x", "--mqtt-pub", "a/#/b"]);
    assert!(!output.status.success());
    let output = isthmus(&["issue", "--key", &key, "--sub", "x", "--pub", "devices.%c.>"]);
    assert!(output.status.success());
    assert!(stderr(&output).contains("warning"), "{}", stderr(&output));
    let output = isthmus(&["issue", "--key", &key, "--sub", "x", "--pub", "a", "--ttl", "soon"]);
    assert!(!output.status.success());
}

#[test]
fn verify_without_auth_jwt_admits_everyone() {
    let dir = TempDir::new("open");
    let config = write_config(&dir, "");
    let output = verify(&config, &[], "anything");
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("no [auth.jwt]"), "{}", stdout(&output));
    assert!(Path::new(&config).exists());
}
