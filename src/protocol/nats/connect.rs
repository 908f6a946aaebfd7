//! CONNECT options and the INFO the server greets with.

use serde::{Deserialize, Serialize};

/// The fields of a client's CONNECT that the broker acts on. Absent fields take nats-server's
/// defaults (`verbose`, `pedantic` and `echo` default to true).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ConnectOptions {
    /// Send `+OK` after every op.
    pub verbose: bool,
    /// Validate publish subjects strictly.
    pub pedantic: bool,
    /// Deliver the client's own publishes back to its matching subscriptions.
    pub echo: bool,
    /// The client understands HMSG.
    pub headers: bool,
    /// The client wants a 503 status message for requests nobody can answer.
    pub no_responders: bool,
    /// Client protocol level: 0 or 1.
    pub protocol: i64,
    /// Client-chosen connection name.
    #[serde(deserialize_with = "null_as_empty")]
    pub name: String,
    /// Client library language.
    #[serde(deserialize_with = "null_as_empty")]
    pub lang: String,
    /// Client library version.
    #[serde(deserialize_with = "null_as_empty")]
    pub version: String,
    /// A token (here: the device JWT).
    pub auth_token: Option<String>,
    /// User name; `%u` in the token's rules.
    pub user: Option<String>,
    /// Password; carries the JWT when `auth_token` is absent.
    pub pass: Option<String>,
}

/// async-nats sends `"name":null`; nats-server (Go) reads null as the empty string.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            protocol: 0,
            name: String::new(),
            lang: String::new(),
            version: String::new(),
            auth_token: None,
            user: None,
            pass: None,
        }
    }
}

/// Why a CONNECT is refused; the text is nats-server's `-ERR` text. All close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The JSON did not parse.
    Malformed,
    /// `protocol` outside 0..=1.
    BadProtocol,
    /// `no_responders` without `headers`.
    NoRespondersWithoutHeaders,
}

impl ConnectError {
    /// The `-ERR` text.
    pub fn err_text(self) -> &'static str {
        match self {
            ConnectError::Malformed => "Unknown Protocol Operation",
            ConnectError::BadProtocol => "invalid client protocol",
            ConnectError::NoRespondersWithoutHeaders => "no responders requires headers support",
        }
    }
}

impl ConnectOptions {
    /// Parses and checks a CONNECT JSON object.
    pub fn parse(json: &[u8]) -> Result<ConnectOptions, ConnectError> {
        let options: ConnectOptions =
            serde_json::from_slice(json).map_err(|_| ConnectError::Malformed)?;
        if !(0..=1).contains(&options.protocol) {
            return Err(ConnectError::BadProtocol);
        }
        if options.no_responders && !options.headers {
            return Err(ConnectError::NoRespondersWithoutHeaders);
        }
        Ok(options)
    }
}

/// The INFO object sent to a client, in nats-server's field names.
#[derive(Clone, Debug, Serialize)]
pub struct Info<'a> {
    /// Unique per process.
    pub server_id: &'a str,
    /// Configured name.
    pub server_name: &'a str,
    /// Isthmus version.
    pub version: &'a str,
    /// Protocol level (1: async INFO allowed).
    pub proto: u8,
    /// nats-server reports its Go version here; clients only display it.
    pub go: &'a str,
    /// Listen host.
    pub host: String,
    /// Listen port.
    pub port: u16,
    /// HPUB/HMSG supported.
    pub headers: bool,
    /// The client must upgrade to TLS after this INFO (left out when false, as nats-server
    /// does).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_required: bool,
    /// The server verifies client certificates (mTLS).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_verify: bool,
    /// Largest headers + payload accepted.
    pub max_payload: u32,
    /// The connection's id; `client_id % shards` is the shard serving it.
    pub client_id: u64,
    /// The client's address as seen by the server.
    pub client_ip: String,
    /// CONNECT must carry credentials (sent only when true, as nats-server does).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_nats_server() {
        let options = ConnectOptions::parse(b"{}").unwrap();
        assert!(options.verbose && options.pedantic && options.echo && !options.headers);
        let options = ConnectOptions::parse(
            br#"{"verbose":false,"pedantic":false,"echo":false,"headers":true,"no_responders":true,"protocol":1,"lang":"rust","extra":[1]}"#,
        )
        .unwrap();
        assert!(!options.verbose && !options.echo && options.no_responders);
        assert_eq!(options.lang, "rust");
        let options =
            ConnectOptions::parse(br#"{"auth_token":"t","user":"u","pass":null}"#).unwrap();
        assert_eq!(options.auth_token.as_deref(), Some("t"));
        assert_eq!((options.user.as_deref(), options.pass), (Some("u"), None));
    }

    #[test]
    fn null_fields_read_as_empty() {
        let json = br#"{"verbose":false,"name":null,"lang":"rust","version":null,"jwt":null,"headers":true}"#;
        let options = ConnectOptions::parse(json).unwrap();
        assert_eq!((options.name.as_str(), options.version.as_str()), ("", ""));
        assert!(options.headers && !options.verbose);
    }

    #[test]
    fn refusals() {
        assert_eq!(ConnectOptions::parse(b"{nope"), Err(ConnectError::Malformed));
        assert_eq!(ConnectOptions::parse(br#"{"protocol":2}"#), Err(ConnectError::BadProtocol));
        assert_eq!(
            ConnectOptions::parse(br#"{"no_responders":true}"#),
            Err(ConnectError::NoRespondersWithoutHeaders)
        );
    }
}
