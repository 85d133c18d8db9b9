//! Bearer-token authentication (CONTRACT §6): only SHA-256 hashes of tokens are held,
//! compared in constant time; a token past its `expires_at` is refused.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::{Role, TokenConfig};

#[derive(Debug, Clone)]
struct Credential {
    name: String,
    sha256: [u8; 32],
    roles: Vec<Role>,
    expires_at: Option<DateTime<Utc>>,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    credentials: Vec<Credential>,
}

impl Authenticator {
    pub fn from_config(tokens: &[TokenConfig]) -> Self {
        let credentials = tokens
            .iter()
            .filter_map(|t| {
                let bytes = hex::decode(&t.sha256).ok()?;
                let sha256: [u8; 32] = bytes.try_into().ok()?;
                Some(Credential {
                    name: t.name.clone(),
                    sha256,
                    roles: t.roles.clone(),
                    expires_at: t.expires_at,
                })
            })
            .collect();
        Authenticator { credentials }
    }

    /// Adds a freshly generated random token (embedded mode) and returns it.
    pub fn generate(&mut self, name: &str, roles: Vec<Role>) -> String {
        let token = new_token();
        self.credentials.push(Credential {
            name: name.to_owned(),
            sha256: Sha256::digest(token.as_bytes()).into(),
            roles,
            expires_at: None,
        });
        token
    }

    /// The principal for an `Authorization` header value, checked at `now`.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Principal, ApiError> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every credential so timing does not reveal which one matched.
        let mut found: Option<&Credential> = None;
        for c in &self.credentials {
            if bool::from(c.sha256.ct_eq(&presented)) {
                found = Some(c);
            }
        }
        let c = found.ok_or(ApiError::Unauthorized)?;
        if c.expires_at.is_some_and(|exp| now >= exp) {
            return Err(ApiError::Unauthorized);
        }
        Ok(Principal {
            name: c.name.clone(),
            roles: c.roles.clone(),
        })
    }
}

impl Principal {
    /// Every role may read (CONTRACT §6).
    pub fn may_read(&self) -> bool {
        !self.roles.is_empty()
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// A random token of 256 bits, hex encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("wdn_{}", hex::encode(bytes))
}

/// The hex SHA-256 a config stores for `token`.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(token: &str, expires_at: Option<DateTime<Utc>>) -> Authenticator {
        Authenticator::from_config(&[TokenConfig {
            name: "t".into(),
            sha256: token_hash(token),
            roles: vec![Role::Viewer],
            expires_at,
        }])
    }

    #[test]
    fn right_token_is_accepted_and_others_refused() {
        let a = auth_with("secret", None);
        let now = Utc::now();
        assert_eq!(
            a.authenticate(Some("Bearer secret"), now).unwrap().name,
            "t"
        );
        assert!(matches!(
            a.authenticate(Some("Bearer wrong"), now),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            a.authenticate(None, now),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            a.authenticate(Some("secret"), now),
            Err(ApiError::Unauthorized)
        ));
    }

    #[test]
    fn expired_token_is_refused() {
        let now = Utc::now();
        let a = auth_with("secret", Some(now - chrono::Duration::seconds(1)));
        assert!(matches!(
            a.authenticate(Some("Bearer secret"), now),
            Err(ApiError::Unauthorized)
        ));
        let b = auth_with("secret", Some(now + chrono::Duration::hours(1)));
        assert!(b.authenticate(Some("Bearer secret"), now).is_ok());
    }

    #[test]
    fn generated_tokens_are_random_and_long() {
        let mut a = Authenticator::default();
        let t1 = a.generate("embedded", vec![Role::Security]);
        let t2 = new_token();
        assert_ne!(t1, t2);
        assert!(t1.len() >= 4 + 64);
        assert!(a
            .authenticate(Some(&format!("Bearer {t1}")), Utc::now())
            .unwrap()
            .has(Role::Security));
    }
}
