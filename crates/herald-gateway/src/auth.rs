//! Access tokens (JWT) and passwords.
//!
//! Group membership and the admin flag travel in the verified token, so any gateway instance
//! authorizes a request without shared session state. A membership change therefore takes effect
//! when the user's next token is issued.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use chrono::Utc;
use herald_core::store::UserRecord;
use herald_core::{Caller, GroupName, Username};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Claims of a Herald access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// How tokens are verified, and issued when Herald holds the signing key.
pub struct TokenAuthority {
    algorithm: Algorithm,
    /// Present for HS256 only: with an asymmetric algorithm an external identity provider signs.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    pub default_ttl: Duration,
}

/// The verified identity behind a token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub caller: Caller,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: i64,
}

impl TokenAuthority {
    /// An HS256 authority that both issues and verifies.
    pub fn hs256(
        secret: &[u8],
        issuer: Option<String>,
        audience: Option<String>,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        let encoding = EncodingKey::from_secret(secret)?;
        let decoding = DecodingKey::from_secret(secret)?;
        Ok(Self::build(
            Algorithm::HS256,
            Some(encoding),
            decoding,
            issuer,
            audience,
            ttl,
        ))
    }

    /// A verify-only authority for tokens an external identity provider signs with a public-key
    /// algorithm (RS256, ES256 or EdDSA).
    pub fn public_key(
        algorithm: Algorithm,
        pem: &[u8],
        issuer: Option<String>,
        audience: Option<String>,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        let decoding = match algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem)?,
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem)?,
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem)?,
            other => anyhow::bail!("unsupported public-key algorithm {other:?}"),
        };
        Ok(Self::build(
            algorithm, None, decoding, issuer, audience, ttl,
        ))
    }

    fn build(
        algorithm: Algorithm,
        encoding: Option<EncodingKey>,
        decoding: DecodingKey,
        issuer: Option<String>,
        audience: Option<String>,
        default_ttl: Duration,
    ) -> Self {
        // Validation::new accepts exactly this one algorithm: never `none`, and never HS256 when
        // a public key is configured, so a public key cannot be used as an HMAC secret.
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        match &issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Self {
            algorithm,
            encoding,
            decoding,
            validation,
            issuer,
            audience,
            default_ttl,
        }
    }

    /// Whether this gateway signs tokens itself (password login and `herald token`).
    pub fn can_issue(&self) -> bool {
        self.encoding.is_some()
    }

    /// Signs a token for `user` valid for `ttl`; returns the token and its lifetime in seconds.
    pub fn issue(&self, user: &UserRecord, ttl: Duration) -> anyhow::Result<(String, u64)> {
        let Some(key) = &self.encoding else {
            anyhow::bail!("tokens are issued by the identity provider, not by Herald");
        };
        let now = Utc::now().timestamp();
        let seconds = ttl.as_secs().max(1);
        let claims = Claims {
            sub: user.username.to_string(),
            groups: user.groups.iter().map(ToString::to_string).collect(),
            iat: now,
            exp: now + seconds as i64,
            admin: user.admin.then_some(true),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)?;
        Ok((token, seconds))
    }

    /// Verifies a token and returns the caller it names.
    pub fn verify(&self, token: &str) -> Result<Verified, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let reason = match e.kind() {
                    ErrorKind::ExpiredSignature => "access token has expired; request a new one",
                    ErrorKind::InvalidSignature => "access token signature is invalid",
                    ErrorKind::InvalidAlgorithm => {
                        "access token uses an algorithm this server does not accept"
                    }
                    ErrorKind::InvalidIssuer => "access token has the wrong issuer",
                    ErrorKind::InvalidAudience => "access token has the wrong audience",
                    _ => "access token is malformed",
                };
                ApiError::Unauthorized(reason.into())
            })?;

        let claims = data.claims;
        let username = Username::parse(&claims.sub).map_err(|_| {
            ApiError::Unauthorized("access token subject is not a valid username".into())
        })?;
        // Names that are not valid group names cannot match any group, so they are dropped.
        let groups: BTreeSet<GroupName> = claims
            .groups
            .iter()
            .filter_map(|g| GroupName::parse(g).ok())
            .collect();
        Ok(Verified {
            caller: Caller {
                username,
                groups,
                admin: claims.admin.unwrap_or(false),
            },
            expires_at: claims.exp,
        })
    }
}

/// Reads the bearer token from an `Authorization` header value.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The authenticated caller of an `/api/` route.
pub struct Authenticated(pub Caller);

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    Arc<TokenAuthority>: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authority: Arc<TokenAuthority> = axum::extract::FromRef::from_ref(state);
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "missing access token: send Authorization: Bearer <token>".into(),
            )
        })?;
        let verified = authority.verify(token)?;
        tracing::Span::current().record("user", tracing::field::display(&verified.caller.username));
        Ok(Authenticated(verified.caller))
    }
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("failed to hash password: {e}"))?;
    Ok(hash.to_string())
}

/// A hash of a random password, verified against when the username is unknown so that an
/// unknown user and a wrong password take comparable time.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_password(&random_token(24)).expect("hashing a random password cannot fail")
});

/// Checks a password against a stored hash, or against a dummy hash when there is no user.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    let hash = stored.unwrap_or(DUMMY_HASH.as_str());
    let Ok(parsed) = argon2::password_hash::phc::PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && stored.is_some()
}

/// Warms the dummy hash up at start-up so that the first failed login is not measurably slower.
pub fn prepare_password_checks() {
    LazyLock::force(&DUMMY_HASH);
}

/// A random string of `len` characters from an unambiguous alphabet, for passwords and secrets.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserRecord {
        UserRecord {
            username: Username::parse("fin").unwrap(),
            password_hash: String::new(),
            groups: [GroupName::parse("finance").unwrap()].into_iter().collect(),
            admin: false,
            created_at: Utc::now(),
        }
    }

    fn authority(secret: &[u8]) -> TokenAuthority {
        TokenAuthority::hs256(secret, Some("herald".into()), None, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn issued_token_verifies() {
        let auth = authority(&[7; 32]);
        let (token, ttl) = auth.issue(&user(), Duration::from_secs(60)).unwrap();
        assert_eq!(ttl, 60);
        let verified = auth.verify(&token).unwrap();
        assert_eq!(verified.caller.username.as_str(), "fin");
        assert!(
            verified
                .caller
                .is_member(&GroupName::parse("finance").unwrap())
        );
    }

    #[test]
    fn other_secret_is_rejected() {
        let (token, _) = authority(&[7; 32])
            .issue(&user(), Duration::from_secs(60))
            .unwrap();
        assert!(authority(&[8; 32]).verify(&token).is_err());
    }

    #[test]
    fn none_algorithm_is_rejected() {
        let auth = authority(&[7; 32]);
        let header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
        let exp = Utc::now().timestamp() + 60;
        let payload = base64_url(&format!(
            r#"{{"sub":"fin","groups":["finance"],"exp":{exp},"iat":0,"iss":"herald"}}"#
        ));
        assert!(auth.verify(&format!("{header}.{payload}.")).is_err());
    }

    #[test]
    fn expired_token_is_rejected() {
        let auth = authority(&[7; 32]);
        let mut claims_user = user();
        claims_user.groups.clear();
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: "fin".into(),
            groups: vec![],
            exp: now - 120,
            iat: now - 180,
            admin: None,
            iss: Some("herald".into()),
            aud: None,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[7; 32]).unwrap(),
        )
        .unwrap();
        let error = auth.verify(&token).unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
    }

    #[test]
    fn password_round_trip() {
        let hash = hash_password("s3cret").unwrap();
        assert!(verify_password("s3cret", Some(&hash)));
        assert!(!verify_password("wrong", Some(&hash)));
        assert!(!verify_password("s3cret", None));
    }

    fn base64_url(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }
}
