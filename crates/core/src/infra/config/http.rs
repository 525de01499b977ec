//! `HEALTH_ADDRESS` and `HEALTH_TOKEN`: where the health endpoint listens, and the bearer token
//! that `/status` and `/metrics` require when one is set (`/healthz` stays open for deploy checks).

use super::validate::{nonempty, Validator};
use secrecy::SecretString;

/// Who may reach the health endpoint.
#[derive(Clone)]
pub struct HealthAccess {
    /// `HEALTH_ADDRESS`: the address to listen on (default `0.0.0.0`, every IPv4 interface).
    pub address: std::net::IpAddr,
    /// `HEALTH_TOKEN`: required as `Authorization: Bearer …` on `/status` and `/metrics`.
    pub token: Option<SecretString>,
}

impl std::fmt::Debug for HealthAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthAccess")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Default for HealthAccess {
    fn default() -> Self {
        Self {
            address: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            token: None,
        }
    }
}

impl Validator {
    /// `HEALTH_ADDRESS`, `HEALTH_TOKEN` / `HEALTH_TOKEN_FILE`.
    pub(super) fn health_access(&mut self, address: Option<String>, token: (Option<String>, Option<String>)) -> HealthAccess {
        let mut access = HealthAccess::default();
        if let Some(a) = nonempty(address) {
            match a.trim().parse() {
                Ok(ip) => access.address = ip,
                Err(_) => self.bad(
                    "HEALTH_ADDRESS",
                    format!("expected an IP address to listen on, such as 127.0.0.1, 0.0.0.0 or ::, got {a:?}"),
                ),
            }
        }
        if let Some(t) = self.secret("HEALTH_TOKEN", "HEALTH_TOKEN_FILE", token.0, token.1) {
            if t.trim().len() < 16 {
                self.bad("HEALTH_TOKEN", "expected at least 16 characters (e.g. from openssl rand -hex 32)");
            } else {
                access.token = Some(SecretString::from(t.trim().to_string()));
            }
        }
        access
    }
}
